"""DVC stage `train@<optimizer>-<seed>`: train one run on data/split.

Outputs runs/<optimizer>-<seed>/{model/last.ckpt, model/best.ckpt, train.json, live/}.
An interrupted run resumes from its last finished epoch when the command is run again.
"""

from _common import main_guard, matrix_run

from imbsam.device import resolve_mode, setup

QUICK_RUN = ("dvc exp run -S model.arch=resnet32 -S train.epochs=2 -S train.max_steps_per_epoch=20 "
             "-S train.schedule=step_cosine (see README: Quick CPU run)")


def main():
    params, optimizer, seed = matrix_run(__doc__)

    device = setup(params.device.target, params.train.mode)
    # Imported only now: MindSpore must not load before device.setup has set the CPU environment.
    from imbsam.data import load_split
    from imbsam.train import TrainConfig, train

    name = f"{optimizer}-{seed}"
    train(TrainConfig.from_params(params, optimizer, seed), load_split("data/split"), out_dir=f"runs/{name}",
          resume_dir=".resume", live_dir=f"runs/{name}/live", device=device, kernels=params.train.kernels,
          mode=resolve_mode(params.train.mode), quick_run_hint=QUICK_RUN)


if __name__ == "__main__":
    main_guard(main)
