/* fmhost script: runs a Lua script with the fm module preloaded. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#ifdef FM_HAVE_LUA
#include "../lua/fm_lua.h"
#endif

static const char script_usage[] =
    "usage: fmhost script [--kernels NAME] FILE.lua [ARG...]\n"
    "\n"
    "Runs a Lua 5.4 script with the module fm available (local fm = require \"fm\").\n"
    "Arguments after the file reach the script in the table arg; KEY=VALUE\n"
    "arguments are also parsed into the table fm.args.  Example:\n"
    "  fmhost script scripts/compare_all.lua epochs=1 limit=2000 models=mlp,cnn\n"
    "\n"
    "  --kernels NAME   kernel set for the script's runs: portable, avx2 or avx512\n"
    "                   (default: $FMHOST_KERNELS, else the best this processor runs);\n"
    "                   fm.kernels() tells the script, fm.train{kernels = NAME} overrides\n"
    "                   it for one run\n"
    "\n"
    "Under Open MPI every rank runs the script; fm.dist.map spreads a list of runs\n"
    "over the ranks and gives every rank all the results, and rank 0 writes the\n"
    "shared files:\n"
    "  mpirun -np 4 --hostfile hosts fmhost script scripts/seeds.lua threads=2\n";

enum { S_KERNELS = 256, S_HELP };

static const struct option script_options[] = {
    {"kernels", required_argument, NULL, S_KERNELS},
    {"help", no_argument, NULL, S_HELP},
    {NULL, 0, NULL, 0},
};

int fm_cmd_script(int argc, char **argv)
{
    const char *cmd = "script";
    opterr = 0;
    optind = 1;
    /* '+': options end at the script file; what follows belongs to the script. */
    for (int c; (c = getopt_long(argc, argv, "+:h", script_options, NULL)) != -1;) {
        switch (c) {
        case S_KERNELS:
            if (!fm_cli_use_kernels(cmd, optarg)) return FM_EXIT_USAGE;
            break;
        case 'h':
        case S_HELP: fputs(script_usage, stdout); return FM_EXIT_OK;
        case ':': return fm_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return fm_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return fm_cli_usage_error(cmd, "missing the script file");
#ifdef FM_HAVE_LUA
    /* A signal stops the run in progress cleanly, then the script. */
    fm_cli_signals(true);
    return fm_lua_main(argv[optind], argc - optind - 1, argv + optind + 1);
#else
    fprintf(stderr, "fmhost script: this fmhost was built without Lua\n");
    return FM_EXIT_FAIL;
#endif
}
