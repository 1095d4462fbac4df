/* fmhost predict: a trained model on pictures (PNG) or IDX image files. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char predict_usage[] =
    "usage: fmhost predict (--model NAME | --plugin PATH) [--weights FILE] [options] IMAGE...\n"
    "\n"
    "Classifies each IMAGE with a trained model and prints its three likeliest\n"
    "classes with their probabilities.  An IMAGE is a PNG file (any size, colour or\n"
    "grey: made grey, transparency on black, resized to 28x28 by area averaging,\n"
    "stretched if not square) or an IDX image file (gzip'd or plain, 28x28, e.g.\n"
    "t10k-images-idx3-ubyte.gz), each of whose images is classified (as FILE[i]).\n"
    "FashionMNIST shows light objects on a dark ground: give --invert for a dark\n"
    "object photographed on a light one.  The hyper-parameters come from the\n"
    "checkpoint unless --set is given.\n"
    "\n"
    "  --weights FILE   safetensors checkpoint (OUT/artifacts/<model>_best.safetensors)\n"
    "  --set KEY=VALUE  a hyper-parameter of the plugin (repeatable)\n"
    "  --out DIR        where artifacts/ is, for the default --weights (.)\n"
    "  --invert         invert the PNG pictures' grey levels (dark on light)\n"
    "  --top K          classes shown per image, 1 to 10 (3)\n"
    "  --json           one JSON array, an object per image\n";

enum { P_MODEL = 256, P_PLUGIN, P_WEIGHTS, P_SET, P_OUT, P_INVERT, P_TOP, P_JSON, P_HELP };

static const struct option predict_options[] = {
    {"model", required_argument, NULL, P_MODEL},
    {"plugin", required_argument, NULL, P_PLUGIN},
    {"weights", required_argument, NULL, P_WEIGHTS},
    {"set", required_argument, NULL, P_SET},
    {"out", required_argument, NULL, P_OUT},
    {"invert", no_argument, NULL, P_INVERT},
    {"top", required_argument, NULL, P_TOP},
    {"json", no_argument, NULL, P_JSON},
    {"help", no_argument, NULL, P_HELP},
    {NULL, 0, NULL, 0},
};

/* The images to classify: pixels [n, 28, 28] and a label for each. */
typedef struct image_list {
    uint8_t *pixels;
    char **names;
    int n, cap;
} image_list;

static uint8_t *list_add(image_list *l, const char *name)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->pixels = fm_xrealloc(l->pixels, (size_t)l->cap * FM_IMAGE_PIXELS);
        l->names = fm_xrealloc(l->names, (size_t)l->cap * sizeof *l->names);
    }
    l->names[l->n] = fm_xstrdup(name);
    return l->pixels + (size_t)l->n++ * FM_IMAGE_PIXELS;
}

static void list_free(image_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->pixels);
}

/* PNG by its signature, else IDX (whose reader names what is wrong). */
static fm_status list_add_file(image_list *l, const char *path, bool invert)
{
    /* Only a regular file: a FIFO would block the reads. */
    uint8_t sig[8] = {0};
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return fm_error_set(FM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return fm_error_set(FM_ERR_IO, "%s: not a regular file (an IMAGE is a PNG file or an "
                            "IDX image file)", path);
    }
    ssize_t got = read(fd, sig, sizeof sig);
    close(fd);
    if (got == (ssize_t)sizeof sig && png_sig_cmp(sig, 0, sizeof sig) == 0) {
        uint8_t px[FM_IMAGE_PIXELS];
        fm_status st = fm_cli_png_load(path, invert, px);
        if (st == FM_OK) memcpy(list_add(l, path), px, sizeof px);
        return st;
    }
    uint8_t *images;
    int n;
    fm_status st = fm_idx_load_images(path, &images, &n);
    if (st != FM_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", fm_error_message());
        return fm_error_set(st, "%s (an IMAGE is a PNG file or an IDX image file)", why);
    }
    char name[4096 + 16];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s[%d]", path, i);
        memcpy(list_add(l, name), images + (size_t)i * FM_IMAGE_PIXELS, FM_IMAGE_PIXELS);
    }
    free(images);
    return FM_OK;
}

/* The classes of p[10] by decreasing probability, ties by class. */
static void rank(const double *p, int *order)
{
    for (int k = 0; k < FM_NUM_CLASSES; k++) order[k] = k;
    for (int i = 1; i < FM_NUM_CLASSES; i++)
        for (int j = i; j > 0 && p[order[j]] > p[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
}

/* Softmax in double, from the largest logit. */
static void softmax(const float *logits, double *p)
{
    double max = logits[0], sum = 0.0;
    for (int k = 1; k < FM_NUM_CLASSES; k++) max = fmax(max, logits[k]);
    for (int k = 0; k < FM_NUM_CLASSES; k++) sum += p[k] = exp(logits[k] - max);
    for (int k = 0; k < FM_NUM_CLASSES; k++) p[k] /= sum;
}

int fm_cmd_predict(int argc, char **argv)
{
    const char *cmd = "predict";
    fm_cli_model_args a = {.cmd = cmd, .out_dir = ".", .need_weights = true};
    const char *sets[FM_CLI_MAX_SETS];
    bool invert = false, json = false;
    int top = 3;
    opterr = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":", predict_options, NULL)) != -1;) {
        switch (c) {
        case P_MODEL: a.model_name = optarg; break;
        case P_PLUGIN: a.plugin_path = optarg; break;
        case P_WEIGHTS: a.weights = optarg; break;
        case P_SET:
            if (!fm_cli_add_set(cmd, optarg, sets, &a.n_sets)) return FM_EXIT_USAGE;
            break;
        case P_OUT: a.out_dir = optarg; break;
        case P_INVERT: invert = true; break;
        case P_TOP:
            if (!fm_cli_int(optarg, 1, FM_NUM_CLASSES, &top))
                return fm_cli_usage_error(cmd, "--top '%s': expected an integer from 1 to %d",
                                          optarg, FM_NUM_CLASSES);
            break;
        case P_JSON: json = true; break;
        case P_HELP: fputs(predict_usage, stdout); return FM_EXIT_OK;
        case ':': return fm_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return fm_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!a.plugin_path == !a.model_name)
        return fm_cli_usage_error(cmd, "give exactly one of --model NAME or --plugin PATH");
    if (optind == argc) return fm_cli_usage_error(cmd, "no IMAGE given (PNG or IDX files)");
    a.sets = sets;

    /* Every image is read before the model: a bad file fails fast. */
    image_list images = {0};
    for (int i = optind; i < argc; i++) {
        fm_status st = list_add_file(&images, argv[i], invert);
        if (st != FM_OK) {
            int rc = fm_cli_fail(cmd, st);
            list_free(&images);
            return rc;
        }
    }
    fm_cli_model cm;
    int rc = fm_cli_model_open(&cm, &a);
    if (rc != FM_EXIT_OK) {
        list_free(&images);
        return rc;
    }

    enum { BATCH = 256 };
    float *x = fm_xmalloc((size_t)BATCH * FM_IMAGE_PIXELS * sizeof *x);
    float *logits = fm_xmalloc((size_t)images.n * FM_NUM_CLASSES * sizeof *logits);
    fm_graph *g = fm_graph_new();
    for (int start = 0; start < images.n && rc == FM_EXIT_OK; start += BATCH) {
        int b = images.n - start < BATCH ? images.n - start : BATCH;
        for (int i = 0; i < b; i++)
            fm_image_normalize(images.pixels + (size_t)(start + i) * FM_IMAGE_PIXELS,
                               x + (size_t)i * FM_IMAGE_PIXELS);
        fm_tensor *xt, *y;
        fm_status st = fm_cli_model_trace(&cm, g, x, b, &xt, &y);
        if (st != FM_OK)
            rc = fm_cli_fail(cmd, st);
        else
            memcpy(logits + (size_t)start * FM_NUM_CLASSES, y->data,
                   (size_t)b * FM_NUM_CLASSES * sizeof *logits);
    }
    fm_graph_free(g);

    json_t *all = json_array();
    for (int i = 0; i < images.n && rc == FM_EXIT_OK; i++) {
        double p[FM_NUM_CLASSES];
        int order[FM_NUM_CLASSES];
        softmax(logits + (size_t)i * FM_NUM_CLASSES, p);
        rank(p, order);
        if (json) {
            json_t *classes = json_array();
            for (int k = 0; k < top; k++)
                json_array_append_new(classes, json_pack("{s:i, s:s, s:f}", "class", order[k],
                                                         "name", fm_class_name(order[k]),
                                                         "probability", p[order[k]]));
            json_array_append_new(all, json_pack("{s:s, s:o}", "image", images.names[i], "top",
                                                 classes));
            continue;
        }
        printf("%s:", images.names[i]);
        for (int k = 0; k < top; k++)
            printf("%s %s %.1f%%", k ? "," : "", fm_class_name(order[k]), 100.0 * p[order[k]]);
        printf("\n");
    }
    if (json && rc == FM_EXIT_OK) {
        char *text = json_dumps(all, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
        puts(text);
        free(text);
    }
    json_decref(all);
    free(logits);
    free(x);
    fm_cli_model_close(&cm);
    list_free(&images);
    return rc;
}
