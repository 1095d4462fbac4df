/* fm.dataset and fm.train: FashionMNIST loaded once and shared by runs, and
 * training runs whose schedule and callbacks may be Lua functions.
 *
 * The callbacks are called from inside the C training loop.  A Lua error
 * must never unwind that loop (it would skip its cleanup), so every call
 * into Lua from a hook runs under lua_pcall; a failure stops training and
 * the error is raised again once fm_run_train has returned. */
#include "fm_lua_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/fm_io.h"

typedef struct fm_lua_dataset {
    fm_fashion *data;  /* freed once closed and no run uses it */
    bool closed;
    int runs;          /* open runs that read `data` */
    /* Defaults for runs on this data (fm.train options override them). */
    double val_split;
    uint64_t seed;
    int limit;
    bool augment;
} fm_lua_dataset;

/* A run; uservalue 1 is its plugin userdata, 2 its dataset userdata (or nil). */
typedef struct fm_lua_run {
    fm_run *run;      /* NULL once closed */
    fm_hparams *hp;   /* owned until the run is freed */
    char *data_dir, *out_dir;  /* copies: the run reads them after fm.train's table may change */
    char *runs_db, *sweep, *command;
    fm_lua_dataset *ds;        /* the dataset it trains on, or NULL */
    char hparams[512];
    /* The test-set result of the trained (best) weights, once evaluated:
     * training is over, so it never changes. */
    bool have_test;
    fm_eval_result test;
} fm_lua_run;

/* ---- reading options ---------------------------------------------------------- */

/* Pushes t[key]; false (nothing pushed) when it is nil. */
static bool opt_get(lua_State *L, int t, const char *key)
{
    if (lua_getfield(L, t, key) != LUA_TNIL) return true;
    lua_pop(L, 1);
    return false;
}

static int opt_type_error(lua_State *L, const char *what, const char *key, const char *expected)
{
    return luaL_error(L, "%s: option '%s' must be %s, got %s", what, key, expected,
                      luaL_typename(L, -1));
}

static bool opt_int(lua_State *L, int t, const char *what, const char *key, lua_Integer lo,
                    lua_Integer hi, lua_Integer *out)
{
    if (!opt_get(L, t, key)) return false;
    int ok = 0;
    lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &ok) : 0;
    if (!ok) {
        if (lua_type(L, -1) == LUA_TNUMBER)
            luaL_error(L, "%s: option '%s' must be an integer, got %f", what, key,
                       lua_tonumber(L, -1));
        opt_type_error(L, what, key, "an integer");
    }
    if (v < lo || v > hi)
        luaL_error(L, "%s: option '%s' is %I: it must be between %I and %I", what, key, v, lo, hi);
    lua_pop(L, 1);
    *out = v;
    return true;
}

static bool opt_int32(lua_State *L, int t, const char *what, const char *key, int lo, int hi,
                      int *out)
{
    lua_Integer v;
    if (!opt_int(L, t, what, key, lo, hi, &v)) return false;
    *out = (int)v;
    return true;
}

static bool opt_num(lua_State *L, int t, const char *what, const char *key, double *out)
{
    if (!opt_get(L, t, key)) return false;
    if (lua_type(L, -1) != LUA_TNUMBER) opt_type_error(L, what, key, "a number");
    *out = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!isfinite(*out)) luaL_error(L, "%s: option '%s' must be a finite number", what, key);
    return true;
}

static bool opt_bool(lua_State *L, int t, const char *what, const char *key, bool *out)
{
    if (!opt_get(L, t, key)) return false;
    if (lua_type(L, -1) != LUA_TBOOLEAN) opt_type_error(L, what, key, "a boolean");
    *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return true;
}

/* Leaves the string on the stack (so it stays alive) and returns it, or NULL. */
static const char *opt_str(lua_State *L, int t, const char *what, const char *key)
{
    if (!opt_get(L, t, key)) return NULL;
    if (lua_type(L, -1) != LUA_TSTRING) opt_type_error(L, what, key, "a string");
    return lua_tostring(L, -1);
}

/* Pushes t[key] when it is a function (an absent key pushes nil). */
static void opt_function(lua_State *L, int t, const char *what, const char *key)
{
    int type = lua_getfield(L, t, key);
    if (type != LUA_TNIL && type != LUA_TFUNCTION) opt_type_error(L, what, key, "a function");
}

/* ---- kernel sets ------------------------------------------------------------------- */

#define KERNELS_SCOPE "fm.kernels_scope"

/* A to-be-closed value that puts the previous kernel set back. */
typedef struct kernels_scope {
    fm_kernels previous;
    bool switched;
} kernels_scope;

static int kernels_scope_close(lua_State *L)
{
    kernels_scope *s = luaL_checkudata(L, 1, KERNELS_SCOPE);
    if (s->switched) {
        s->switched = false;
        fm_kernels_use(s->previous);  /* it was in use, so it is supported */
    }
    return 0;
}

/* Makes k the set in use until the calling C function returns or raises:
 * pushes a to-be-closed slot that restores the set in use before.  Raises
 * "<what>: <the core's message>" when the processor cannot run k. */
static void push_kernels_scope(lua_State *L, fm_kernels k, const char *what)
{
    kernels_scope *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->previous = fm_kernels_active();
    s->switched = false;
    luaL_setmetatable(L, KERNELS_SCOPE);
    lua_toclose(L, -1);
    if (k == s->previous) return;
    if (fm_kernels_use(k) != FM_OK) fm_lua_core_error(L, what);
    s->switched = true;
}

/* fm.kernels() -> the set in use, {the sets this processor runs, slowest first} */
static int l_kernels(lua_State *L)
{
    lua_pushstring(L, fm_kernels_name(fm_kernels_active()));
    lua_createtable(L, FM_KERNELS_COUNT, 0);
    for (int k = 0, n = 0; k < FM_KERNELS_COUNT; k++)
        if (fm_kernels_supported((fm_kernels)k)) {
            lua_pushstring(L, fm_kernels_name((fm_kernels)k));
            lua_rawseti(L, -2, ++n);
        }
    return 2;
}

/* ---- fm.dataset ------------------------------------------------------------------- */

static fm_lua_dataset *check_dataset(lua_State *L, int idx)
{
    fm_lua_dataset *u = luaL_checkudata(L, idx, FM_LUA_DATASET);
    if (u->closed || !u->data) luaL_error(L, "the dataset is closed");
    return u;
}

/* A run reads the images until it is freed, so a dataset closed while runs
 * use it keeps its data until the last of them is closed. */
static void dataset_release(fm_lua_dataset *u)
{
    if (!u->data || !u->closed || u->runs > 0) return;
    fm_fashion_free(u->data);
    free(u->data);
    u->data = NULL;
}

static int l_dataset(lua_State *L)
{
    static const char *const keys[] = {"dir", "val_split", "seed", "limit", "augment", NULL};
    const char *what = "fm.dataset";
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    fm_lua_check_keys(L, 1, keys, what);

    fm_lua_dataset *u = lua_newuserdatauv(L, sizeof *u, 0);  /* 2 */
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, FM_LUA_DATASET);
    u->val_split = 0.1;
    u->seed = 42;
    lua_Integer seed, limit;
    const char *dir = opt_str(L, 1, what, "dir");  /* 3 when given */
    if (opt_num(L, 1, what, "val_split", &u->val_split) &&
        !(u->val_split > 0.0 && u->val_split < 1.0))
        luaL_error(L, "%s: val_split %f must be in (0, 1)", what, u->val_split);
    if (opt_int(L, 1, what, "seed", 0, INT64_MAX, &seed)) u->seed = (uint64_t)seed;
    if (opt_int(L, 1, what, "limit", 0, 100000000, &limit)) u->limit = (int)limit;
    opt_bool(L, 1, what, "augment", &u->augment);

    u->data = fm_xcalloc(1, sizeof *u->data);
    if (fm_fashion_load(u->data, dir) != FM_OK) {
        free(u->data);
        u->data = NULL;
        return fm_lua_core_error(L, what);
    }
    lua_pushvalue(L, 2);
    return 1;
}

static int dataset_gc(lua_State *L)
{
    fm_lua_dataset *u = luaL_checkudata(L, 1, FM_LUA_DATASET);
    u->closed = true;
    dataset_release(u);
    return 0;
}

static int dataset_tostring(lua_State *L)
{
    fm_lua_dataset *u = luaL_checkudata(L, 1, FM_LUA_DATASET);
    if (u->closed || !u->data)
        lua_pushliteral(L, "fm.dataset (closed)");
    else
        lua_pushfstring(L, "fm.dataset %s (%d train, %d test images)", u->data->dir,
                        u->data->train.n, u->data->test.n);
    return 1;
}

static int dataset_index(lua_State *L)
{
    fm_lua_dataset *u = luaL_checkudata(L, 1, FM_LUA_DATASET);
    if (fm_lua_method(L)) return 1;
    const char *k = lua_tostring(L, 2);
    if (!k || u->closed || !u->data) return 0;
    if (!strcmp(k, "dir"))
        lua_pushstring(L, u->data->dir);
    else if (!strcmp(k, "train_size"))
        lua_pushinteger(L, u->data->train.n);
    else if (!strcmp(k, "test_size"))
        lua_pushinteger(L, u->data->test.n);
    else if (!strcmp(k, "val_split"))
        lua_pushnumber(L, u->val_split);
    else if (!strcmp(k, "seed"))
        lua_pushinteger(L, (lua_Integer)u->seed);
    else if (!strcmp(k, "limit"))
        lua_pushinteger(L, u->limit);
    else if (!strcmp(k, "augment"))
        lua_pushboolean(L, u->augment);
    else
        return 0;
    return 1;
}

/* ---- hooks: Lua callbacks called by the C training loop -------------------------- */

typedef struct lua_hooks {
    lua_State *L;
    /* Stack slots, in fm.train's frame, of the Lua functions (0: absent). */
    int schedule, on_step, on_epoch;
    int error;          /* slot of the error message once a callback failed; -1: no stack */
    const char *failed; /* which callback failed */
} lua_hooks;

typedef struct sched_args {
    int epoch, step;
    double base_lr;
} sched_args;

/* "function at scripts/x.lua:12", for messages about what a callback returned. */
static const char *where_defined(lua_State *L, int fn)
{
    lua_Debug ar;
    lua_pushvalue(L, fn);
    if (!lua_getinfo(L, ">S", &ar) || ar.linedefined < 0) return "";
    return lua_pushfstring(L, " (function at %s:%d)", ar.short_src, ar.linedefined);
}

/* Bodies run under lua_pcall: argument 1 the Lua function, 2 a light
 * userdata with the C arguments.  Each returns one number. */
static int body_schedule(lua_State *L)
{
    const sched_args *a = lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, a->epoch);
    lua_pushinteger(L, a->step);
    lua_pushnumber(L, a->base_lr);
    lua_call(L, 3, 1);
    if (lua_type(L, -1) != LUA_TNUMBER)
        return luaL_error(L, "schedule(%d, %d)%s returned %s: it must return the learning rate",
                          a->epoch, a->step, where_defined(L, 1), luaL_typename(L, -1));
    double lr = lua_tonumber(L, 2);
    if (!(lr >= 0.0) || !isfinite(lr))
        return luaL_error(L, "schedule(%d, %d)%s returned %f: the learning rate must be a finite "
                          "number >= 0", a->epoch, a->step, where_defined(L, 1), lr);
    return 1;
}

/* A callback's answer: nil or true go on, false stops. */
static int continue_or_stop(lua_State *L, const char *name)
{
    int t = lua_type(L, -1);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        return luaL_error(L, "%s%s returned %s: return nothing (or true) to go on, false to stop",
                          name, where_defined(L, 1), luaL_typename(L, -1));
    lua_pushinteger(L, t == LUA_TBOOLEAN && !lua_toboolean(L, -1) ? 0 : 1);
    return 1;
}

static int body_step(lua_State *L)
{
    const fm_step_info *s = lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_pushvalue(L, 1);
    lua_createtable(L, 0, 6);
    fm_lua_setint(L, "epoch", s->epoch);
    fm_lua_setint(L, "step", s->step);
    fm_lua_setint(L, "steps_per_epoch", s->steps_per_epoch);
    fm_lua_setint(L, "global_step", (lua_Integer)s->global_step);
    fm_lua_setnum(L, "loss", s->loss);
    fm_lua_setnum(L, "lr", s->lr);
    lua_call(L, 1, 1);
    return continue_or_stop(L, "on_step");
}

void fm_lua_push_metrics(lua_State *L, const fm_epoch_metrics *m)
{
    lua_createtable(L, 0, 7);
    fm_lua_setint(L, "epoch", m->epoch);
    fm_lua_setnum(L, "train_loss", m->train_loss);
    fm_lua_setnum(L, "train_acc", m->train_acc);
    fm_lua_setnum(L, "val_loss", m->val_loss);
    fm_lua_setnum(L, "val_acc", m->val_acc);
    fm_lua_setnum(L, "lr", m->lr);
    fm_lua_setnum(L, "seconds", m->seconds);
}

static int body_epoch(lua_State *L)
{
    const fm_epoch_metrics *m = lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_pushvalue(L, 1);
    fm_lua_push_metrics(L, m);
    lua_call(L, 1, 1);
    return continue_or_stop(L, "on_epoch");
}

static int hook_msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Calls body(fn, arg) protected.  Only operations that cannot raise happen
 * outside the pcall: checkstack reports failure instead, and pushing C
 * functions, light userdata and stack copies allocates nothing. */
static bool hook_call(lua_hooks *h, const char *name, lua_CFunction body, int fn, void *arg,
                      double *out)
{
    lua_State *L = h->L;
    if (!lua_checkstack(L, 8)) {
        h->error = -1;
        h->failed = name;
        return false;
    }
    int base = lua_gettop(L);
    lua_pushcfunction(L, hook_msgh);
    lua_pushcfunction(L, body);
    lua_pushvalue(L, fn);
    lua_pushlightuserdata(L, arg);
    if (lua_pcall(L, 2, 1, base + 1) != LUA_OK) {
        lua_remove(L, base + 1);
        h->error = lua_gettop(L);  /* stays on the stack until fm.train raises it */
        h->failed = name;
        return false;
    }
    *out = lua_tonumber(L, -1);
    lua_settop(L, base);
    return true;
}

static double hook_schedule(void *user, int epoch, int step, double base_lr)
{
    lua_hooks *h = user;
    sched_args a = {epoch, step, base_lr};
    double lr;
    /* After a failure the run stops at the next on_step; keep the base rate till then. */
    if (h->error || !hook_call(h, "schedule", body_schedule, h->schedule, &a, &lr)) return base_lr;
    return lr;
}

static bool hook_step(void *user, const fm_step_info *info)
{
    lua_hooks *h = user;
    double go_on;
    if (h->error) return false;
    if (!h->on_step) return true;
    return hook_call(h, "on_step", body_step, h->on_step, (void *)info, &go_on) && go_on != 0;
}

static bool hook_epoch(void *user, const fm_epoch_metrics *m)
{
    lua_hooks *h = user;
    double go_on;
    if (h->error) return false;
    if (!h->on_epoch) return true;
    return hook_call(h, "on_epoch", body_epoch, h->on_epoch, (void *)m, &go_on) && go_on != 0;
}

/* ---- fm.train ------------------------------------------------------------------------ */

static fm_lua_run *check_run(lua_State *L, int idx)
{
    fm_lua_run *u = luaL_checkudata(L, idx, FM_LUA_RUN);
    if (!u->run) luaL_error(L, "the run is closed");
    return u;
}

fm_model *fm_lua_run_model(lua_State *L, int idx)
{
    fm_lua_run *u = luaL_testudata(L, idx, FM_LUA_RUN);
    return u && u->run ? fm_run_model(u->run) : NULL;
}

/* The optimizer's defaults depend on its kind, so it is read first; then
 * explicit lr, momentum and weight decay win, as on the command line. */
static void read_optimizer(lua_State *L, int t, const char *what, fm_train_config *cfg)
{
    fm_optim_kind kind = cfg->optim.kind;
    const char *name = opt_str(L, t, what, "optimizer");
    if (name) {
        if (fm_optim_kind_parse(name, &kind) != FM_OK) fm_lua_core_error(L, what);
        lua_pop(L, 1);
    }
    fm_optim_config oc = fm_optim_defaults(kind);
    double v;
    if (opt_num(L, t, what, "lr", &v)) oc.lr = (float)v;
    if (opt_num(L, t, what, "momentum", &v)) oc.momentum = (float)v;
    if (opt_num(L, t, what, "weight_decay", &v)) oc.weight_decay = (float)v;
    opt_bool(L, t, what, "nesterov", &oc.nesterov);
    cfg->optim = oc;
}

/* "fmhost script FILE ARG...", from the global `arg` (the command that
 * runs the script), for the run store; malloc'ed. */
static char *script_command(lua_State *L)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "fmhost script");
    if (lua_getglobal(L, "arg") == LUA_TTABLE) {
        for (lua_Integer i = 0;; i++) {
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING) {
                lua_pop(L, 1);
                break;
            }
            const char *w = lua_tostring(L, -1);
            bool plain = *w && strspn(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789-_=./,:+@%") == strlen(w);
            lua_pop(L, 1);
            luaL_addchar(&b, ' ');
            if (!plain) luaL_addchar(&b, '\'');
            for (; *w; w++)
                if (*w == '\'')
                    luaL_addstring(&b, "'\\''");
                else
                    luaL_addchar(&b, *w);
            if (!plain) luaL_addchar(&b, '\'');
        }
    }
    lua_pop(L, 1);
    luaL_pushresult(&b);
    char *s = fm_xstrdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return s;
}

static void read_config(lua_State *L, int t, const char *what, fm_train_config *cfg,
                        fm_lua_run *u, bool have_data)
{
    lua_Integer seed;
    opt_int32(L, t, what, "epochs", 1, 100000, &cfg->epochs);
    opt_int32(L, t, what, "batch_size", 1, 65536, &cfg->batch_size);
    if (opt_int(L, t, what, "seed", 0, INT64_MAX, &seed)) cfg->seed = (uint64_t)seed;
    read_optimizer(L, t, what, cfg);
    opt_int32(L, t, what, "patience", 0, 100000, &cfg->patience);
    opt_num(L, t, what, "val_split", &cfg->val_split);
    const char *sched = opt_str(L, t, what, "scheduler");
    if (sched) {
        if (fm_sched_kind_parse(sched, &cfg->scheduler) != FM_OK) fm_lua_core_error(L, what);
        lua_pop(L, 1);
    }
    opt_int32(L, t, what, "step_size", 1, 100000, &cfg->step_size);
    opt_num(L, t, what, "gamma", &cfg->gamma);
    opt_num(L, t, what, "min_lr", &cfg->min_lr);
    opt_int32(L, t, what, "warmup", 0, 100000, &cfg->warmup);
    opt_num(L, t, what, "pct_start", &cfg->pct_start);
    opt_num(L, t, what, "div_factor", &cfg->div_factor);
    opt_num(L, t, what, "final_div_factor", &cfg->final_div_factor);
    opt_bool(L, t, what, "augment", &cfg->augment);
    opt_int32(L, t, what, "threads", 0, 256, &cfg->threads);
    opt_int32(L, t, what, "limit", 0, 100000000, &cfg->limit);
    opt_bool(L, t, what, "quiet", &cfg->quiet);
    opt_bool(L, t, what, "artifacts", &cfg->write_artifacts);
    opt_bool(L, t, what, "resume", &cfg->resume);
    if (opt_num(L, t, what, "clip_grad_norm", &cfg->clip_grad_norm) && cfg->clip_grad_norm < 0)
        luaL_error(L, "%s: clip_grad_norm must be >= 0 (0: off), not %f", what,
                   cfg->clip_grad_norm);

    opt_num(L, t, what, "label_smoothing", &cfg->label_smoothing);
    opt_num(L, t, what, "ema", &cfg->ema);
    opt_bool(L, t, what, "tta", &cfg->tta);
    opt_num(L, t, what, "random_erasing", &cfg->random_erasing);
    opt_num(L, t, what, "mixup", &cfg->mixup);
    opt_num(L, t, what, "cutmix", &cfg->cutmix);

    const char *precision = opt_str(L, t, what, "precision");
    if (precision) {
        if (fm_precision_parse(precision, &cfg->precision) != FM_OK)
            luaL_error(L, "%s: precision: %s", what, fm_error_message());
        lua_pop(L, 1);
    }

    const char *save_dtype = opt_str(L, t, what, "save_dtype");
    if (save_dtype) {
        if (fm_float_dtype_parse(save_dtype, &cfg->save_dtype) != FM_OK)
            luaL_error(L, "%s: save_dtype: %s", what, fm_error_message());
        lua_pop(L, 1);
    }

    const char *dir = opt_str(L, t, what, "data_dir");
    if (dir) {
        if (have_data)
            luaL_error(L, "%s: give either 'data' (a loaded fm.dataset) or 'data_dir', not both",
                       what);
        u->data_dir = fm_xstrdup(dir);
        cfg->data_dir = u->data_dir;
        lua_pop(L, 1);
    }
    const char *out = opt_str(L, t, what, "out");
    if (out) {
        u->out_dir = fm_xstrdup(out);
        cfg->out_dir = u->out_dir;
        lua_pop(L, 1);
    }
    opt_bool(L, t, what, "track", &cfg->track);
    const char *runs_db = opt_str(L, t, what, "runs_db");
    if (runs_db) {
        u->runs_db = fm_xstrdup(runs_db);
        cfg->runs_db = u->runs_db;
        lua_pop(L, 1);
    }
    const char *sweep = opt_str(L, t, what, "sweep");
    if (sweep) {
        u->sweep = fm_xstrdup(sweep);
        cfg->sweep = u->sweep;
        lua_pop(L, 1);
    }
    u->command = script_command(L);
    cfg->command = u->command;
    cfg->progress_tty = !cfg->quiet && isatty(STDERR_FILENO);
}

/* Stack slots of l_train. */
enum { T_OPTS = 1, T_RUN, T_PLUGIN, T_DATA, T_SCHEDULE, T_ON_STEP, T_ON_EPOCH, T_SET };

static int l_train(lua_State *L)
{
    static const char *const keys[] = {
        "plugin", "data", "set", "schedule", "on_step", "on_epoch", "epochs", "batch_size",
        "lr", "seed", "optimizer", "momentum", "weight_decay", "nesterov", "patience",
        "val_split", "scheduler", "step_size", "gamma", "min_lr", "warmup", "augment", "threads",
        "limit", "data_dir", "out", "quiet", "artifacts", "report", "kernels", "resume",
        "clip_grad_norm", "save_dtype", "precision", "track", "runs_db", "sweep",
        "label_smoothing", "ema", "tta", "pct_start", "div_factor", "final_div_factor",
        "random_erasing", "mixup", "cutmix", NULL,
    };
    const char *what = "fm.train";
    luaL_checktype(L, T_OPTS, LUA_TTABLE);
    lua_settop(L, T_OPTS);
    fm_lua_check_keys(L, T_OPTS, keys, what);

    fm_lua_run *u = lua_newuserdatauv(L, sizeof *u, 2);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, FM_LUA_RUN);

    switch (lua_getfield(L, T_OPTS, "plugin")) {
    case LUA_TSTRING:
        fm_lua_push_plugin(L, lua_tostring(L, T_PLUGIN));
        lua_replace(L, T_PLUGIN);
        break;
    case LUA_TNIL:
        return luaL_error(L, "%s: option 'plugin' is required (fm.plugin(...) or a model name "
                          "such as \"mlp\")", what);
    default:
        if (!luaL_testudata(L, T_PLUGIN, FM_LUA_PLUGIN))
            opt_type_error(L, what, "plugin", "a plugin (fm.plugin) or a model name");
    }
    fm_lua_plugin *p = fm_lua_check_plugin(L, T_PLUGIN);
    lua_pushvalue(L, T_PLUGIN);
    lua_setiuservalue(L, T_RUN, 1);

    fm_lua_dataset *ds = NULL;
    if (lua_getfield(L, T_OPTS, "data") != LUA_TNIL) {
        if (!luaL_testudata(L, T_DATA, FM_LUA_DATASET))
            opt_type_error(L, what, "data", "a dataset (fm.dataset)");
        ds = check_dataset(L, T_DATA);
    }
    lua_pushvalue(L, T_DATA);
    lua_setiuservalue(L, T_RUN, 2);

    fm_train_config cfg;
    fm_train_config_init(&cfg);
    if (ds) {
        cfg.val_split = ds->val_split;
        cfg.seed = ds->seed;
        cfg.limit = ds->limit;
        cfg.augment = ds->augment;
    }
    read_config(L, T_OPTS, what, &cfg, u, ds != NULL);
    bool report = true;
    opt_bool(L, T_OPTS, what, "report", &report);

    opt_function(L, T_OPTS, what, "schedule");
    opt_function(L, T_OPTS, what, "on_step");
    opt_function(L, T_OPTS, what, "on_epoch");
    lua_hooks hooks = {
        .L = L,
        .schedule = lua_isnil(L, T_SCHEDULE) ? 0 : T_SCHEDULE,
        .on_step = lua_isnil(L, T_ON_STEP) ? 0 : T_ON_STEP,
        .on_epoch = lua_isnil(L, T_ON_EPOCH) ? 0 : T_ON_EPOCH,
    };
    if (hooks.schedule || hooks.on_step || hooks.on_epoch) {
        /* on_step and on_epoch also stop the run after a failed schedule.  The
         * hooks point into this frame: only this call trains the run. */
        cfg.schedule = hooks.schedule ? hook_schedule : NULL;
        cfg.on_step = hook_step;
        cfg.on_epoch = hook_epoch;
        cfg.user = &hooks;
    }

    lua_getfield(L, T_OPTS, "set");
    u->hp = fm_lua_hparams(L, T_SET, p->plugin, what);
    fm_hparams_to_string(u->hp, u->hparams, sizeof u->hparams);

    /* The run's kernel set, in use from here until fm.train returns or raises. */
    fm_kernels kernels = fm_kernels_active();
    const char *kname = opt_str(L, T_OPTS, what, "kernels");
    if (kname) {
        if (fm_kernels_parse(kname, &kernels) != FM_OK) fm_lua_core_error(L, what);
        lua_pop(L, 1);
    }
    push_kernels_scope(L, kernels, what);

    if (fm_run_new(&u->run, p->plugin, u->hp, ds ? ds->data : NULL, &cfg) != FM_OK)
        return fm_lua_core_error(L, what);
    if (ds) {
        u->ds = ds;
        ds->runs++;
    }
    if (!cfg.quiet)
        fm_log(FM_LOG_INFO, "%s: %lld parameters (%s), %s lr %g, %s schedule, batch %d, up to %d "
               "epochs, seed %llu%s, %s kernels, %s", fm_run_name(u->run),
               (long long)fm_model_num_params(fm_run_model(u->run)), u->hparams,
               fm_optim_kind_name(cfg.optim.kind), (double)cfg.optim.lr,
               hooks.schedule ? "Lua" : fm_sched_kind_name(cfg.scheduler), cfg.batch_size,
               cfg.epochs, (unsigned long long)cfg.seed, cfg.augment ? ", augmented" : "",
               fm_kernels_name(kernels), fm_precision_name(cfg.precision));

    fm_status st = fm_run_train(u->run);
    if (hooks.error == -1)
        return luaL_error(L, "%s: %s callback: Lua stack overflow", what, hooks.failed);
    if (hooks.error) {
        lua_pushfstring(L, "%s: %s callback failed: %s", what, hooks.failed,
                        lua_tostring(L, hooks.error));
        fm_run_track_failed(u->run, lua_tostring(L, -1));
        return lua_error(L);
    }
    if (st != FM_OK) return fm_lua_core_error(L, what);
    fm_run_status status = fm_run_status_of(u->run);
    if (report && cfg.write_artifacts) {
        /* Evaluated once here, the report and run:evaluate("test") share it
         * (a run that did not finish reports the epochs done). */
        bool test = status <= FM_RUN_STOPPED;
        if ((test && fm_run_evaluate(u->run, FM_SPLIT_TEST, &u->test) != FM_OK) ||
            fm_run_report(u->run) != FM_OK)
            return fm_lua_core_error(L, what);
        u->have_test = test;
    }
    /* An interrupted run's state is saved: the script stops here.  A
     * diverged one is the script's to judge (run.status, run.message). */
    if (status == FM_RUN_INTERRUPTED)
        return luaL_error(L, "%s: %s", what, fm_run_status_message(u->run));
    lua_settop(L, T_RUN);
    return 1;
}

/* ---- the run object ------------------------------------------------------------------ */

static int run_gc(lua_State *L)
{
    fm_lua_run *u = luaL_checkudata(L, 1, FM_LUA_RUN);
    fm_run_free(u->run);
    fm_hparams_free(u->hp);
    free(u->data_dir);
    free(u->out_dir);
    free(u->runs_db);
    free(u->sweep);
    free(u->command);
    if (u->ds) {
        /* The dataset userdata is alive: it is this run's uservalue. */
        u->ds->runs--;
        dataset_release(u->ds);
    }
    memset(u, 0, sizeof *u);
    return 0;
}

static int run_tostring(lua_State *L)
{
    fm_lua_run *u = luaL_checkudata(L, 1, FM_LUA_RUN);
    if (!u->run) {
        lua_pushliteral(L, "fm.run (closed)");
        return 1;
    }
    int n;
    fm_run_history(u->run, &n);
    lua_pushfstring(L, "fm.run %s (%s): %d epochs, best %d", fm_run_name(u->run), u->hparams, n,
                    fm_run_best_epoch(u->run));
    return 1;
}

static void push_history(lua_State *L, fm_run *r)
{
    int n;
    const fm_epoch_metrics *h = fm_run_history(r, &n);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        fm_lua_push_metrics(L, &h[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

static void push_path_or_nil(lua_State *L, const char *s)
{
    if (s && *s)
        lua_pushstring(L, s);
    else
        lua_pushnil(L);
}

static int run_index(lua_State *L)
{
    fm_lua_run *u = luaL_checkudata(L, 1, FM_LUA_RUN);
    if (fm_lua_method(L)) return 1;
    const char *k = lua_tostring(L, 2);
    if (!k || !u->run) return 0;
    fm_run *r = u->run;
    int n;
    const fm_epoch_metrics *h = fm_run_history(r, &n);
    if (!strcmp(k, "name")) {
        lua_pushstring(L, fm_run_name(r));
    } else if (!strcmp(k, "plugin")) {
        lua_getiuservalue(L, 1, 1);
    } else if (!strcmp(k, "data")) {
        lua_getiuservalue(L, 1, 2);
    } else if (!strcmp(k, "history")) {
        push_history(L, r);
    } else if (!strcmp(k, "epochs")) {
        lua_pushinteger(L, n);
    } else if (!strcmp(k, "best_epoch")) {
        lua_pushinteger(L, fm_run_best_epoch(r));
    } else if (!strcmp(k, "best")) {
        int b = fm_run_best_epoch(r);
        if (b < 1 || b > n) return 0;
        fm_lua_push_metrics(L, &h[b - 1]);
    } else if (!strcmp(k, "params")) {
        lua_pushinteger(L, (lua_Integer)fm_model_num_params(fm_run_model(r)));
    } else if (!strcmp(k, "hparams")) {
        lua_pushstring(L, u->hparams);
    } else if (!strcmp(k, "kernels")) {
        lua_pushstring(L, fm_kernels_name(fm_run_kernels(r)));
    } else if (!strcmp(k, "precision")) {
        lua_pushstring(L, fm_precision_name(fm_run_precision(r)));
    } else if (!strcmp(k, "status")) {
        lua_pushstring(L, fm_run_status_name(fm_run_status_of(r)));
    } else if (!strcmp(k, "message")) {
        lua_pushstring(L, fm_run_status_message(r));
    } else if (!strcmp(k, "seconds")) {
        lua_pushnumber(L, fm_run_seconds(r));
    } else if (!strcmp(k, "checkpoint")) {
        push_path_or_nil(L, fm_run_checkpoint_path(r));
    } else if (!strcmp(k, "results_dir")) {
        push_path_or_nil(L, fm_run_results_dir(r));
    } else if (!strcmp(k, "id")) {
        if (!fm_run_track_id(r)) return 0;
        lua_pushinteger(L, (lua_Integer)fm_run_track_id(r));
    } else if (!strcmp(k, "runs_db")) {
        push_path_or_nil(L, fm_run_track_path(r));
    } else if (!strcmp(k, "run_dir")) {
        push_path_or_nil(L, fm_run_track_dir(r));
    } else {
        return 0;
    }
    return 1;
}

/* run:evaluate("test" | "val" | "train") -> {split, loss, acc, n, confusion} */
static int run_evaluate(lua_State *L)
{
    static const char *const names[] = {"train", "val", "test", NULL};
    static const fm_split_id ids[] = {FM_SPLIT_TRAIN, FM_SPLIT_VAL, FM_SPLIT_TEST};
    fm_lua_run *u = check_run(L, 1);
    int which = luaL_checkoption(L, 2, "test", names);
    lua_settop(L, 2);
    push_kernels_scope(L, fm_run_kernels(u->run), "evaluate");
    const fm_eval_result *res = &u->test;
    if (ids[which] != FM_SPLIT_TEST || !u->have_test) {
        fm_eval_result *fresh = lua_newuserdatauv(L, sizeof *fresh, 0);  /* 10×10 counts */
        if (fm_run_evaluate(u->run, ids[which], fresh) != FM_OK)
            return fm_lua_core_error(L, "evaluate");
        if (ids[which] == FM_SPLIT_TEST) {
            u->test = *fresh;
            u->have_test = true;
        }
        res = fresh;
    }
    lua_createtable(L, 0, 5);
    fm_lua_setstr(L, "split", names[which]);
    fm_lua_setnum(L, "loss", res->loss);
    fm_lua_setnum(L, "acc", res->acc);
    fm_lua_setint(L, "n", res->n);
    lua_createtable(L, FM_NUM_CLASSES, 0);
    for (int t = 0; t < FM_NUM_CLASSES; t++) {
        lua_createtable(L, FM_NUM_CLASSES, 0);
        for (int q = 0; q < FM_NUM_CLASSES; q++) {
            lua_pushinteger(L, (lua_Integer)res->confusion[t][q]);
            lua_rawseti(L, -2, q + 1);
        }
        lua_rawseti(L, -2, t + 1);
    }
    lua_setfield(L, -2, "confusion");
    return 1;
}

static int run_save(lua_State *L)
{
    fm_lua_run *u = check_run(L, 1);
    const char *path = luaL_checkstring(L, 2);
    fm_lua_make_parent(L, path, "save");
    if (fm_run_save(u->run, path) != FM_OK) return fm_lua_core_error(L, "save");
    lua_pushvalue(L, 2);
    return 1;
}

static int run_report(lua_State *L)
{
    fm_lua_run *u = check_run(L, 1);
    if (!fm_run_results_dir(u->run)[0])
        return luaL_error(L, "report: this run was trained with artifacts = false: there is no "
                          "results directory to write to");
    lua_settop(L, 1);
    push_kernels_scope(L, fm_run_kernels(u->run), "report");
    if (fm_run_report(u->run) != FM_OK) return fm_lua_core_error(L, "report");
    lua_pushstring(L, fm_run_results_dir(u->run));
    return 1;
}

static int run_call(lua_State *L)
{
    fm_lua_run *u = check_run(L, 1);
    const char *name = luaL_checkstring(L, 2);
    fm_model *m = fm_run_model(u->run);
    return fm_lua_call_export(L, fm_model_owner(m), name, m, 3);
}

void fm_lua_open_train(lua_State *L)
{
    static const luaL_Reg dataset_meta[] = {
        {"__gc", dataset_gc}, {"__close", dataset_gc}, {"__tostring", dataset_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg dataset_methods[] = {{"close", dataset_gc}, {NULL, NULL}};
    static const luaL_Reg run_meta[] = {
        {"__gc", run_gc}, {"__close", run_gc}, {"__tostring", run_tostring}, {NULL, NULL},
    };
    static const luaL_Reg run_methods[] = {
        {"evaluate", run_evaluate}, {"save", run_save}, {"report", run_report},
        {"call", run_call}, {"close", run_gc}, {NULL, NULL},
    };
    fm_lua_class(L, FM_LUA_DATASET, dataset_meta, dataset_methods, dataset_index);
    fm_lua_class(L, FM_LUA_RUN, run_meta, run_methods, run_index);
    luaL_newmetatable(L, KERNELS_SCOPE);
    lua_pushcfunction(L, kernels_scope_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_kernels);
    lua_setfield(L, -2, "kernels");
    lua_pushcfunction(L, l_dataset);
    lua_setfield(L, -2, "dataset");
    lua_pushcfunction(L, l_train);
    lua_setfield(L, -2, "train");
}
