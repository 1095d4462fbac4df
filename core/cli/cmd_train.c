/* fmhost train: the protocol of SPEC §3 from the command line. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fm/fm_dist.h"

static const char train_usage[] =
    "usage: fmhost train (--model NAME | --plugin PATH) [options]\n"
    "\n"
    "Trains a model with early stopping on validation loss, keeps the best checkpoint,\n"
    "then evaluates it on the test set and writes the report.\n"
    "\n"
    "model:\n"
    "  --model NAME         a plugin by name: mlp, cnn, rescnn, or any installed one\n"
    "  --plugin PATH        a plugin file (tried as given, then beside fmhost, then installed)\n"
    "  --set KEY=VALUE      a hyper-parameter of the plugin (repeatable; see fmhost plugins)\n"
    "protocol:\n"
    "  --epochs N           at most N epochs (20)\n"
    "  --batch-size N       images per step (64)\n"
    "  --patience N         stop after N epochs without a lower validation loss; 0 = never (5)\n"
    "  --val-split F        fraction of the 60,000 training images held out for validation (0.1)\n"
    "  --seed N             seeds initialisation, split, shuffling, dropout, augmentation (42)\n"
    "  --augment            random 28x28 crop of the 2-pixel zero-padded image + horizontal flip\n"
    "  --limit N            train on the first N images of the training split (0 = all)\n"
    "optimizer:\n"
    "  --optimizer NAME     adam, adamw or sgd (adam)\n"
    "  --lr F               learning rate (1e-3; sgd: 1e-2)\n"
    "  --momentum F         sgd momentum (0)\n"
    "  --nesterov           sgd with Nesterov momentum\n"
    "  --weight-decay F     L2 penalty (adam, sgd) or decoupled decay (adamw) (0; adamw: 0.01)\n"
    "schedule (per epoch; onecycle per step):\n"
    "  --scheduler NAME     constant, step, cosine or onecycle (constant)\n"
    "  --step-size N        step: epochs between decays (10)\n"
    "  --gamma F            step: decay factor (0.1)\n"
    "  --min-lr F           cosine: rate annealed toward; the last epoch runs just\n"
    "                       above it, as CosineAnnealingLR (T_max = epochs - warmup) (0)\n"
    "  --warmup N           linear warm-up over the first N epochs (0)\n"
    "  --pct-start F        onecycle: OneCycleLR per step with max_lr = --lr, cosine from\n"
    "                       lr/div up to lr over the first F of all steps, then down (0.3)\n"
    "  --div-factor F       onecycle: the first step runs at lr/F (25)\n"
    "  --final-div-factor F onecycle: the last step runs at lr/(div-factor*F) (1e4);\n"
    "                       momentum and betas are not cycled (cycle_momentum=False)\n"
    "  --clip-grad-norm F   clip the gradients' total L2 norm to F each step (off)\n"
    "recipe:\n"
    "  --label-smoothing F  train on cross-entropy against (1-F) one-hot + F/10, as\n"
    "                       nn.CrossEntropyLoss(label_smoothing=F); F in [0, 1) (0).  The\n"
    "                       training loss is the smoothed one; validation and test loss\n"
    "                       stay the plain cross-entropy, so runs compare and early\n"
    "                       stopping keeps its meaning\n"
    "  --ema DECAY          keep an exponential moving average of the weights and batch-norm\n"
    "                       buffers, updated after every step as ema = DECAY*ema +\n"
    "                       (1-DECAY)*w from the initial weights (timm's ModelEmaV2);\n"
    "                       validation, the best checkpoint and the test use the average;\n"
    "                       DECAY in (0, 1), e.g. 0.999 (off)\n"
    "  --random-erasing P   with probability P per training image, after --augment, erase a\n"
    "                       rectangle to 0 (normalised) as torchvision's RandomErasing(p=P,\n"
    "                       scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0); P in [0, 1] (0)\n"
    "  --mixup A            mix each batch with itself reversed, x = lam*x + (1-lam)*x', lam ~\n"
    "                       Beta(A, A), training on the mixed targets, as timm's Mixup (off)\n"
    "  --cutmix A           paste a box of the reversed batch, lam ~ Beta(A, A) corrected to\n"
    "                       the box's area, as timm's CutMix; with --mixup, either one per\n"
    "                       batch with probability 0.5 (off)\n"
    "  --tta                test the best weights with test-time augmentation by horizontal\n"
    "                       flip: the mean of the logits on each image and its mirror (as\n"
    "                       fmhost eval --tta); validation stays plain\n"
    "run:\n"
    "  --resume             continue the run saved in DIR/artifacts/<model>_last.safetensors\n"
    "                       (written at every epoch end and on Ctrl-C), with the same options:\n"
    "                       it ends exactly as the run would have, never stopped\n"
    "  --threads N          worker threads, 0 = one per core (0); results do not depend on it\n"
    "  --kernels NAME       kernel set: portable, avx2 or avx512 (default: $FMHOST_KERNELS, else\n"
    "                       the best this processor runs); results are reproducible per set\n"
    "  --data-dir DIR       FashionMNIST IDX files (else $FMHOST_DATA, else " FM_DATA_SYSTEM_DIR ")\n"
    "  --out DIR            write artifacts/ and results/ under DIR (.)\n"
    "  --precision P        fp32 or bf16: linear and convolution layers in bfloat16 with\n"
    "                       float32 accumulation, as PyTorch's CPU autocast; master\n"
    "                       weights, optimizer and checkpoints stay float32 (fp32)\n"
    "  --save-dtype NAME    f32, bf16 or f16 (f32); bf16 (f16) also writes the best weights,\n"
    "                       rounded, to DIR/artifacts/<model>_best.bf16.safetensors at the end\n"
    "  --quiet              no progress output\n"
    "tracking:\n"
    "  --runs-db PATH       record the run in this run store (else $FMHOST_RUNS_DB, else\n"
    "                       DIR/runs.db); see fmhost runs --help\n"
    "  --no-track           do not record the run (nor keep its files in DIR/runs/<id>/)\n"
    "\n"
    "writes: DIR/artifacts/<model>_best.safetensors and <model>_last.safetensors (the run's\n"
    "state), DIR/results/<model>/{metrics.csv, loss.png, acc.png, confusion_matrix.png,\n"
    "confusion_matrix.csv, classification_report.txt, per_class.csv, errors.png,\n"
    "summary.json}; the checkpoint's metadata and summary.json record the kernel set.\n"
    "These paths hold the newest run's files; each run's own stay in DIR/runs/<id>/.\n"
    "\n"
    "Ctrl-C (SIGINT) or SIGTERM stops after the current step, saves the state and the report\n"
    "of the epochs done, prints the command that resumes and exits 130 (143); a second one\n"
    "quits at once.  A non-finite loss or gradient stops the run with a diagnosis and exit\n"
    "status 3; summary.json then says \"status\": \"diverged\".\n"
    "\n"
    "Under Open MPI, one run trains data-parallel over the ranks; each batch is cut into\n"
    "chunks that depend on its size only, every rank computes its share of them and every\n"
    "sum over the batch is added in one fixed order, so the metrics and the checkpoint are\n"
    "the same bits as one process's, for any number of ranks (and --resume may change it).\n"
    "Rank 0 alone writes the files:\n"
    "  mpirun -np 4 --hostfile hosts fmhost train --model rescnn --set width=64 --threads 1\n";

enum {
    OPT_PLUGIN = 256, OPT_MODEL, OPT_SET, OPT_EPOCHS, OPT_BATCH, OPT_PATIENCE, OPT_VAL_SPLIT,
    OPT_SEED, OPT_AUGMENT, OPT_LIMIT, OPT_OPTIMIZER, OPT_LR, OPT_MOMENTUM, OPT_NESTEROV,
    OPT_WD, OPT_SCHEDULER, OPT_STEP_SIZE, OPT_GAMMA, OPT_MIN_LR, OPT_WARMUP, OPT_THREADS,
    OPT_KERNELS, OPT_DATA_DIR, OPT_OUT, OPT_QUIET, OPT_HELP, OPT_RESUME, OPT_CLIP,
    OPT_SAVE_DTYPE, OPT_PRECISION, OPT_RUNS_DB, OPT_NO_TRACK, OPT_LABEL_SMOOTHING, OPT_EMA,
    OPT_TTA, OPT_PCT_START, OPT_DIV_FACTOR, OPT_FINAL_DIV_FACTOR, OPT_RANDOM_ERASING,
    OPT_MIXUP, OPT_CUTMIX,
};

static const struct option train_options[] = {
    {"plugin", required_argument, NULL, OPT_PLUGIN},
    {"model", required_argument, NULL, OPT_MODEL},
    {"set", required_argument, NULL, OPT_SET},
    {"epochs", required_argument, NULL, OPT_EPOCHS},
    {"batch-size", required_argument, NULL, OPT_BATCH},
    {"patience", required_argument, NULL, OPT_PATIENCE},
    {"val-split", required_argument, NULL, OPT_VAL_SPLIT},
    {"seed", required_argument, NULL, OPT_SEED},
    {"augment", no_argument, NULL, OPT_AUGMENT},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"optimizer", required_argument, NULL, OPT_OPTIMIZER},
    {"lr", required_argument, NULL, OPT_LR},
    {"momentum", required_argument, NULL, OPT_MOMENTUM},
    {"nesterov", no_argument, NULL, OPT_NESTEROV},
    {"weight-decay", required_argument, NULL, OPT_WD},
    {"scheduler", required_argument, NULL, OPT_SCHEDULER},
    {"step-size", required_argument, NULL, OPT_STEP_SIZE},
    {"gamma", required_argument, NULL, OPT_GAMMA},
    {"min-lr", required_argument, NULL, OPT_MIN_LR},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"kernels", required_argument, NULL, OPT_KERNELS},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"out", required_argument, NULL, OPT_OUT},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, OPT_HELP},
    {"resume", no_argument, NULL, OPT_RESUME},
    {"clip-grad-norm", required_argument, NULL, OPT_CLIP},
    {"save-dtype", required_argument, NULL, OPT_SAVE_DTYPE},
    {"precision", required_argument, NULL, OPT_PRECISION},
    {"runs-db", required_argument, NULL, OPT_RUNS_DB},
    {"no-track", no_argument, NULL, OPT_NO_TRACK},
    {"label-smoothing", required_argument, NULL, OPT_LABEL_SMOOTHING},
    {"ema", required_argument, NULL, OPT_EMA},
    {"tta", no_argument, NULL, OPT_TTA},
    {"random-erasing", required_argument, NULL, OPT_RANDOM_ERASING},
    {"mixup", required_argument, NULL, OPT_MIXUP},
    {"cutmix", required_argument, NULL, OPT_CUTMIX},
    {"pct-start", required_argument, NULL, OPT_PCT_START},
    {"div-factor", required_argument, NULL, OPT_DIV_FACTOR},
    {"final-div-factor", required_argument, NULL, OPT_FINAL_DIV_FACTOR},
    {NULL, 0, NULL, 0},
};

/* The command line that continues this run: as given, with --resume. */
static void print_resume_command(int argc, char **argv)
{
    bool resumed = false;
    for (int i = 1; i < argc; i++) resumed = resumed || !strcmp(argv[i], "--resume");
    char *line = fm_cli_command_line("fmhost", argc, argv);
    fprintf(stderr, "fmhost: continue with: %s%s\n", line, resumed ? "" : " --resume");
    free(line);
}

int fm_cmd_train(int argc, char **argv)
{
    const char *cmd = "train";
    fm_train_config cfg;
    fm_train_config_init(&cfg);
    const char *plugin_path = NULL, *model = NULL;
    const char *sets[FM_CLI_MAX_SETS];
    int n_sets = 0;
    double lr = -1, momentum = -1, wd = -1;
    int seed = -1;

    opterr = 0;
    optind = 1;
    /* The leading ':' makes a missing value come back as ':', not '?'. */
    for (int c; (c = getopt_long(argc, argv, ":", train_options, NULL)) != -1;) {
        const char *v = optarg;
        switch (c) {
        case OPT_PLUGIN: plugin_path = v; break;
        case OPT_MODEL: model = v; break;
        case OPT_SET:
            if (!fm_cli_add_set(cmd, v, sets, &n_sets)) return FM_EXIT_USAGE;
            break;
        case OPT_EPOCHS:
            if (!fm_cli_int(v, 1, 100000, &cfg.epochs))
                return fm_cli_usage_error(cmd, "--epochs '%s': expected an integer from 1 to 100000", v);
            break;
        case OPT_BATCH:
            if (!fm_cli_int(v, 1, 65536, &cfg.batch_size))
                return fm_cli_usage_error(cmd, "--batch-size '%s': expected an integer from 1 to 65536", v);
            break;
        case OPT_PATIENCE:
            if (!fm_cli_int(v, 0, 100000, &cfg.patience))
                return fm_cli_usage_error(cmd, "--patience '%s': expected an integer >= 0", v);
            break;
        case OPT_VAL_SPLIT:
            if (!fm_cli_double(v, &cfg.val_split) || cfg.val_split <= 0 || cfg.val_split >= 1)
                return fm_cli_usage_error(cmd, "--val-split '%s': expected a number in (0, 1)", v);
            break;
        case OPT_SEED:
            if (!fm_cli_int(v, 0, 2147483647, &seed))
                return fm_cli_usage_error(cmd, "--seed '%s': expected an integer from 0 to 2147483647", v);
            cfg.seed = (uint64_t)seed;
            break;
        case OPT_AUGMENT: cfg.augment = true; break;
        case OPT_LIMIT:
            if (!fm_cli_int(v, 0, 100000000, &cfg.limit))
                return fm_cli_usage_error(cmd, "--limit '%s': expected an integer >= 0", v);
            break;
        case OPT_OPTIMIZER:
            if (fm_optim_kind_parse(v, &cfg.optim.kind) != FM_OK)
                return fm_cli_usage_error(cmd, "--optimizer: %s", fm_error_message());
            break;
        case OPT_LR:
            if (!fm_cli_double(v, &lr) || lr <= 0)
                return fm_cli_usage_error(cmd, "--lr '%s': expected a positive number", v);
            break;
        case OPT_MOMENTUM:
            if (!fm_cli_double(v, &momentum) || momentum < 0 || momentum >= 1)
                return fm_cli_usage_error(cmd, "--momentum '%s': expected a number in [0, 1)", v);
            break;
        case OPT_NESTEROV: cfg.optim.nesterov = true; break;
        case OPT_WD:
            if (!fm_cli_double(v, &wd) || wd < 0)
                return fm_cli_usage_error(cmd, "--weight-decay '%s': expected a number >= 0", v);
            break;
        case OPT_SCHEDULER:
            if (fm_sched_kind_parse(v, &cfg.scheduler) != FM_OK)
                return fm_cli_usage_error(cmd, "--scheduler: %s", fm_error_message());
            break;
        case OPT_STEP_SIZE:
            if (!fm_cli_int(v, 1, 100000, &cfg.step_size))
                return fm_cli_usage_error(cmd, "--step-size '%s': expected an integer >= 1", v);
            break;
        case OPT_GAMMA:
            if (!fm_cli_double(v, &cfg.gamma) || cfg.gamma <= 0)
                return fm_cli_usage_error(cmd, "--gamma '%s': expected a positive number", v);
            break;
        case OPT_MIN_LR:
            if (!fm_cli_double(v, &cfg.min_lr) || cfg.min_lr < 0)
                return fm_cli_usage_error(cmd, "--min-lr '%s': expected a number >= 0", v);
            break;
        case OPT_WARMUP:
            if (!fm_cli_int(v, 0, 100000, &cfg.warmup))
                return fm_cli_usage_error(cmd, "--warmup '%s': expected an integer >= 0", v);
            break;
        case OPT_THREADS:
            if (!fm_cli_int(v, 0, 256, &cfg.threads))
                return fm_cli_usage_error(cmd, "--threads '%s': expected an integer from 0 to 256", v);
            break;
        case OPT_KERNELS:
            if (!fm_cli_use_kernels(cmd, v)) return FM_EXIT_USAGE;
            break;
        case OPT_DATA_DIR: cfg.data_dir = v; break;
        case OPT_OUT: cfg.out_dir = v; break;
        case OPT_QUIET: cfg.quiet = true; break;
        case OPT_RESUME: cfg.resume = true; break;
        case OPT_CLIP:
            if (!fm_cli_double(v, &cfg.clip_grad_norm) || cfg.clip_grad_norm <= 0)
                return fm_cli_usage_error(cmd, "--clip-grad-norm '%s': expected a positive number", v);
            break;
        case OPT_PRECISION:
            if (!fm_cli_precision(cmd, v, &cfg.precision)) return FM_EXIT_USAGE;
            break;
        case OPT_SAVE_DTYPE:
            if (fm_float_dtype_parse(v, &cfg.save_dtype) != FM_OK)
                return fm_cli_usage_error(cmd, "--save-dtype: %s", fm_error_message());
            break;
        case OPT_LABEL_SMOOTHING:
            if (!fm_cli_double(v, &cfg.label_smoothing) || cfg.label_smoothing < 0 ||
                cfg.label_smoothing >= 1)
                return fm_cli_usage_error(cmd, "--label-smoothing '%s': expected a number in [0, 1)", v);
            break;
        case OPT_EMA:
            if (!fm_cli_double(v, &cfg.ema) || cfg.ema <= 0 || cfg.ema >= 1)
                return fm_cli_usage_error(cmd, "--ema '%s': expected a decay in (0, 1), e.g. 0.999", v);
            break;
        case OPT_TTA: cfg.tta = true; break;
        case OPT_MIXUP:
            if (!fm_cli_double(v, &cfg.mixup) || cfg.mixup <= 0)
                return fm_cli_usage_error(cmd, "--mixup '%s': expected a Beta alpha > 0, e.g. 0.2", v);
            break;
        case OPT_CUTMIX:
            if (!fm_cli_double(v, &cfg.cutmix) || cfg.cutmix <= 0)
                return fm_cli_usage_error(cmd, "--cutmix '%s': expected a Beta alpha > 0, e.g. 1", v);
            break;
        case OPT_RANDOM_ERASING:
            if (!fm_cli_double(v, &cfg.random_erasing) || cfg.random_erasing < 0 ||
                cfg.random_erasing > 1)
                return fm_cli_usage_error(cmd, "--random-erasing '%s': expected a probability in [0, 1]", v);
            break;
        case OPT_PCT_START:
            if (!fm_cli_double(v, &cfg.pct_start) || cfg.pct_start <= 0 || cfg.pct_start >= 1)
                return fm_cli_usage_error(cmd, "--pct-start '%s': expected a number in (0, 1)", v);
            break;
        case OPT_DIV_FACTOR:
            if (!fm_cli_double(v, &cfg.div_factor) || cfg.div_factor <= 0)
                return fm_cli_usage_error(cmd, "--div-factor '%s': expected a positive number", v);
            break;
        case OPT_FINAL_DIV_FACTOR:
            if (!fm_cli_double(v, &cfg.final_div_factor) || cfg.final_div_factor <= 0)
                return fm_cli_usage_error(cmd, "--final-div-factor '%s': expected a positive number", v);
            break;
        case OPT_RUNS_DB: cfg.runs_db = v; break;
        case OPT_NO_TRACK: cfg.track = false; break;
        case OPT_HELP: fputs(train_usage, stdout); return FM_EXIT_OK;
        case ':':
            return fm_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default:
            return fm_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return fm_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!plugin_path == !model)
        return fm_cli_usage_error(cmd, "give exactly one of --model NAME or --plugin PATH");

    /* Optimizer defaults depend on the kind; explicit values win. */
    fm_optim_config oc = fm_optim_defaults(cfg.optim.kind);
    oc.nesterov = cfg.optim.nesterov;
    if (lr > 0) oc.lr = (float)lr;
    if (momentum >= 0) oc.momentum = (float)momentum;
    if (wd >= 0) oc.weight_decay = (float)wd;
    cfg.optim = oc;
    cfg.progress_tty = isatty(STDERR_FILENO);
    cfg.data_parallel = fm_dist_size() > 1;
    /* Rank 0 speaks for a data-parallel job. */
    bool speaks = fm_dist_rank() == 0;
    if (!speaks) cfg.quiet = true;
    fm_status st = fm_train_config_check(&cfg);
    if (st != FM_OK) return fm_cli_fail(cmd, st);

    fm_plugin *plugin = fm_cli_open_plugin(cmd, plugin_path, model);
    if (!plugin) return FM_EXIT_FAIL;
    fm_hparams *hp = fm_hparams_new(plugin, sets, n_sets);
    if (!hp) {
        st = fm_error_status();
        fm_plugin_release(plugin);
        return fm_cli_fail(cmd, st);
    }
    fm_run *run = NULL;
    int rc = FM_EXIT_OK;
    char *command = fm_cli_command_line("fmhost", argc, argv);
    cfg.command = command;
    if ((st = fm_run_new(&run, plugin, hp, NULL, &cfg)) != FM_OK) {
        rc = fm_cli_fail(cmd, st);
        goto done;
    }
    if (!cfg.quiet) {
        char hs[512];
        fm_log(FM_LOG_INFO, "%s: %lld parameters (%s), %s lr %g, batch %d, up to %d epochs, seed %llu%s, "
               "%s kernels, %s",
               fm_run_name(run), (long long)fm_model_num_params(fm_run_model(run)),
               fm_hparams_to_string(hp, hs, sizeof hs), fm_optim_kind_name(cfg.optim.kind),
               (double)cfg.optim.lr, cfg.batch_size, cfg.epochs, (unsigned long long)cfg.seed,
               cfg.augment ? ", augmented" : "", fm_kernels_name(fm_run_kernels(run)),
               fm_precision_name(cfg.precision));
    }
    fm_cli_signals(true);
    fm_eval_result test;
    fm_run_status status;
    /* The report of the epochs done, however training ended (but for a
     * failed write, which the report would meet again); with the test
     * set's numbers once training is over. */
    if ((st = fm_run_train(run)) != FM_OK ||
        ((status = fm_run_status_of(run)) <= FM_RUN_STOPPED &&
         (st = fm_run_evaluate(run, FM_SPLIT_TEST, &test)) != FM_OK) ||
        (st = fm_run_report(run)) != FM_OK) {
        rc = fm_cli_fail(cmd, st);
        goto done;
    }
    int n_epochs;
    fm_run_history(run, &n_epochs);
    if (cfg.data_parallel) {
        /* Every rank stopped after the same step; the others wait for rank
         * 0's state and report before the job ends (a non-zero exit, as
         * after a signal, ends it at once). */
        if ((st = fm_dist_barrier()) != FM_OK) {
            rc = fm_cli_fail(cmd, st);
            goto done;
        }
    }
    if (!speaks) {
        rc = status == FM_RUN_INTERRUPTED ? fm_cli_signal_exit()
             : status == FM_RUN_DIVERGED  ? FM_EXIT_DIVERGED
                                          : FM_EXIT_OK;
        goto done;
    }
    if (status == FM_RUN_INTERRUPTED) {
        fprintf(stderr, "fmhost train: %s; report of the %d epochs done in %s\n",
                fm_run_status_message(run), n_epochs, fm_run_results_dir(run));
        print_resume_command(argc, argv);
        rc = fm_cli_signal_exit();
        goto done;
    }
    if (status == FM_RUN_DIVERGED) {
        const char *ckpt = fm_run_checkpoint_path(run);
        fprintf(stderr, "fmhost train: %s; %s%s, report in %s\n", fm_run_status_message(run),
                ckpt ? "the best checkpoint before it is " : "no checkpoint was written",
                ckpt ? ckpt : "", fm_run_results_dir(run));
        rc = FM_EXIT_DIVERGED;
        goto done;
    }
    printf("%s: test loss %.4f, test accuracy %.4f (best epoch %d of %d, %.1f s); "
           "checkpoint %s, report in %s\n",
           fm_run_name(run), test.loss, test.acc, fm_run_best_epoch(run), n_epochs,
           fm_run_seconds(run), fm_run_checkpoint_path(run), fm_run_results_dir(run));
    if (fm_run_track_id(run))
        printf("run %lld recorded in %s, its files kept in %s (fmhost runs show %lld --runs-db %s)\n",
               (long long)fm_run_track_id(run), fm_run_track_path(run), fm_run_track_dir(run),
               (long long)fm_run_track_id(run), fm_run_track_path(run));
done:
    free(command);
    fm_run_free(run);
    fm_hparams_free(hp);
    fm_plugin_release(plugin);
    return rc;
}
