/* The built-in learning-rate schedules (fm_sched_lr, core/train/config.c)
 * step for step against torch.optim.lr_scheduler (1.13): StepLR,
 * CosineAnnealingLR with and without eta_min, and the linear warm-up
 * (LinearLR per step) before either, and OneCycleLR stepped per step
 * (cosine, without momentum cycling).  The expected rates are in
 * tests/fixtures/sched.txt, written by tests/gen_sched.py, which says how
 * each of fmhost's options maps to PyTorch's. */
#include "fm_test_util.h"

#include "fm/fm_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE FM_SOURCE_DIR "/tests/fixtures/sched.txt"

/* Equal to double rounding: the two compute the same formulas, PyTorch
 * recursively (each rate from the previous one), fmhost in closed form. */
static void assert_rate(const char *name, int epoch, int step, double got, double want)
{
    double tol = 1e-12 * fabs(want) + 1e-18;
    ck_assert_msg(fabs(got - want) <= tol,
                  "case %s, epoch %d step %d: fm_sched_lr gives %.17g, torch %.17g", name, epoch,
                  step, got, want);
}

/* A case's options are set in cfg: they must be valid; its rates follow. */
static void case_begin(const fm_train_config *cfg, const char *name, int *cases, int *case_rates,
                       int *want_rates, int rates)
{
    ck_assert_msg(fm_train_config_check(cfg) == FM_OK, "case %s: %s", name, fm_error_message());
    (*cases)++;
    *case_rates = 0;
    *want_rates = rates;
}

START_TEST(test_sched_matches_torch)
{
    FILE *f = fopen(FIXTURE, "r");
    ck_assert_msg(f != NULL, "cannot open %s (written by tests/gen_sched.py)", FIXTURE);
    char line[512], name[64] = "", sched[32];
    fm_train_config cfg;
    int steps = 0, cases = 0, rates = 0, case_rates = 0, want_rates = 0, onecycles = 0;
    while (fgets(line, sizeof line, f)) {
        int epochs, warmup, step_size, e, s;
        double lr, gamma, min_lr, value, pct, div, final_div;
        if (line[0] == '#') continue;
        if (sscanf(line, "case %63s %31s %d %d %d %lf %d %lf %lf", name, sched, &epochs, &warmup,
                   &steps, &lr, &step_size, &gamma, &min_lr) == 9) {
            ck_assert_int_eq(case_rates, want_rates);  /* the case before was complete */
            fm_train_config_init(&cfg);
            ck_assert_int_eq(fm_sched_kind_parse(sched, &cfg.scheduler), FM_OK);
            cfg.epochs = epochs;
            cfg.warmup = warmup;
            cfg.optim.lr = (float)lr;
            cfg.step_size = step_size;
            cfg.gamma = gamma;
            cfg.min_lr = min_lr;
            case_begin(&cfg, name, &cases, &case_rates, &want_rates, epochs * steps);
        } else if (sscanf(line, "onecycle %63s %d %d %lf %lf %lf %lf", name, &epochs, &steps,
                          &lr, &pct, &div, &final_div) == 7) {
            ck_assert_int_eq(case_rates, want_rates);
            fm_train_config_init(&cfg);
            cfg.scheduler = FM_SCHED_ONECYCLE;
            cfg.epochs = epochs;
            cfg.optim.lr = (float)lr;
            cfg.pct_start = pct;
            cfg.div_factor = div;
            cfg.final_div_factor = final_div;
            case_begin(&cfg, name, &cases, &case_rates, &want_rates, epochs * steps);
            onecycles++;
        } else if (sscanf(line, "lr %d %d %lf", &e, &s, &value) == 3) {
            ck_assert_msg(cases > 0, "%s: a rate before the first case", FIXTURE);
            ck_assert_msg(e == case_rates / steps && s == case_rates % steps,
                          "case %s: rates out of order at epoch %d step %d", name, e, s);
            assert_rate(name, e, s, fm_sched_lr(&cfg, e, s, steps), value);
            case_rates++;
            rates++;
        } else {
            ck_abort_msg("%s: unreadable line: %s", FIXTURE, line);
        }
    }
    fclose(f);
    ck_assert_int_eq(case_rates, want_rates);
    ck_assert_int_ge(cases, 15);
    ck_assert_int_ge(onecycles, 5);
    ck_assert_int_ge(rates, 200);
}
END_TEST

/* What the documentation says of cosine: from --lr toward --min-lr over the
 * epochs after the warm-up, reaching --min-lr one epoch after the last (as
 * CosineAnnealingLR with T_max = epochs - warmup does); the last epoch runs
 * just above it. */
START_TEST(test_cosine_reaches_min_lr_after_the_last_epoch)
{
    fm_train_config cfg;
    fm_train_config_init(&cfg);
    cfg.scheduler = FM_SCHED_COSINE;
    cfg.optim.lr = 0.5f;
    cfg.min_lr = 0.05;
    cfg.epochs = 10;
    cfg.warmup = 2;
    const int steps = 7;
    double first = fm_sched_lr(&cfg, cfg.warmup, 0, steps);
    double last = fm_sched_lr(&cfg, cfg.epochs - 1, steps - 1, steps);
    ck_assert_double_eq(first, 0.5);
    ck_assert_msg(last > cfg.min_lr && last < cfg.min_lr + 0.05 * (0.5 - cfg.min_lr),
                  "last epoch at %.17g", last);
    ck_assert_double_eq(fm_sched_lr(&cfg, cfg.epochs, 0, steps), cfg.min_lr);
    /* The warm-up's last step runs at the base rate, its first at 1/(W*S) of it. */
    ck_assert_double_eq_tol(fm_sched_lr(&cfg, 0, 0, steps), 0.5 / (2 * steps), 1e-15);
    ck_assert_double_eq(fm_sched_lr(&cfg, 1, steps - 1, steps), 0.5);
}
END_TEST

/* onecycle's defaults are OneCycleLR's, its options are checked, and it
 * takes no warm-up of fmhost's nor --min-lr. */
START_TEST(test_onecycle_defaults_and_checks)
{
    fm_train_config cfg;
    fm_train_config_init(&cfg);
    ck_assert_int_eq(fm_sched_kind_parse("onecycle", &cfg.scheduler), FM_OK);
    ck_assert_str_eq(fm_sched_kind_name(cfg.scheduler), "onecycle");
    ck_assert_double_eq(cfg.pct_start, 0.3);
    ck_assert_double_eq(cfg.div_factor, 25.0);
    ck_assert_double_eq(cfg.final_div_factor, 1e4);
    cfg.optim.lr = 0.5f;
    cfg.epochs = 4;
    ck_assert_int_eq(fm_train_config_check(&cfg), FM_OK);
    ck_assert_double_eq_tol(fm_sched_lr(&cfg, 0, 0, 10), 0.5 / 25, 1e-15);
    ck_assert_double_eq_tol(fm_sched_lr(&cfg, 3, 9, 10), 0.5 / 25 / 1e4, 1e-18);
    fm_train_config bad = cfg;
    bad.warmup = 1;
    ck_assert_int_eq(fm_train_config_check(&bad), FM_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(fm_error_message(), "--warmup"));
    bad = cfg;
    bad.min_lr = 1e-4;
    ck_assert_int_eq(fm_train_config_check(&bad), FM_ERR_ARG);
    const double pcts[] = {0.0, 1.0, -0.1, NAN};
    for (int i = 0; i < 4; i++) {
        bad = cfg;
        bad.pct_start = pcts[i];
        ck_assert_int_eq(fm_train_config_check(&bad), FM_ERR_ARG);
        ck_assert_ptr_nonnull(strstr(fm_error_message(), "--pct-start"));
    }
    bad = cfg;
    bad.div_factor = 0;
    ck_assert_int_eq(fm_train_config_check(&bad), FM_ERR_ARG);
    bad = cfg;
    bad.final_div_factor = -1;
    ck_assert_int_eq(fm_train_config_check(&bad), FM_ERR_ARG);
}
END_TEST

static Suite *sched_suite(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("torch");
    tcase_add_test(tc, test_sched_matches_torch);
    tcase_add_test(tc, test_cosine_reaches_min_lr_after_the_last_epoch);
    tcase_add_test(tc, test_onecycle_defaults_and_checks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(sched_suite()); }
