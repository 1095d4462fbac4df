#!/usr/bin/python3
"""Expected learning rates for tests/test_sched.c, from torch.optim.lr_scheduler.

fmhost's schedules (core/train/config.c, fm_sched_lr), in PyTorch's terms:

  * warm-up over the first W epochs of S steps each: LinearLR(start_factor =
    1/(W*S), end_factor = 1, total_iters = W*S - 1), stepped once per step, so
    the rate climbs from base/(W*S) and the last warm-up step runs at base;
  * then, from the base rate again, the schedule proper stepped once per
    epoch over the T = epochs - W remaining epochs: StepLR(step_size, gamma),
    CosineAnnealingLR(T_max = T, eta_min = min_lr), or none (constant).
    CosineAnnealingLR reaches eta_min at epoch T_max: one epoch after the
    last, so the last epoch runs just above --min-lr.

  * onecycle: OneCycleLR(max_lr = lr, epochs, steps_per_epoch, pct_start,
    div_factor, final_div_factor, anneal_strategy = "cos", cycle_momentum =
    False), stepped once per step, no warm-up of fmhost's.

Writes tests/fixtures/sched.txt: per case a "case" line with the options (a
"onecycle" line for the one-cycle cases) and one "lr EPOCH STEP VALUE" line
per step (epoch and step from 0), the value being the optimizer's rate for
that step.  Run with /usr/bin/python3 (Debian's
python3-torch) after changing a case:

    /usr/bin/python3 tests/gen_sched.py
"""
import os
import struct

import torch

# name, scheduler, epochs, warmup, steps_per_epoch, lr, step_size, gamma, min_lr
CASES = [
    ("constant", "constant", 4, 0, 3, 0.01, 10, 0.1, 0.0),
    ("constant_warmup", "constant", 5, 2, 3, 0.01, 10, 0.1, 0.0),
    ("step", "step", 12, 0, 2, 0.1, 3, 0.5, 0.0),
    ("step_default", "step", 25, 0, 1, 1e-3, 10, 0.1, 0.0),
    ("step_warmup", "step", 10, 3, 4, 0.05, 2, 0.3, 0.0),
    ("cosine", "cosine", 20, 0, 2, 1e-3, 10, 0.1, 0.0),
    ("cosine_min_lr", "cosine", 10, 0, 3, 0.1, 10, 0.1, 1e-3),
    ("cosine_warmup", "cosine", 12, 2, 5, 2e-3, 10, 0.1, 0.0),
    ("cosine_warmup_min_lr", "cosine", 9, 4, 3, 0.5, 10, 0.1, 0.05),
    ("cosine_one_epoch", "cosine", 1, 0, 4, 0.1, 10, 0.1, 0.01),
    ("cosine_last_after_warmup", "cosine", 3, 2, 1, 0.1, 10, 0.1, 0.02),
    ("warmup_one_step", "cosine", 4, 1, 1, 0.1, 10, 0.1, 0.0),
]

# name, epochs, steps_per_epoch, lr, pct_start, div_factor, final_div_factor
ONECYCLE_CASES = [
    ("onecycle_default", 10, 7, 0.01, 0.3, 25.0, 1e4),
    ("onecycle_one_epoch", 1, 13, 0.1, 0.3, 25.0, 1e4),
    ("onecycle_short_rise", 6, 5, 2e-3, 0.15, 10.0, 100.0),
    ("onecycle_long_rise", 4, 9, 0.4, 0.8, 5.0, 1e3),
    ("onecycle_fraction", 3, 11, 1e-3, 0.37, 25.0, 1e4),
]


def as_float32(x):
    """fmhost keeps --lr as a float (fm_optim_config.lr): the base rate is
    that float, so the fixture starts from it too and the comparison can be
    exact to double rounding."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def optimizer(lr):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=as_float32(lr))


def rates(scheduler, epochs, warmup, steps, lr, step_size, gamma, min_lr):
    """[(epoch, step, lr)] for every step of the run."""
    out = []
    if warmup > 0:
        opt = optimizer(lr)
        total = warmup * steps
        # LinearLR cannot take total_iters = 0: a warm-up of one step runs at
        # the base rate, start_factor 1.
        sched = (torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / total, end_factor=1.0,
                                                   total_iters=total - 1) if total > 1 else None)
        for e in range(warmup):
            for s in range(steps):
                out.append((e, s, opt.param_groups[0]["lr"]))
                opt.step()
                if sched:
                    sched.step()
    opt = optimizer(lr)
    span = epochs - warmup
    if scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
    elif scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=span, eta_min=min_lr)
    else:
        sched = None
    for e in range(warmup, epochs):
        for s in range(steps):
            out.append((e, s, opt.param_groups[0]["lr"]))
            opt.step()
        if sched:
            sched.step()
    return out


def onecycle_rates(epochs, steps, lr, pct_start, div_factor, final_div_factor):
    opt = optimizer(lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=as_float32(lr), epochs=epochs, steps_per_epoch=steps, pct_start=pct_start,
        div_factor=div_factor, final_div_factor=final_div_factor, anneal_strategy="cos",
        cycle_momentum=False)
    out = []
    for e in range(epochs):
        for s in range(steps):
            out.append((e, s, opt.param_groups[0]["lr"]))
            opt.step()
            if e * steps + s + 1 < epochs * steps:  # OneCycleLR refuses a step past the last
                sched.step()
    return out


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "sched.txt")
    with open(path, "w") as f:
        f.write("# Generated by tests/gen_sched.py with torch %s; do not edit.\n" % torch.__version__)
        f.write("# case NAME SCHEDULER EPOCHS WARMUP STEPS_PER_EPOCH LR STEP_SIZE GAMMA MIN_LR\n")
        f.write("# onecycle NAME EPOCHS STEPS_PER_EPOCH LR PCT_START DIV_FACTOR FINAL_DIV_FACTOR\n")
        f.write("# lr EPOCH STEP VALUE   (epoch and step from 0)\n")
        for name, scheduler, epochs, warmup, steps, lr, step_size, gamma, min_lr in CASES:
            f.write("case %s %s %d %d %d %r %d %r %r\n"
                    % (name, scheduler, epochs, warmup, steps, lr, step_size, gamma, min_lr))
            for e, s, v in rates(scheduler, epochs, warmup, steps, lr, step_size, gamma, min_lr):
                f.write("lr %d %d %.17g\n" % (e, s, v))
        for name, epochs, steps, lr, pct, div, final_div in ONECYCLE_CASES:
            f.write("onecycle %s %d %d %r %r %r %r\n" % (name, epochs, steps, lr, pct, div, final_div))
            for e, s, v in onecycle_rates(epochs, steps, lr, pct, div, final_div):
                f.write("lr %d %d %.17g\n" % (e, s, v))


if __name__ == "__main__":
    main()
