/* fmhost script: runs a Lua script with the fm module preloaded. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#ifdef FM_HAVE_LUA
#include "../lua/fm_lua.h"
#endif

static const char script_usage[] =
    "usage: fmhost script FILE.lua [ARG...]\n"
    "\n"
    "Runs a Lua 5.4 script with the module fm available (local fm = require \"fm\").\n"
    "Arguments after the file reach the script in the table arg; KEY=VALUE\n"
    "arguments are also parsed into the table fm.args.  Example:\n"
    "  fmhost script scripts/compare_all.lua epochs=1 limit=2000 models=mlp,cnn\n";

int fm_cmd_script(int argc, char **argv)
{
    if (argc < 2) return fm_cli_usage_error("script", "missing the script file");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(script_usage, stdout);
        return FM_EXIT_OK;
    }
#ifdef FM_HAVE_LUA
    return fm_lua_main(argv[1], argc - 2, argv + 2);
#else
    fprintf(stderr, "fmhost script: this fmhost was built without Lua\n");
    return FM_EXIT_FAIL;
#endif
}
