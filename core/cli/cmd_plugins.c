/* fmhost plugins: what model plugins this fmhost can find. */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char plugins_usage[] =
    "usage: fmhost plugins [--dir DIR]...\n"
    "\n"
    "Lists the model plugins found beside fmhost (its plugins/ folder), in the\n"
    "installed plugin directory and in each --dir, with their hyper-parameters\n"
    "(set with 'fmhost train --set KEY=VALUE') and the extra functions they export\n"
    "to Lua (called with p:call(\"name\", ...)).\n";

static void print_plugin(const fm_plugin *p)
{
    const fm_plugin_desc *d = fm_plugin_descriptor_of(p);
    printf("%s — %s\n  file: %s\n  ABI %u.%u\n", d->name, d->description, fm_plugin_path(p),
           d->abi_version >> 16, d->abi_version & 0xffff);
    if (d->n_hparams) printf("  hyper-parameters:\n");
    for (int i = 0; i < d->n_hparams; i++)
        printf("    %-10s %-6s default %-6s %s\n", d->hparams[i].name,
               fm_hparam_type_name(d->hparams[i].type), d->hparams[i].def, d->hparams[i].help);
    if (d->n_exports) printf("  exports (Lua: p:call(name, ...)):\n");
    for (int i = 0; i < d->n_exports; i++)
        printf("    %-16s %-8s %s\n", d->exports[i].name, d->exports[i].signature,
               d->exports[i].help ? d->exports[i].help : "");
}

/* Lists every loadable *.so in dir whose name was not seen before. */
static int list_dir(const char *dir, char seen[][64], int *n_seen, int max_seen)
{
    DIR *dh = opendir(dir);
    if (!dh) return 0;
    struct dirent *e;
    char **names = NULL;
    int n = 0;
    while ((e = readdir(dh))) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".so")) continue;
        /* The core library sits beside fmhost in a build tree: not a plugin. */
        if (!strncmp(e->d_name, "libfmcore", 9)) continue;
        names = fm_xrealloc(names, (size_t)(n + 1) * sizeof *names);
        names[n++] = fm_xstrdup(e->d_name);
    }
    closedir(dh);
    int shown = 0;
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++)  /* sorted output, whatever readdir's order */
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        fm_plugin *p = fm_plugin_open(path);
        if (!p) {
            fprintf(stderr, "skipped: %s\n", fm_error_message());
            continue;
        }
        const char *name = fm_plugin_descriptor_of(p)->name;
        bool dup = false;
        for (int k = 0; k < *n_seen; k++) dup |= !strcmp(seen[k], name);
        if (!dup && *n_seen < max_seen) {
            snprintf(seen[(*n_seen)++], 64, "%s", name);
            if (shown++ || *n_seen > 1) putchar('\n');
            print_plugin(p);
        }
        fm_plugin_release(p);
    }
    free(names);
    return shown;
}

int fm_cmd_plugins(int argc, char **argv)
{
    const char *dirs[16];
    int n_dirs = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(plugins_usage, stdout);
            return FM_EXIT_OK;
        }
        if (!strcmp(argv[i], "--dir") && i + 1 < argc && n_dirs < 12) {
            dirs[n_dirs++] = argv[++i];
            continue;
        }
        return fm_cli_usage_error("plugins", "unknown argument '%s'", argv[i]);
    }
    char exe_dir[PATH_MAX], beside[PATH_MAX + 16], installed[PATH_MAX + 64];
    ssize_t len = readlink("/proc/self/exe", exe_dir, sizeof exe_dir - 1);
    if (len > 0) {
        exe_dir[len] = '\0';
        char *slash = strrchr(exe_dir, '/');
        if (slash) *slash = '\0';
        snprintf(beside, sizeof beside, "%s/plugins", exe_dir);
        snprintf(installed, sizeof installed, "%s/../%s", exe_dir, FM_PLUGIN_INSTALL_RELDIR);
        dirs[n_dirs++] = beside;
        dirs[n_dirs++] = exe_dir;
        dirs[n_dirs++] = installed;
    }
    dirs[n_dirs++] = FM_PLUGIN_INSTALL_DIR;
    char seen[64][64];
    int n_seen = 0, total = 0;
    for (int i = 0; i < n_dirs; i++) total += list_dir(dirs[i], seen, &n_seen, 64);
    if (total == 0) {
        fprintf(stderr, "fmhost plugins: no plugins found in");
        for (int i = 0; i < n_dirs; i++) fprintf(stderr, " %s", dirs[i]);
        fprintf(stderr, "\n");
        return FM_EXIT_FAIL;
    }
    return FM_EXIT_OK;
}
