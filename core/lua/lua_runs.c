/* fm.runs: the run store (fm_track.h) from Lua — the runs of a sweep, the
 * best of them, their settings and curves, as plain tables. */
#include "fm_lua_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_track.h"

#define RUNS_RESULT "fm.runs_result"

/* What a query holds in C until its tables are built: freed by __close
 * (or __gc), so that an error while building them leaks nothing. */
typedef struct runs_result {
    fm_track *store;
    fm_track_run *runs;
    int n;
} runs_result;

static int result_close(lua_State *L)
{
    runs_result *r = luaL_checkudata(L, 1, RUNS_RESULT);
    fm_track_runs_free(r->runs, r->n);
    fm_track_close(r->store);
    memset(r, 0, sizeof *r);
    return 0;
}

static void set_real_or_nil(lua_State *L, const char *key, double v)
{
    if (isfinite(v)) fm_lua_setnum(L, key, v);
}

static void set_str_or_nil(lua_State *L, const char *key, const char *v)
{
    if (v) fm_lua_setstr(L, key, v);
}

/* One run as a table (the fields of fm_track_run; see fm_lua.h). */
static void push_run(lua_State *L, const fm_track_run *r)
{
    lua_createtable(L, 0, 40);
    fm_lua_setint(L, "id", (lua_Integer)r->id);
    const struct { const char *k, *v; } texts[] = {
        {"kind", r->kind}, {"model", r->model}, {"status", r->status}, {"message", r->message},
        {"sweep", r->sweep}, {"started", r->started}, {"ended", r->ended},
        {"command", r->command}, {"host", r->host}, {"plugin_path", r->plugin_path},
        {"plugin_sha256", r->plugin_sha256}, {"hparams", r->hparams}, {"kernels", r->kernels},
        {"precision", r->precision}, {"fmhost_version", r->fmhost_version},
        {"out_dir", r->out_dir}, {"data_dir", r->data_dir}, {"run_dir", r->run_dir},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) set_str_or_nil(L, texts[i].k, texts[i].v);
    fm_lua_setint(L, "pid", (lua_Integer)r->pid);
    fm_lua_setint(L, "seed", (lua_Integer)r->seed);
    fm_lua_setint(L, "threads", (lua_Integer)r->threads);
    fm_lua_setint(L, "params", (lua_Integer)r->params);
    fm_lua_setint(L, "peak_rss_kb", (lua_Integer)r->peak_rss_kb);
    fm_lua_setint(L, "epochs", r->epochs_run);
    fm_lua_setint(L, "best_epoch", r->best_epoch);
    set_real_or_nil(L, "val_loss", r->val_loss);
    set_real_or_nil(L, "val_acc", r->val_acc);
    set_real_or_nil(L, "test_loss", r->test_loss);
    set_real_or_nil(L, "test_acc", r->test_acc);
    set_real_or_nil(L, "seconds", r->wall_seconds);

    lua_newtable(L);  /* set: the hyper-parameters */
    lua_newtable(L);  /* options */
    for (int i = 0; i < r->n_settings; i++) {
        lua_pushstring(L, r->setting_value[i] ? r->setting_value[i] : "");
        lua_setfield(L, strcmp(r->setting_kind[i], "hparam") ? -2 : -3, r->setting_key[i]);
    }
    lua_setfield(L, -3, "options");
    lua_setfield(L, -2, "set");

    lua_createtable(L, r->history.n, 0);
    for (int i = 0; i < r->history.n; i++) {
        fm_lua_push_metrics(L, &r->history.rows[i]);  /* as run.history */
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "history");

    lua_createtable(L, r->have_classes ? FM_NUM_CLASSES : 0, 0);
    for (int c = 0; r->have_classes && c < FM_NUM_CLASSES; c++) {
        lua_createtable(L, 0, 3);
        fm_lua_setstr(L, "class", fm_class_name(c));
        set_real_or_nil(L, "accuracy", r->class_acc[c]);
        fm_lua_setint(L, "support", (lua_Integer)r->class_support[c]);
        lua_rawseti(L, -2, c + 1);
    }
    lua_setfield(L, -2, "per_class");

    lua_createtable(L, r->n_artifacts, 0);
    for (int i = 0; i < r->n_artifacts; i++) {
        lua_createtable(L, 0, 4);
        set_str_or_nil(L, "name", r->artifact_name[i]);
        set_str_or_nil(L, "path", r->artifact_path[i]);
        set_str_or_nil(L, "sha256", r->artifact_sha256[i]);
        fm_lua_setint(L, "bytes", (lua_Integer)r->artifact_bytes[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "artifacts");
}

/* Leaves t[key] (a string) on the stack and returns it, or NULL. */
static const char *string_field(lua_State *L, int t, const char *key, const char *what)
{
    int type = lua_getfield(L, t, key);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    if (type != LUA_TSTRING && type != LUA_TNUMBER)
        luaL_error(L, "%s: option '%s' must be a string, got %s", what, key, luaL_typename(L, -1));
    return lua_tostring(L, -1);
}

#define MAX_WHERE 64

/* Runs the query of the options table at 1 (keys: db, model, status, kind,
 * sweep, since, until, where = {k = v}, sort, asc, limit, and `extra`) and
 * pushes a to-be-closed result holding the runs. */
static runs_result *query(lua_State *L, const char *what, const char *extra)
{
    const char *const keys[] = {"db", "model", "status", "kind", "sweep", "since", "until",
                                "where", "sort", "asc", "limit", extra, NULL};
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    fm_lua_check_keys(L, 1, keys, what);

    fm_track_filter f = {0};
    const char *db = string_field(L, 1, "db", what);
    f.model = string_field(L, 1, "model", what);
    f.status = string_field(L, 1, "status", what);
    f.kind = string_field(L, 1, "kind", what);
    f.sweep = string_field(L, 1, "sweep", what);
    f.since = string_field(L, 1, "since", what);
    f.until = string_field(L, 1, "until", what);
    f.sort = string_field(L, 1, "sort", what);
    if (lua_getfield(L, 1, "asc") != LUA_TNIL) {
        if (!lua_isboolean(L, -1)) luaL_error(L, "%s: option 'asc' must be a boolean", what);
        f.ascending = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "limit") != LUA_TNIL) {
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < 1 || v > 1000000000)
            luaL_error(L, "%s: option 'limit' must be an integer >= 1", what);
        f.limit = (int)v;
    }
    lua_pop(L, 1);
    const char *where[MAX_WHERE];
    if (lua_getfield(L, 1, "where") != LUA_TNIL) {
        int wt = lua_gettop(L);
        luaL_checktype(L, wt, LUA_TTABLE);
        lua_newtable(L);  /* wt + 1: keeps the "k=v" strings alive */
        lua_pushnil(L);
        while (lua_next(L, wt)) {
            if (lua_type(L, -2) != LUA_TSTRING || f.n_where == MAX_WHERE)
                luaL_error(L, "%s: 'where' must map names to values, e.g. where = {lr = 0.001}", what);
            const char *v = luaL_tolstring(L, -1, NULL);  /* numbers as Lua writes them */
            where[f.n_where] = lua_pushfstring(L, "%s=%s", lua_tostring(L, -3), v);
            lua_rawseti(L, wt + 1, ++f.n_where);
            lua_pop(L, 2);  /* the text of the value, the value */
        }
        f.where = where;
    }

    runs_result *res = lua_newuserdatauv(L, sizeof *res, 0);
    memset(res, 0, sizeof *res);
    luaL_setmetatable(L, RUNS_RESULT);
    lua_toclose(L, -1);
    char path[4096];
    if (fm_track_open(&res->store, fm_track_default_path(db, ".", path, sizeof path), false) != FM_OK ||
        fm_track_query(res->store, &f, &res->runs, &res->n) != FM_OK)
        fm_lua_core_error(L, what);
    return res;
}

/* fm.runs.query{...} -> {run, ...} */
static int l_query(lua_State *L)
{
    runs_result *res = query(L, "fm.runs.query", NULL);
    lua_createtable(L, res->n, 0);
    for (int i = 0; i < res->n; i++) {
        push_run(L, &res->runs[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* fm.runs.html{dir, ...the filters of query} -> the page's path */
static int l_html(lua_State *L)
{
    const char *what = "fm.runs.html";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "dir");
    const char *dir = lua_tostring(L, -1);
    if (!dir) return luaL_error(L, "%s: option 'dir' (the directory to write index.html in) is required", what);
    lua_pop(L, 1);
    runs_result *res = query(L, what, "dir");
    lua_getfield(L, 1, "dir");
    dir = lua_tostring(L, -1);
    if (fm_track_write_html(dir, res->runs, res->n, fm_track_path(res->store)) != FM_OK)
        return fm_lua_core_error(L, what);
    lua_pushfstring(L, "%s/index.html", dir);
    return 1;
}

void fm_lua_open_runs(lua_State *L)
{
    luaL_newmetatable(L, RUNS_RESULT);
    lua_pushcfunction(L, result_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, result_close);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_query);
    lua_setfield(L, -2, "query");
    lua_pushcfunction(L, l_html);
    lua_setfield(L, -2, "html");
    lua_setfield(L, -2, "runs");
}
