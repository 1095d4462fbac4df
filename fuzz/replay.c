/* The fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput once on
 * every file of the directories given (the seed corpus, the regressions),
 * so that every input that ever crashed a target stays a test case in the
 * default ctest run.  A crash fails the test; so does finding no input at
 * all.  A directory that does not exist counts as empty (git keeps no empty
 * fuzz/regressions/<target>/). */
#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            unsigned char *p = realloc(buf, cap *= 2);
            if (!p) free(buf);
            buf = p;
        }
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Runs every regular file of dir in name order; returns how many, or -1. */
static int replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        fprintf(stderr, "replay: cannot open %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "README.md")) continue;
        char **p = realloc(names, (n + 1) * sizeof *names);
        if (!p) abort();
        names = p;
        names[n] = strdup(e->d_name);
        if (!names[n++]) abort();
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            size_t len;
            unsigned char *data = read_file(path, &len);
            if (!data) {
                fprintf(stderr, "replay: cannot read %s\n", path);
                return -1;
            }
            /* Named first, so that a crash shows which input did it. */
            fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
            LLVMFuzzerTestOneInput(data, len);
            free(data);
            ran++;
        }
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR...  (runs the fuzz target on every file of each DIR)\n",
                argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    int total = 0;
    for (int i = 1; i < argc; i++) {
        int ran = replay_dir(argv[i]);
        if (ran < 0) return 1;
        printf("%s: %d input%s\n", argv[i], ran, ran == 1 ? "" : "s");
        total += ran;
    }
    if (total == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    return 0;
}
