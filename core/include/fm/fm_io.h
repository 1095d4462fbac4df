/* fm_io.h — files the program writes and reads: atomic writes, directories,
 * safetensors checkpoints, small CSV helpers.
 *
 * Every file fmhost writes goes to a temporary name in the same directory
 * ("<path>.tmp.<pid>"), is flushed and fsync'ed, then renamed over `path`: a
 * crash or a failed write never leaves a truncated file, and an older file at
 * `path` stays intact until the new one is complete.
 *
 * Errors are FM_ERR_IO (the system refused: the message names the path and
 * strerror) or FM_ERR_FORMAT (a file was read but is malformed: the message
 * names the file, the tensor or key, and what is wrong).
 */
#ifndef FM_IO_H
#define FM_IO_H

#include <stdio.h>

#include "fm_base.h"
#include "fm_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- atomic writes -------------------------------------------------------- */

/* Writes len bytes to path atomically (temporary file, fsync, rename). */
FM_API fm_status fm_file_write_atomic(const char *path, const void *data, size_t len);

/* For writers that produce output piece by piece: creates a new temporary
 * file "<path>.tmp.<pid>.<random>" beside path (exclusively: never an
 * existing file, never through a symbolic link), opens it for writing and
 * stores its name in tmp_path_out (tmp_len bytes; PATH_MAX + 64 is always
 * enough).  Returns NULL with the error set when it cannot be created.  End with exactly one of fm_atomic_commit (flushes,
 * fsyncs, closes, renames; on any failure removes the temporary file and
 * leaves `path` as it was) or fm_atomic_abort (closes and removes it). */
FM_API FILE *fm_atomic_open(const char *path, char *tmp_path_out, size_t tmp_len);
FM_API fm_status fm_atomic_commit(FILE *f, const char *tmp_path, const char *path);
FM_API void fm_atomic_abort(FILE *f, const char *tmp_path);

/* Removes every temporary file of this process not yet committed or
 * aborted.  Async-signal-safe: for a signal handler that exits at once. */
FM_API void fm_atomic_cleanup(void);
/* Commits a temporary file that something else wrote and closed (PLplot
 * writes its PNGs itself): fsyncs tmp_path and renames it to path; on
 * failure removes tmp_path. */
FM_API fm_status fm_file_commit(const char *tmp_path, const char *path);

/* mkdir -p: creates path and its missing parents (mode 0777 & ~umask).  An
 * existing directory is fine; an existing non-directory is FM_ERR_IO. */
FM_API fm_status fm_mkdirs(const char *path);

/* Reads a whole file into a malloc'ed buffer (NUL-terminated, the NUL not
 * counted in *len_out).  Only a regular file is read: a FIFO or a device is
 * FM_ERR_IO, refused without blocking.  Files larger than max_bytes are
 * refused with FM_ERR_FORMAT.  The caller frees *data_out. */
FM_API fm_status fm_file_read_all(const char *path, size_t max_bytes, char **data_out,
                                  size_t *len_out);

/* ---- CSV -------------------------------------------------------------------- */

/* Writes one CSV field, quoted (with "" for ") only when it contains a comma,
 * quote, CR or LF. */
FM_API void fm_csv_write_field(FILE *f, const char *s);

/* ---- metadata: a small string map ----------------------------------------- */

typedef struct fm_meta fm_meta;

/* The value for key, or NULL.  Valid while meta lives. */
FM_API const char *fm_meta_get(const fm_meta *meta, const char *key);
FM_API int fm_meta_count(const fm_meta *meta);
/* Keys and values in file order, 0 <= i < fm_meta_count(meta). */
FM_API const char *fm_meta_key(const fm_meta *meta, int i);
FM_API const char *fm_meta_value(const fm_meta *meta, int i);
/* NULL is fine. */
FM_API void fm_meta_free(fm_meta *meta);

/* ---- safetensors ------------------------------------------------------------ */

/* Writes every parameter and buffer of m, in registration order, as a
 * safetensors file that safetensors.torch.load_file reads: an 8-byte
 * little-endian header length, a compact JSON header space-padded to a
 * multiple of 8, then the raw little-endian data packed without gaps.  F32
 * tensors are "F32", FM_I64 ones "I64"; an I64 tensor named
 * "...num_batches_tracked" holding one value is written with shape [] (a 0-d
 * tensor, as PyTorch has it).  `meta` holds n_meta key/value pairs
 * (meta[2*i] = key, meta[2*i+1] = value) stored in "__metadata__" after
 * "format": "pt" (a caller's "format" key is ignored).  Written atomically. */
FM_API fm_status fm_safetensors_save(const char *path, const fm_model *m, const char *const *meta,
                                     int n_meta);

/* The same, with the F32 tensors written as `as`: FM_FLOAT_F32 is
 * fm_safetensors_save; FM_FLOAT_BF16 writes them as "BF16", each value
 * rounded by fm_bf16_from_f32 (what PyTorch's tensor.to(torch.bfloat16)
 * gives), for a file half the size that safetensors.torch.load_file reads
 * as bfloat16 tensors; FM_FLOAT_F16 likewise as "F16" by fm_f16_from_f32
 * (tensor.half()).  I64 tensors stay "I64".  `meta` is written as
 * given: no key is added for the dtype. */
FM_API fm_status fm_safetensors_save_as(const char *path, const fm_model *m,
                                        const char *const *meta, int n_meta, fm_float_dtype as);

/* Loads a safetensors file into m.  The file is treated as hostile: only a
 * regular file is read (a FIFO or device is refused without blocking),
 * header length within the file and at most 16 MB, its object count bounded
 * by its length before jansson parses it, every tensor with a known dtype
 * (F32, BF16, F16 or I64), a shape of non-negative integers and data
 * offsets matching its size in that dtype, the tensors' byte ranges tiling
 * the data section exactly (no gap, overlap or trailing bytes).  Then the
 * file must hold exactly the model's tensors: each with the model's shape
 * (a 0-d tensor matches a model shape [1]) and dtype, where an F32 tensor
 * may be stored as BF16 or F16 (PyTorch's model.bfloat16() or model.half()
 * state dicts) and is widened exactly (fm_f32_from_bf16, fm_f32_from_f16),
 * and an I64 one only as I64; a missing or an extra tensor is an error
 * naming it.  Nothing is copied into m until all of this
 * holds, so a refused file leaves m untouched.  When meta_out is not NULL it
 * receives "__metadata__" (empty when absent); free with fm_meta_free. */
FM_API fm_status fm_safetensors_load(const char *path, fm_model *m, fm_meta **meta_out);

/* Reads only the header of a safetensors file (validated as above, without a
 * model) and returns its "__metadata__". */
FM_API fm_status fm_safetensors_read_meta(const char *path, fm_meta **out);

#ifdef __cplusplus
}
#endif
#endif /* FM_IO_H */
