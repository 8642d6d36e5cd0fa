"""DVC stage `train@<optimizer>-<seed>`: train one run on data/split.

Outputs runs/<optimizer>-<seed>/{model/last.ckpt, model/best.ckpt, train.json, live/}.
An interrupted run resumes from its last finished epoch when the command is run again.
"""

import argparse

from _common import load_params, main_guard, param

from imbsam.device import KERNELS, MODES, TARGETS, prepare_environment, setup
from imbsam.errors import InputError

QUICK_RUN = ("dvc exp run -S model.arch=resnet32 -S train.epochs=2 -S train.max_steps_per_epoch=20 "
             "(see README: Quick CPU run)")


def config_from_params(params, optimizer, seed):
    from imbsam.optim import METHODS
    from imbsam.train import TrainConfig

    if optimizer not in METHODS:
        raise InputError(f"params.yaml: train.optimizers contains {optimizer!r}: choose from {', '.join(METHODS)}")
    return TrainConfig(
        method=optimizer,
        seed=seed,
        arch=param(params, "model.arch"),
        epochs=param(params, "train.epochs"),
        batch_size=param(params, "train.batch_size"),
        lr=param(params, "train.lr"),
        momentum=param(params, "train.momentum"),
        weight_decay=param(params, "train.weight_decay"),
        decay_bn=param(params, "train.decay_bn"),
        max_steps_per_epoch=param(params, "train.max_steps_per_epoch"),
        rho=param(params, f"{optimizer}.rho") if optimizer != "sgd" else 0.0,
        eta=param(params, "imbsam.eta") if optimizer == "imbsam" else 0,
        tail_loss_scale=param(params, "imbsam.tail_loss_scale") if optimizer == "imbsam" else 1.0,
        bn_update_in_perturbed_pass=(param(params, "imbsam.bn_update_in_perturbed_pass")
                                     if optimizer == "imbsam" else True),
    ).validate()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--optimizer", required=True)
    parser.add_argument("--seed", required=True)
    args = parser.parse_args()
    try:
        seed = int(args.seed)
    except ValueError:
        raise InputError(f"params.yaml: train.seeds contains {args.seed!r}: seeds must be integers >= 0") from None

    params = load_params()
    target = param(params, "device.target", choices=TARGETS)
    mode = param(params, "train.mode", choices=MODES)
    kernels = param(params, "train.kernels", choices=KERNELS)
    prepare_environment(target)
    config = config_from_params(params, args.optimizer, seed)

    from imbsam.data import load_split
    from imbsam.train import train

    split = load_split("data/split")
    device = setup(target, mode)
    name = f"{args.optimizer}-{seed}"
    train(config, split, out_dir=f"runs/{name}", resume_dir=".resume", live_dir=f"runs/{name}/live",
          device=device, kernels=kernels, quick_run_hint=QUICK_RUN)


if __name__ == "__main__":
    main_guard(main)
