/* The interpreter: state creation, script arguments, protected runs with a
 * traceback, and the `fm` module table (lua.c's structure). */
#include "fm_lua_internal.h"

#include <stdio.h>
#include <string.h>

#include "fm/fm_data.h"
#include "fm/fm_io.h"

/* ---- helpers shared by the module's files ------------------------------------ */

void fm_lua_class(lua_State *L, const char *tname, const luaL_Reg *meta, const luaL_Reg *methods,
                  lua_CFunction index)
{
    luaL_newmetatable(L, tname);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

int fm_lua_method(lua_State *L)
{
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    return 0;
}

int fm_lua_core_error(lua_State *L, const char *what)
{
    const char *msg = fm_error_message();
    return luaL_error(L, "%s: %s", what, *msg ? msg : fm_status_name(fm_error_status()));
}

void fm_lua_make_parent(lua_State *L, const char *path, const char *what)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return;
    lua_pushlstring(L, path, (size_t)(slash - path));
    if (fm_mkdirs(lua_tostring(L, -1)) != FM_OK) fm_lua_core_error(L, what);
    lua_pop(L, 1);
}

/* Edit distance, for "did you mean"; names are short. */
static int distance(const char *a, const char *b)
{
    int na = (int)strlen(a), nb = (int)strlen(b);
    if (na > 31 || nb > 31) return 99;
    int d[32][32];
    for (int i = 0; i <= na; i++) d[i][0] = i;
    for (int j = 0; j <= nb; j++) d[0][j] = j;
    for (int i = 1; i <= na; i++)
        for (int j = 1; j <= nb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            d[i][j] = best;
        }
    return d[na][nb];
}

void fm_lua_check_keys(lua_State *L, int idx, const char *const *known, const char *what)
{
    idx = lua_absindex(L, idx);
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: option names are strings, got a %s key", what,
                       luaL_typename(L, -2));
        const char *key = lua_tostring(L, -2);
        const char *closest = NULL;
        int best = 3;  /* suggest only near misses */
        bool found = false;
        for (const char *const *k = known; *k && !found; k++) {
            found = !strcmp(*k, key);
            int d = distance(*k, key);
            if (d < best) {
                best = d;
                closest = *k;
            }
        }
        if (found) continue;
        if (closest) luaL_error(L, "%s: unknown option '%s' (did you mean '%s'?)", what, key, closest);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (const char *const *k = known; *k; k++) {
            if (k != known) luaL_addstring(&b, ", ");
            luaL_addstring(&b, *k);
        }
        luaL_pushresult(&b);
        luaL_error(L, "%s: unknown option '%s' (options: %s)", what, key, lua_tostring(L, -1));
    }
}

void fm_lua_setnum(lua_State *L, const char *key, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

void fm_lua_setint(lua_State *L, const char *key, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, key);
}

void fm_lua_setstr(lua_State *L, const char *key, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

/* ---- the module -------------------------------------------------------------- */

int luaopen_fm(lua_State *L)
{
    lua_newtable(L);
    fm_lua_open_plugin(L);
    fm_lua_open_train(L);
    fm_lua_open_results(L);
    fm_lua_open_dist(L);
    fm_lua_open_runs(L);

    fm_lua_setstr(L, "version", FM_VERSION_STRING);
    lua_createtable(L, FM_NUM_CLASSES, 0);
    for (int k = 0; k < FM_NUM_CLASSES; k++) {
        lua_pushstring(L, fm_class_name(k));
        lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, "class_names");

    if (lua_getfield(L, LUA_REGISTRYINDEX, FM_LUA_ARGS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    lua_setfield(L, -2, "args");
    return 1;
}

lua_State *fm_lua_new(void)
{
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_fm);
    lua_setfield(L, -2, "fm");
    lua_pop(L, 1);
    return L;
}

void fm_lua_free(lua_State *L)
{
    if (L) lua_close(L);
}

static bool is_identifier(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9')) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

/* Pushes a KEY=VALUE value: a number when it reads as one, a boolean for
 * true/false, else the string. */
static void push_arg_value(lua_State *L, const char *v)
{
    if (*v && lua_stringtonumber(L, v) != 0) return;
    if (!strcmp(v, "true") || !strcmp(v, "false"))
        lua_pushboolean(L, v[0] == 't');
    else
        lua_pushstring(L, v);
}

void fm_lua_set_args(lua_State *L, const char *script, int argc, char **argv)
{
    lua_createtable(L, argc, 1);
    lua_pushstring(L, script);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");

    lua_newtable(L);
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (!eq || !is_identifier(argv[i], (size_t)(eq - argv[i]))) continue;
        lua_pushlstring(L, argv[i], (size_t)(eq - argv[i]));
        push_arg_value(L, eq + 1);
        lua_rawset(L, -3);
    }
    /* A script that already required fm sees the new table too. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "fm") == LUA_TTABLE) {
        lua_pushvalue(L, -3);
        lua_setfield(L, -2, "args");
    }
    lua_pop(L, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, FM_LUA_ARGS_KEY);
}

/* ---- protected runs ------------------------------------------------------------ */

/* Adds the traceback to an error message.  A message that already carries
 * one (an error in a training callback, raised again by fm.train) keeps the
 * callback's, which shows the callback's own frames. */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    if (strstr(msg, "\nstack traceback:")) return 1;
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Calls the function below its narg arguments under the traceback handler;
 * on failure leaves the message on the stack. */
static int docall(lua_State *L, int narg, int nres)
{
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    return status;
}

static fm_status fail_with_top(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fm_error_set(FM_ERR_SCRIPT, "%s", msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
    return FM_ERR_SCRIPT;
}

fm_status fm_lua_run_file(lua_State *L, const char *path)
{
    if (luaL_loadfile(L, path) != LUA_OK || docall(L, 0, 0) != LUA_OK) return fail_with_top(L);
    return FM_OK;
}

fm_status fm_lua_run_string(lua_State *L, const char *code, const char *chunkname)
{
    if (luaL_loadbuffer(L, code, strlen(code), chunkname) != LUA_OK || docall(L, 0, 0) != LUA_OK)
        return fail_with_top(L);
    return FM_OK;
}

typedef struct main_args {
    const char *script;
    int argc;
    char **argv;
} main_args;

/* Everything that may raise (even the argument tables may run out of
 * memory) runs protected, as in lua.c's pmain. */
static int pmain(lua_State *L)
{
    const main_args *a = lua_touserdata(L, 1);
    fm_lua_set_args(L, a->script, a->argc, a->argv);
    if (luaL_loadfile(L, a->script) != LUA_OK) return lua_error(L);
    luaL_checkstack(L, a->argc, "too many script arguments");
    for (int i = 0; i < a->argc; i++) lua_pushstring(L, a->argv[i]);
    if (docall(L, a->argc, 0) != LUA_OK) return lua_error(L);
    return 0;
}

/* A stop request (a signal) ends the script between runs: checked every
 * few thousand instructions, it raises an error where the script stands
 * (fm.train itself stops a run cleanly and raises on return). */
static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    int sig = fm_stop_requested();
    if (sig) luaL_error(L, "interrupted by signal %d", sig);
}

int fm_lua_main(const char *script, int argc, char **argv)
{
    lua_State *L = fm_lua_new();
    if (!L) {
        fprintf(stderr, "fmhost script: cannot create the Lua interpreter: out of memory\n");
        return 1;
    }
    lua_sethook(L, stop_hook, LUA_MASKCOUNT, 4096);
    main_args a = {script, argc, argv};
    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, &a);
    int status = lua_pcall(L, 1, 0, 0);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fflush(stdout);
        fprintf(stderr, "fmhost script: %s\n", msg ? msg : "(error object is not a string)");
        fflush(stderr);
    }
    lua_close(L);
    int sig = fm_stop_requested();
    return status == LUA_OK ? 0 : sig > 0 ? 128 + sig : 1;
}
