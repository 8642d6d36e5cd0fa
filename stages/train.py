"""DVC stage `train@<optimizer>-<seed>`: train one run on data/split.

Outputs runs/<optimizer>-<seed>/{model/last.ckpt, model/best.ckpt, train.json, live/}.
An interrupted run resumes from its last finished epoch when the command is run again.
"""

from imbsam.device.claims import claim_for
from imbsam.device.target import resolve_mode, setup
from imbsam.params import QUICK_RUN, exp_run_command
from stages._common import main_guard, matrix_run


def main():
    # The groups this run computes with: its optimizer's and its loss's, nothing of the others.
    params, optimizer, seed = matrix_run(__doc__, lambda optimizer, core: (optimizer, core.train.loss))

    device = setup(params.device.target, params.train.mode, slot=claim_for(params.device.target))
    # Imported only now: MindSpore must not load before device.setup has set the CPU environment.
    from imbsam.data.loading import load_split
    from imbsam.train import TrainConfig, resume_root, train

    name = f"{optimizer}-{seed}"
    quick_run = f"{exp_run_command(QUICK_RUN)} (see README: Quick CPU run)"
    train(TrainConfig.from_params(params, optimizer, seed), load_split("data/split"), out_dir=f"runs/{name}",
          resume_dir=resume_root(), live_dir=f"runs/{name}/live", device=device, kernels=params.train.kernels,
          mode=resolve_mode(params.train.mode), quick_run_hint=quick_run, eval_batch_size=params.eval.batch_size)


if __name__ == "__main__":
    main_guard(main)
