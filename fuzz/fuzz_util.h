/* fuzz_util.h — what the fuzz targets share: files in memory for readers
 * that take a path.
 *
 * Each target defines LLVMFuzzerTestOneInput (and may define
 * LLVMFuzzerInitialize).  With FM_FUZZ it links against libFuzzer; in the
 * normal build the same source links against replay.c, which runs the seed
 * corpus and fuzz/regressions/<target>/ once each under ctest. */
#ifndef FM_FUZZ_UTIL_H
#define FM_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* A file in memory (memfd_create) that the readers open by its path,
 * "/proc/self/fd/N", as they would a file on disk: no disk traffic, nothing
 * left behind. */
typedef struct fuzz_file {
    int fd;
    char path[32];
} fuzz_file;

/* Creates the file once (aborts if the system cannot: a harness error). */
void fuzz_file_init(fuzz_file *f, const char *name);
/* Makes the file hold exactly data[0..size). */
void fuzz_file_put(fuzz_file *f, const void *data, size_t size);
/* Makes the file `size` zero bytes, then writes head[0..head_len) at 0. */
void fuzz_file_zeros(fuzz_file *f, size_t size, const void *head, size_t head_len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* FM_FUZZ_UTIL_H */
