"""How fast this device trains: every method's step on each network at the paper's batch size, and the
per-epoch test pass, measured by imbsam.bench; and what that makes of the paper's protocol and the quick run.
"""

import math

from imbsam.bench import step as bench
from imbsam.params import QUICK_RUN, exp_run_command, override, params_model

ARCHS = ("resnet34", "resnet32")
TEST_IMAGES = 10_000  # CIFAR-100's test set, evaluated after every epoch


def measure(arch, target, steps, optimizers=None):
    """bench figures for one network: each optimizer's graph-mode step and the evaluation pass, each row in its
    own process and one at a time, so a row's peak memory is its own and no two share the device."""
    return bench.run(arch, params_model()().train.batch_size, target, steps=steps, warmup=2, rounds=1,
                     optimizers=optimizers, modes=("graph",), floors=False, pipeline=False, evaluation=True,
                     one_at_a_time=True)


def run_seconds(params, figures, method):
    """Estimated wall time of one run of `method` under `params`, from the step and evaluation speeds of its
    network: its epochs' steps and test passes, plus the compile time of its first step. Download, split,
    checkpoints and the final evaluation are left out: minutes, against hours."""
    train_images = len(bench.longtail_dataset()[0])
    steps = math.ceil(train_images / params.train.batch_size)
    if params.train.max_steps_per_epoch:
        steps = min(steps, params.train.max_steps_per_epoch)
    rows = figures["rows"]
    epoch = (steps * params.train.batch_size / rows[method]["img_per_s"]
             + TEST_IMAGES / rows[bench.EVALUATION]["img_per_s"])
    return params.train.epochs * epoch + rows[method]["compile_s"]


def estimates(figures_by_arch):
    """For the paper's protocol (params.yaml's defaults) and the README's quick run, where their network was
    measured: the command, the network, each run's estimated seconds, and the total on one device (one run
    after another) and side by side (one device per run, as many as runs)."""
    paper = params_model()()
    found = {}
    for name, params, command in (("paper", paper, "dvc repro"),
                                  ("quick", override(paper, QUICK_RUN), exp_run_command(QUICK_RUN))):
        figures = figures_by_arch.get(params.model.arch)
        if figures is None:
            continue
        runs = {method: run_seconds(params, figures, method) for method in params.train.optimizers}
        seeds = len(params.train.seeds)
        found[name] = {"command": command, "arch": params.model.arch, "epochs": params.train.epochs,
                       "seeds": seeds, "runs": runs, "one_device_s": seeds * sum(runs.values()),
                       "side_by_side_s": max(runs.values())}
    return found
