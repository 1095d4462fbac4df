/* fm_lua_internal.h — what the files of the fm module share.  Not installed. */
#ifndef FM_LUA_INTERNAL_H
#define FM_LUA_INTERNAL_H

#include "fm_lua.h"

#include "fm/fm_train.h"

/* Metatable names (luaL_newmetatable); also what type errors print. */
#define FM_LUA_PLUGIN "fm.plugin"
#define FM_LUA_MODEL "fm.model"
#define FM_LUA_DATASET "fm.dataset"
#define FM_LUA_RUN "fm.run"

/* Registry key of the KEY=VALUE table that fm.args exposes. */
#define FM_LUA_ARGS_KEY "fm.args"

typedef struct fm_lua_plugin {
    fm_plugin *plugin;  /* NULL once closed */
} fm_lua_plugin;

/* A model made by p:model{...}; uservalue 1 is its plugin userdata. */
typedef struct fm_lua_model {
    fm_model *model;  /* NULL once closed */
    char hparams[512];
} fm_lua_model;

/* ---- classes: userdata with a metatable and methods --------------------------- */

/* Registers metatable `tname` with the metamethods `meta`, and an __index
 * closure `index` whose upvalue 1 is a table of `methods`.  Inside `index`,
 * fm_lua_method() looks the key up among the methods first. */
void fm_lua_class(lua_State *L, const char *tname, const luaL_Reg *meta, const luaL_Reg *methods,
                  lua_CFunction index);
/* In an __index closure made by fm_lua_class: pushes the method named by
 * argument 2 and returns 1, or returns 0 (nothing pushed). */
int fm_lua_method(lua_State *L);

/* Raises "<what>: <the core's error message>". */
int fm_lua_core_error(lua_State *L, const char *what);

/* Raises "<what>: unknown option 'x'" (with the closest known name) when
 * the table at idx has a key that is not in the NULL-terminated `known`. */
void fm_lua_check_keys(lua_State *L, int idx, const char *const *known, const char *what);

/* Creates the directory that will hold `path` (mkdir -p); raises on failure. */
void fm_lua_make_parent(lua_State *L, const char *path, const char *what);

/* Sets t[key] = v on the table at the top of the stack. */
void fm_lua_setnum(lua_State *L, const char *key, double v);
void fm_lua_setint(lua_State *L, const char *key, lua_Integer v);
void fm_lua_setstr(lua_State *L, const char *key, const char *v);

/* ---- plugins, models, libffi (lua_plugin.c) ----------------------------------- */

void fm_lua_open_plugin(lua_State *L);  /* adds fm.plugin to the table at the top */
/* Pushes a new plugin userdata for a name or path (resolved as the CLI
 * does); raises a Lua error with the loader's message. */
void fm_lua_push_plugin(lua_State *L, const char *name_or_path);
fm_lua_plugin *fm_lua_check_plugin(lua_State *L, int idx);
/* Hyper-parameters for p from the table at idx ({width = 64}), nil meaning
 * the defaults.  Raises on a bad table, and with the core's message on an
 * unknown name or a value that does not parse as the declared type.  The
 * caller owns the result (fm_hparams_free) and must keep it somewhere freed
 * by a __gc before anything else can raise. */
fm_hparams *fm_lua_hparams(lua_State *L, int idx, const fm_plugin *p, const char *what);
/* Calls export `name` of p with the Lua arguments from stack index `first`
 * on.  With self_model set, every `m` of the signature is that model and
 * takes no Lua argument.  Returns the number of results pushed. */
int fm_lua_call_export(lua_State *L, const fm_plugin *p, const char *name, fm_model *self_model,
                       int first);

/* ---- datasets, training, runs (lua_train.c) ---------------------------------- */

void fm_lua_open_train(lua_State *L);   /* fm.dataset, fm.train, fm.kernels */
/* Pushes one epoch's metrics as {epoch, train_loss, ..., seconds}. */
void fm_lua_push_metrics(lua_State *L, const fm_epoch_metrics *m);
/* The model of a run userdata at idx, or NULL if idx holds no open run. */
fm_model *fm_lua_run_model(lua_State *L, int idx);

/* ---- the run store (lua_runs.c) ---------------------------------------------- */

void fm_lua_open_runs(lua_State *L);    /* fm.runs.query */

/* ---- tables, files, plots (lua_results.c) ------------------------------------ */

void fm_lua_open_results(lua_State *L); /* fm.table, fm.write_csv, fm.write_markdown, fm.plot, fm.mkdir */
void fm_lua_open_dist(lua_State *L);    /* fm.dist: rank, size, map, gather, broadcast, barrier */

#endif /* FM_LUA_INTERNAL_H */
