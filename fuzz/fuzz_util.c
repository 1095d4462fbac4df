/* Files in memory for the fuzz targets (see fuzz_util.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* memfd_create */
#endif
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static void die(const char *what)
{
    perror(what);
    abort();
}

void fuzz_file_init(fuzz_file *f, const char *name)
{
    f->fd = memfd_create(name, MFD_CLOEXEC);
    if (f->fd < 0) die("memfd_create");
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

static void put_at(int fd, const void *data, size_t size, off_t at)
{
    const char *p = data;
    while (size > 0) {
        ssize_t w = pwrite(fd, p, size, at);
        if (w <= 0) die("pwrite");
        p += w, at += w, size -= (size_t)w;
    }
}

void fuzz_file_put(fuzz_file *f, const void *data, size_t size)
{
    if (ftruncate(f->fd, 0) != 0) die("ftruncate");
    put_at(f->fd, data, size, 0);
}

void fuzz_file_zeros(fuzz_file *f, size_t size, const void *head, size_t head_len)
{
    if (ftruncate(f->fd, 0) != 0 || ftruncate(f->fd, (off_t)size) != 0) die("ftruncate");
    put_at(f->fd, head, head_len, 0);
}
