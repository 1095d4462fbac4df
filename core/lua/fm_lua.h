/* fm_lua.h — the embedded Lua 5.4 interpreter and its `fm` module.
 *
 * This is the only header of fmhost that includes lua.h: the C core knows
 * nothing of Lua (torch7's TH / luaT split).  Lua works at the level of
 * plugins, runs, epochs and callbacks; every loop over images stays in C.
 *
 * The module (`local fm = require "fm"`, registered in package.preload) is
 * documented for script writers in docs/lua.md: every function, option,
 * callback, method and field, with examples.  The doc tests keep the two in
 * step (tests/doc/check_lua_names.sh compares the page with the live module
 * and these sources; tests/doc/run_doc.sh runs the page's examples).
 *
 * Errors from the core (a bad plugin, missing data, a bad option) are raised
 * as Lua errors carrying the core's message.  A Lua error inside a training
 * callback is caught in the callback (it never unwinds the C training loop),
 * stops training, and is raised again when fm.train returns.
 */
#ifndef FM_LUA_H
#define FM_LUA_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fm/fm_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* `fmhost script FILE [ARG...]`: runs `script` with argv[0..argc) as its
 * arguments (the words after the file name).  The script sees them as the
 * global table `arg` (arg[0] = script, arg[1..argc] = the words), as the
 * chunk's `...`, and, for words of the form KEY=VALUE, in fm.args (numbers
 * converted, "true"/"false" as booleans).  On an error prints the message
 * with file:line and a traceback to stderr.  Returns the process exit status:
 * 0 when the script ran to its end, 1 when it failed. */
int fm_lua_main(const char *script, int argc, char **argv);

/* A new interpreter with the standard libraries open and `fm` in
 * package.preload; NULL only when memory is exhausted.  Close with
 * fm_lua_free (lua_close). */
lua_State *fm_lua_new(void);
void fm_lua_free(lua_State *L);

/* Sets the global `arg` and the table fm.args as fm_lua_main does (call it
 * before the script requires fm). */
void fm_lua_set_args(lua_State *L, const char *script, int argc, char **argv);

/* Runs a file or a string (chunkname as in lua_load: "=name" or "@file.lua")
 * under lua_pcall with a traceback handler.  FM_OK, or FM_ERR_SCRIPT with
 * the error message, its file:line and the traceback in the error slot
 * (fm_error_message(); long tracebacks are cut to the slot's size). */
fm_status fm_lua_run_file(lua_State *L, const char *path);
fm_status fm_lua_run_string(lua_State *L, const char *code, const char *chunkname);

/* The module's opener, for embedders that register it themselves. */
int luaopen_fm(lua_State *L);

#ifdef __cplusplus
}
#endif
#endif /* FM_LUA_H */
