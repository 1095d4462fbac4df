/* fm_lua.h — the embedded Lua 5.4 interpreter and its `fm` module.
 *
 * This is the only header of fmhost that includes lua.h: the C core knows
 * nothing of Lua (torch7's TH / luaT split).  Lua works at the level of
 * plugins, runs, epochs and callbacks; every loop over images stays in C.
 *
 * The module (`local fm = require "fm"`, registered in package.preload):
 *
 * fm.version, fm.class_names (the 10 names), fm.args (the script's KEY=VALUE
 * arguments), fm.now() (seconds, monotonic), fm.mkdir(path) (mkdir -p).
 *
 * fm.kernels() -> name, supported.  The kernel set in use ("portable",
 *   "avx2" or "avx512": `fmhost script --kernels NAME`, else $FMHOST_KERNELS,
 *   else the best the processor runs) and an array of the sets this
 *   processor runs, slowest first (supported[#supported] is the best).
 *
 * fm.plugin(name_or_path) -> plugin.  A model name ("rescnn") or a path,
 *   found as `fmhost train --plugin` finds it.
 *   p.name, p.description, p.path
 *   p.hparams   {name = {name, type = "int"|"float"|"bool"|"string", default, help, index}}
 *   p.exports   {name = {name, signature, help}}
 *   p:call(name, ...)  calls an export through libffi.  Each argument is
 *     checked against its signature letter — i, l: an integer (i within 32
 *     bits); f, d: a number; s: a string; m: a model or a run made by this
 *     plugin — and a mismatch raises "bad argument #2 to 'flops' (integer
 *     expected, got string)".  Returns an integer (i, l), a number (f, d), a
 *     string or nil (s), or nothing (v).
 *   p:model([set [, seed]]) -> model: m.name, m.params, m.hparams, m.plugin,
 *     m:call(name, ...) (the model fills the signature's m), m:close()
 *   p:close()
 *
 * fm.dataset{dir, val_split = 0.1, seed = 42, limit = 0, augment = false}
 *   -> dataset: both splits loaded once (dir: as --data-dir; nil searches
 *   $FMHOST_DATA, then the system directory); the other fields are the
 *   defaults of fm.train on it.  d.dir, d.train_size, d.test_size,
 *   d.val_split, d.seed, d.limit, d.augment, d:close()
 *
 * fm.train{...} -> run.  Trains as `fmhost train` does and writes the same
 *   artifacts under `out` (unless artifacts = false), including the test
 *   report (unless report = false).  Keys: plugin (a plugin or a name;
 *   required), data (a dataset; else loaded from data_dir), set
 *   (hyper-parameters, {width = 64}), the options of `fmhost train` with
 *   underscores — epochs, batch_size, lr, seed, optimizer, momentum,
 *   weight_decay, nesterov, patience, val_split, scheduler, step_size, gamma,
 *   min_lr (cosine anneals toward it: the last epoch runs just above it, as
 *   CosineAnnealingLR with T_max = epochs - warmup), warmup, pct_start,
 *   div_factor, final_div_factor (scheduler = "onecycle": OneCycleLR per
 *   step, max_lr = lr, as --pct-start etc.), clip_grad_norm,
 *   augment, threads, limit, data_dir, out,
 *   quiet, resume (continue the run's saved state, as --resume), save_dtype
 *   ("f32" or "bf16", as --save-dtype: "bf16" also writes the best weights
 *   as <out>/artifacts/<model>_best.bf16.safetensors), precision ("fp32"
 *   or "bf16", as --precision: linear and convolution layers in bfloat16
 *   with float32 accumulation, as PyTorch's CPU autocast), kernels (a
 *   kernel set's name: the run trains, evaluates and reports with it, and
 *   the set in use before is restored when fm.train returns or raises; an
 *   unknown set, or one the processor cannot run, is an error naming it),
 *   label_smoothing (as --label-smoothing: the training loss only), ema
 *   (as --ema: the decay of the weights' moving average, which is
 *   validated, checkpointed and tested; 0 = off), tta (as --tta: the test
 *   set with flip test-time augmentation), random_erasing (as
 *   --random-erasing: torchvision's RandomErasing probability per image),
 *   mixup, cutmix (as --mixup, --cutmix: Beta alphas, 0 = off),
 *   track (false: not recorded in the run store), runs_db (the store's path,
 *   as --runs-db; default $FMHOST_RUNS_DB, else <out>/runs.db), sweep (a
 *   string grouping the runs of one script in the store) —
 *   and the callbacks:
 *     schedule = function(epoch, step, base_lr) return lr end
 *                (epoch from 1, step within the epoch from 0; before every step)
 *     on_step  = function(s) end  s: epoch, step, steps_per_epoch, global_step, loss, lr
 *     on_epoch = function(m) end  m: epoch, train_loss, train_acc, val_loss,
 *                                    val_acc, lr, seconds
 *   A callback that returns false stops training; the run keeps its best
 *   checkpoint.  An unknown key is an error naming it.  A signal (Ctrl-C)
 *   stops the run after its current step, saves its state and report, and
 *   raises "fm.train: ... interrupted ..." (between runs the script stops
 *   where it stands); `fmhost script` then exits 130 (SIGTERM: 143).  A
 *   run whose loss or gradient became non-finite returns with run.status
 *   "diverged" and run.message saying where and what to change.
 *   run.status is "completed", "stopped" (a callback), "interrupted" or
 *   "diverged".
 *   run.name, run.plugin, run.data, run.history (array of m), run.epochs
 *   (epochs run), run.best_epoch, run.best (m of the best epoch), run.params,
 *   run.hparams, run.seconds, run.status, run.message, run.checkpoint (nil
 *   while none was written), run.results_dir (nil without artifacts),
 *   run.kernels (the run's kernel set, recorded in its checkpoint and
 *   summary.json), run.precision ("fp32" or "bf16", recorded likewise), run.id,
 *   run.runs_db, run.run_dir (the run's id and store, and the folder that
 *   keeps its files; nil when not recorded);
 *   run:evaluate("test"|"val"|"train") -> {split, loss,
 *   acc, n, confusion = [true][predicted] counts} of the best weights;
 *   run:save(path); run:report(); run:call(name, ...); run:close().
 *   evaluate and report run on the run's kernel set and precision,
 *   whatever is in use.
 *
 * fm.runs.query{db, model, status, kind, sweep, since, until, where, sort, asc,
 *   limit} -> {run, ...}: the runs recorded in the store `db` (default
 *   $FMHOST_RUNS_DB, else ./runs.db), filtered and sorted as `fmhost runs
 *   list` does them (where = {lr = 0.001, width = 64}: hyper-parameters or
 *   options with these values; sort = "test_acc", highest first unless asc).
 *   Each run is a table: id, kind, model, status, message, sweep, started,
 *   ended (UTC text), command, host, pid, plugin_path, plugin_sha256,
 *   hparams (text), set (the hyper-parameters, {width = "32"}), options
 *   ({lr = "0.00100000005", ...}: the recorded text), kernels, precision,
 *   fmhost_version, seed, threads, params, epochs, best_epoch, val_loss,
 *   val_acc, test_loss, test_acc, seconds, peak_rss_kb (numbers nil when not
 *   recorded), history (as run.history), per_class ({class, accuracy,
 *   support} per class), artifacts ({name, path, sha256, bytes}), out_dir,
 *   data_dir, run_dir.  A missing store or a bad option is an error naming it.
 * fm.runs.html{dir, ...the options of query} -> "<dir>/index.html": the
 *   dashboard of `fmhost runs html` for the runs the options select.
 *
 * fm.table(rows, [columns]) -> Markdown text.  rows: an array of tables.
 *   columns: an array of "key", {"key", "Title", format} or {key =, title =,
 *   format =}, where format is a string.format pattern applied to numbers or
 *   a function(value, row) returning the text; without columns, the first
 *   row's keys in sorted order.  Columns of numbers are right-aligned.
 * fm.write_csv(path, rows, [columns])  the same cells; the header is the keys
 * fm.write_markdown(path, text or {lines...})
 * fm.plot{file, series = {{name =, y = {...}}, ...}, title, xlabel = "epoch",
 *   ylabel, x (shared x values; default 1, 2, ...), mark (an x to mark with a
 *   dashed line), mark_label}: curves of several runs on one PNG (PLplot).
 *   Shorter series end early.
 * Every file is written to a temporary name and renamed, so an error or an
 * interruption never leaves half a file; missing directories are created.
 *
 * fm.dist: the processes of `mpirun -np N fmhost script FILE` (Open MPI; one
 *   process otherwise, rank 0 of 1).  fm.dist.backend ("single" or "mpi"),
 *   fm.dist.rank() (from 0), fm.dist.size().  Every rank runs the whole
 *   script; these collectives must be called by all of them, in the same order:
 *   fm.dist.map(items, fn) -> results.  Item i of the array goes to rank
 *     (i - 1) % size, which calls fn(items[i], i); every rank returns the
 *     array of all results in item order.  An error in any fn is raised on
 *     every rank once all have finished ("fm.dist.map: item 5 on rank 1:
 *     ..."), so the job fails as a whole.
 *   fm.dist.gather(v) -> on rank 0 the array of every rank's v in rank
 *     order, elsewhere nil.  fm.dist.broadcast(v) -> rank 0's v everywhere.
 *   fm.dist.barrier().
 *   Values that cross between ranks are plain: nil, booleans, numbers
 *   (integers stay integers), strings and tables of them; a function or a
 *   userdata (a run, a plugin) is an error naming it — return run.best,
 *   not the run.  Files the whole job shares are written by rank 0 alone
 *   (`if fm.dist.rank() == 0 then ... end`).
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
