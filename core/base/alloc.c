/* Allocation that cannot fail quietly: exhaustion on a size the program
 * controls is a bug or a dead machine, so it aborts with the size asked. */
#include "fm/fm_base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Noreturn void out_of_memory(size_t bytes)
{
    fprintf(stderr, "fmhost: out of memory allocating %zu bytes\n", bytes);
    abort();
}

void *fm_xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) out_of_memory(bytes);
    return p;
}

void *fm_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) out_of_memory(count * size);
    return p;
}

void *fm_xrealloc(void *p, size_t bytes)
{
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) out_of_memory(bytes);
    return q;
}

void *fm_xaligned(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) out_of_memory(bytes);
    return p;
}

char *fm_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(fm_xmalloc(n), s, n);
}
