/* fm.plugin: plugins and models as userdata, and calls of a plugin's extra
 * functions through libffi.  The Lua side checks each argument against the
 * signature letter (i l f d s m) before anything reaches C. */
#include "fm_lua_internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fm_plugin.h's loader accepts at most this many arguments per export. */
#define FM_LUA_MAX_ARGS 16

/* ---- plugins --------------------------------------------------------------- */

fm_lua_plugin *fm_lua_check_plugin(lua_State *L, int idx)
{
    fm_lua_plugin *u = luaL_checkudata(L, idx, FM_LUA_PLUGIN);
    if (!u->plugin) luaL_error(L, "the plugin is closed");
    return u;
}

void fm_lua_push_plugin(lua_State *L, const char *name_or_path)
{
    char path[4096];
    /* Metatable first, then the resource: __gc never sees a half-made object. */
    fm_lua_plugin *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->plugin = NULL;
    luaL_setmetatable(L, FM_LUA_PLUGIN);
    if (fm_plugin_resolve(name_or_path, path, sizeof path) != FM_OK)
        fm_lua_core_error(L, "fm.plugin");
    u->plugin = fm_plugin_open(path);
    if (!u->plugin) fm_lua_core_error(L, "fm.plugin");
}

static int l_plugin(lua_State *L)
{
    fm_lua_push_plugin(L, luaL_checkstring(L, 1));
    return 1;
}

static int plugin_gc(lua_State *L)
{
    fm_lua_plugin *u = luaL_checkudata(L, 1, FM_LUA_PLUGIN);
    fm_plugin_release(u->plugin);  /* models and runs hold their own references */
    u->plugin = NULL;
    return 0;
}

static int plugin_tostring(lua_State *L)
{
    fm_lua_plugin *u = luaL_checkudata(L, 1, FM_LUA_PLUGIN);
    if (!u->plugin) {
        lua_pushliteral(L, "fm.plugin (closed)");
        return 1;
    }
    lua_pushfstring(L, "fm.plugin %s (%s)", fm_plugin_descriptor_of(u->plugin)->name,
                    fm_plugin_path(u->plugin));
    return 1;
}

/* Pushes a declared default in its own type: 256, 0.2, true, "relu". */
static void push_typed_default(lua_State *L, const fm_hparam_decl *h)
{
    if (h->type == FM_HP_BOOL) {
        const char *d = h->def;
        lua_pushboolean(L, !strcmp(d, "true") || !strcmp(d, "1") || !strcmp(d, "yes"));
        return;
    }
    if ((h->type == FM_HP_INT || h->type == FM_HP_FLOAT) && lua_stringtonumber(L, h->def) != 0) {
        if (h->type == FM_HP_FLOAT && lua_isinteger(L, -1)) {
            lua_Number v = (lua_Number)lua_tointeger(L, -1);
            lua_pop(L, 1);
            lua_pushnumber(L, v);
        }
        return;
    }
    lua_pushstring(L, h->def);
}

static void push_hparams(lua_State *L, const fm_plugin_desc *d)
{
    lua_createtable(L, 0, d->n_hparams);
    for (int i = 0; i < d->n_hparams; i++) {
        const fm_hparam_decl *h = &d->hparams[i];
        lua_createtable(L, 0, 5);
        fm_lua_setstr(L, "name", h->name);
        fm_lua_setstr(L, "type", fm_hparam_type_name(h->type));
        push_typed_default(L, h);
        lua_setfield(L, -2, "default");
        fm_lua_setstr(L, "help", h->help);
        fm_lua_setint(L, "index", i + 1);
        lua_setfield(L, -2, h->name);
    }
}

static void push_exports(lua_State *L, const fm_plugin_desc *d)
{
    lua_createtable(L, 0, d->n_exports);
    for (int i = 0; i < d->n_exports; i++) {
        const fm_export_decl *x = &d->exports[i];
        lua_createtable(L, 0, 3);
        fm_lua_setstr(L, "name", x->name);
        fm_lua_setstr(L, "signature", x->signature);
        fm_lua_setstr(L, "help", x->help ? x->help : "");
        lua_setfield(L, -2, x->name);
    }
}

static int plugin_index(lua_State *L)
{
    fm_lua_plugin *u = luaL_checkudata(L, 1, FM_LUA_PLUGIN);
    if (fm_lua_method(L)) return 1;
    const char *k = lua_tostring(L, 2);
    if (!k || !u->plugin) return 0;
    const fm_plugin_desc *d = fm_plugin_descriptor_of(u->plugin);
    if (!strcmp(k, "name"))
        lua_pushstring(L, d->name);
    else if (!strcmp(k, "description"))
        lua_pushstring(L, d->description);
    else if (!strcmp(k, "path"))
        lua_pushstring(L, fm_plugin_path(u->plugin));
    else if (!strcmp(k, "hparams"))
        push_hparams(L, d);
    else if (!strcmp(k, "exports"))
        push_exports(L, d);
    else
        return 0;
    return 1;
}

static int plugin_call(lua_State *L)
{
    fm_lua_plugin *u = fm_lua_check_plugin(L, 1);
    const char *name = luaL_checkstring(L, 2);
    return fm_lua_call_export(L, u->plugin, name, NULL, 3);
}

/* ---- hyper-parameters from a Lua table ------------------------------------------ */

/* Pushes the command-line text of a hyper-parameter value. */
static void push_hparam_text(lua_State *L, const char *what, const char *key, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            lua_pushfstring(L, "%I", (lua_Integer)lua_tointeger(L, idx));
        } else {
            /* 64.0 means 64: an int parameter would refuse "64.0". */
            double v = lua_tonumber(L, idx);
            char buf[64];
            if (v == floor(v) && fabs(v) < 9007199254740992.0) {
                snprintf(buf, sizeof buf, "%.0f", v);
            } else {
                /* The shortest text that reads back as v: 0.3, not 0.29999999999999999. */
                for (int digits = 6; digits <= 17; digits++) {
                    snprintf(buf, sizeof buf, "%.*g", digits, v);
                    if (strtod(buf, NULL) == v) break;
                }
            }
            lua_pushstring(L, buf);
        }
        break;
    case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TSTRING: lua_pushvalue(L, idx); break;
    default:
        luaL_error(L, "%s: hyper-parameter '%s' must be a number, boolean or string, got %s", what,
                   key, luaL_typename(L, idx));
    }
}

fm_hparams *fm_lua_hparams(lua_State *L, int idx, const fm_plugin *p, const char *what)
{
    idx = lua_absindex(L, idx);
    int n = 0;
    if (!lua_isnoneornil(L, idx)) {
        if (!lua_istable(L, idx))
            luaL_error(L, "%s: 'set' must be a table of hyper-parameters such as {width = 64}, "
                       "got %s", what, luaL_typename(L, idx));
        for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) n++;
    }
    /* The strings live on the Lua stack (in a table) and the pointer array in
     * a userdata, so a raised error leaks nothing. */
    const char **assign = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n ? n : 1), 0);
    lua_createtable(L, n, 0);
    int k = 0;
    if (n) {
        for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "%s: hyper-parameter names must be strings (got a %s key in 'set')",
                           what, luaL_typename(L, -2));
            const char *key = lua_tostring(L, -2);
            push_hparam_text(L, what, key, -1);
            lua_pushfstring(L, "%s=%s", key, lua_tostring(L, -1));
            lua_remove(L, -2);
            assign[k] = lua_tostring(L, -1);
            lua_rawseti(L, -4, ++k);
        }
    }
    fm_hparams *hp = fm_hparams_new(p, assign, k);
    if (!hp) fm_lua_core_error(L, what);
    lua_pop(L, 2);
    return hp;
}

/* ---- models ------------------------------------------------------------------- */

static fm_lua_model *check_model(lua_State *L, int idx)
{
    fm_lua_model *u = luaL_checkudata(L, idx, FM_LUA_MODEL);
    if (!u->model) luaL_error(L, "the model is closed");
    return u;
}

/* p:model([set [, seed]]): a model with initialised weights, for calling
 * exports that take one (`m` in a signature). */
static int plugin_model(lua_State *L)
{
    fm_lua_plugin *p = fm_lua_check_plugin(L, 1);
    lua_settop(L, 3);  /* absent arguments read as nil, not as what is pushed below */
    lua_Integer seed = luaL_optinteger(L, 3, 42);
    luaL_argcheck(L, seed >= 0, 3, "seed must be >= 0");
    fm_lua_model *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->model = NULL;
    u->hparams[0] = '\0';
    luaL_setmetatable(L, FM_LUA_MODEL);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);  /* the model keeps its plugin userdata alive */

    fm_hparams *hp = fm_lua_hparams(L, 2, p->plugin, "model");
    u->model = fm_plugin_create_model(p->plugin, hp, (uint64_t)seed);
    if (!u->model) {
        fm_hparams_free(hp);
        return fm_lua_core_error(L, "model");
    }
    fm_hparams_to_string(hp, u->hparams, sizeof u->hparams);
    fm_hparams_free(hp);
    return 1;
}

static int model_gc(lua_State *L)
{
    fm_lua_model *u = luaL_checkudata(L, 1, FM_LUA_MODEL);
    fm_model_free(u->model);
    u->model = NULL;
    return 0;
}

static int model_tostring(lua_State *L)
{
    fm_lua_model *u = luaL_checkudata(L, 1, FM_LUA_MODEL);
    if (!u->model)
        lua_pushliteral(L, "fm.model (closed)");
    else
        lua_pushfstring(L, "fm.model %s (%s)",
                        fm_plugin_descriptor_of(fm_model_owner(u->model))->name, u->hparams);
    return 1;
}

static int model_index(lua_State *L)
{
    fm_lua_model *u = luaL_checkudata(L, 1, FM_LUA_MODEL);
    if (fm_lua_method(L)) return 1;
    const char *k = lua_tostring(L, 2);
    if (!k || !u->model) return 0;
    if (!strcmp(k, "plugin")) {
        lua_getiuservalue(L, 1, 1);
    } else if (!strcmp(k, "name")) {
        lua_pushstring(L, fm_plugin_descriptor_of(fm_model_owner(u->model))->name);
    } else if (!strcmp(k, "params")) {
        lua_pushinteger(L, (lua_Integer)fm_model_num_params(u->model));
    } else if (!strcmp(k, "hparams")) {
        lua_pushstring(L, u->hparams);
    } else {
        return 0;
    }
    return 1;
}

static int model_call(lua_State *L)
{
    fm_lua_model *u = check_model(L, 1);
    const char *name = luaL_checkstring(L, 2);
    /* The model holds its own reference to the plugin that made it, so this
     * works even after the plugin userdata was closed. */
    return fm_lua_call_export(L, fm_model_owner(u->model), name, u->model, 3);
}

/* ---- calls through libffi --------------------------------------------------------- */

static const char *letter_type(char c)
{
    switch (c) {
    case 'i':
    case 'l': return "integer";
    case 'f':
    case 'd': return "number";
    case 's': return "string";
    case 'm': return "model";
    }
    return "?";
}

/* The name a type error prints: the metatable's __name for fm objects. */
static const char *value_type(lua_State *L, int idx)
{
    int t = luaL_getmetafield(L, idx, "__name");
    if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        lua_pop(L, 1);  /* the string stays alive in the metatable */
        return s;
    }
    if (t != LUA_TNIL) lua_pop(L, 1);
    return luaL_typename(L, idx);
}

static int arg_error(lua_State *L, int argno, const char *fn, const char *expected, int idx)
{
    return luaL_error(L, "bad argument #%d to '%s' (%s expected, got %s)", argno, fn, expected,
                      lua_type(L, idx) == LUA_TNONE ? "no value" : value_type(L, idx));
}

static fm_model *to_model(lua_State *L, int idx)
{
    fm_lua_model *u = luaL_testudata(L, idx, FM_LUA_MODEL);
    if (u) return u->model;
    return fm_lua_run_model(L, idx);
}

static void list_exports(lua_State *L, const fm_plugin_desc *d)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; i < d->n_exports; i++) {
        if (i) luaL_addstring(&b, ", ");
        luaL_addstring(&b, d->exports[i].name);
        luaL_addchar(&b, ' ');
        luaL_addstring(&b, d->exports[i].signature);
    }
    if (d->n_exports == 0) luaL_addstring(&b, "none");
    luaL_pushresult(&b);
}

int fm_lua_call_export(lua_State *L, const fm_plugin *p, const char *name, fm_model *self_model,
                       int first)
{
    const fm_plugin_desc *d = fm_plugin_descriptor_of(p);
    int index = fm_plugin_export_find(p, name);
    if (index < 0) {
        list_exports(L, d);
        return luaL_error(L, "plugin %s has no export '%s' (exports: %s)", d->name, name,
                          lua_tostring(L, -1));
    }
    const char *sig = d->exports[index].signature;
    const char ret = sig[0];
    const char *letters = sig + 2;  /* "R(" is checked by the loader */
    const int nargs = (int)(strchr(letters, ')') - letters);
    if (nargs > FM_LUA_MAX_ARGS)
        return luaL_error(L, "'%s': %d arguments (signature %s), at most %d are supported", name,
                          nargs, sig, FM_LUA_MAX_ARGS);
    int n_implicit = 0;
    if (self_model)
        for (int k = 0; k < nargs; k++) n_implicit += letters[k] == 'm';
    const int given = lua_gettop(L) - first + 1, wanted = nargs - n_implicit;
    if (given != wanted)
        return luaL_error(L, "'%s' takes %d argument%s (signature %s%s), got %d", name, wanted,
                          wanted == 1 ? "" : "s", sig,
                          n_implicit ? "; the model is passed for m" : "", given);

    fm_ffi_value args[FM_LUA_MAX_ARGS];
    memset(args, 0, sizeof args);
    fm_model *model = self_model;
    for (int k = 0, idx = first; k < nargs; k++) {
        const char c = letters[k];
        const int argno = k + 1;
        if (c == 'm' && self_model) continue;
        const int t = lua_type(L, idx);
        switch (c) {
        case 'i':
        case 'l': {
            if (t != LUA_TNUMBER) return arg_error(L, argno, name, letter_type(c), idx);
            int ok;
            lua_Integer v = lua_tointegerx(L, idx, &ok);
            if (!ok)
                return luaL_error(L, "bad argument #%d to '%s' (number has no integer "
                                  "representation)", argno, name);
            if (c == 'i' && (v < INT32_MIN || v > INT32_MAX))
                return luaL_error(L, "bad argument #%d to '%s' (%I does not fit in a 32-bit int)",
                                  argno, name, (lua_Integer)v);
            if (c == 'i')
                args[k].i = (int32_t)v;
            else
                args[k].l = (int64_t)v;
            break;
        }
        case 'f':
        case 'd':
            if (t != LUA_TNUMBER) return arg_error(L, argno, name, letter_type(c), idx);
            if (c == 'f')
                args[k].f = (float)lua_tonumber(L, idx);
            else
                args[k].d = (double)lua_tonumber(L, idx);
            break;
        case 's': {
            if (t != LUA_TSTRING) return arg_error(L, argno, name, letter_type(c), idx);
            size_t len;
            const char *s = lua_tolstring(L, idx, &len);
            if (strlen(s) != len)
                return luaL_error(L, "bad argument #%d to '%s' (string contains a zero byte)",
                                  argno, name);
            args[k].s = s;  /* stays on the stack, so alive, until the call returns */
            break;
        }
        case 'm': {
            fm_model *m = to_model(L, idx);
            if (!m) return arg_error(L, argno, name, "model", idx);
            if (model && model != m)
                return luaL_error(L, "bad argument #%d to '%s' (all model arguments must be the "
                                  "same model)", argno, name);
            model = m;
            break;
        }
        default:
            return luaL_error(L, "'%s': signature %s has an unknown letter '%c'", name, sig, c);
        }
        idx++;
    }

    fm_ffi_value r;
    if (fm_plugin_export_call(p, index, model, args, nargs, &r) != FM_OK)
        return fm_lua_core_error(L, name);
    switch (ret) {
    case 'i': lua_pushinteger(L, r.i); return 1;
    case 'l': lua_pushinteger(L, (lua_Integer)r.l); return 1;
    case 'f': lua_pushnumber(L, (lua_Number)r.f); return 1;
    case 'd': lua_pushnumber(L, (lua_Number)r.d); return 1;
    case 's':
        if (r.s)
            lua_pushstring(L, r.s);
        else
            lua_pushnil(L);
        return 1;
    default: return 0;  /* 'v' */
    }
}

/* ---- registration ---------------------------------------------------------------------- */

void fm_lua_open_plugin(lua_State *L)
{
    static const luaL_Reg plugin_meta[] = {
        {"__gc", plugin_gc}, {"__close", plugin_gc}, {"__tostring", plugin_tostring}, {NULL, NULL},
    };
    static const luaL_Reg plugin_methods[] = {
        {"call", plugin_call}, {"model", plugin_model}, {"close", plugin_gc}, {NULL, NULL},
    };
    static const luaL_Reg model_meta[] = {
        {"__gc", model_gc}, {"__close", model_gc}, {"__tostring", model_tostring}, {NULL, NULL},
    };
    static const luaL_Reg model_methods[] = {
        {"call", model_call}, {"close", model_gc}, {NULL, NULL},
    };
    fm_lua_class(L, FM_LUA_PLUGIN, plugin_meta, plugin_methods, plugin_index);
    fm_lua_class(L, FM_LUA_MODEL, model_meta, model_methods, model_index);
    lua_pushcfunction(L, l_plugin);
    lua_setfield(L, -2, "plugin");
}
