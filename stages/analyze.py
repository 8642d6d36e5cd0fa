"""Stage analyze@<optimizer>-<seed>: the generalization gap and loss-landscape curvature of a run's last epoch.

Per class group (many, medium, few): train and test balanced accuracy and loss without augmentation, and the
curvature of the training cross-entropy over the group's images (imbsam.mechanism, imbsam.analysis). The last
epoch's checkpoint is the clean protocol's, so the stage reads no eval.* key. Writes analysis/<optimizer>-<seed>.json.
"""

import json
import time
from pathlib import Path

from imbsam import registry
from imbsam.device.claims import claim_for
from imbsam.device.target import setup
from imbsam.files import write_text
from stages._common import main_guard, matrix_run, trained_run

SPLIT_DIR = Path("data/split")
ANALYSIS_DIR = Path("analysis")


def main():
    params, optimizer, seed = matrix_run(__doc__.splitlines()[0])
    name = f"{optimizer}-{seed}"
    run, checkpoints = trained_run(name, params.model.arch, ("last",))
    info = setup(params.device.target, slot=claim_for(params.device.target))
    # Imported only now: MindSpore must not load before device.setup has set the CPU environment.
    from imbsam.data.loading import load_split
    from imbsam.evaluate import load_weights
    from imbsam.mechanism import analyze
    from imbsam.models import create_model

    split = load_split(SPLIT_DIR)
    summary = split["summary"]
    normalised = registry.module("losses", run.get("loss", "ce")).NORMALISED_HEAD
    # MindSpore's own kernels: the second derivatives go through them (the project's CPU kernels have none).
    network = create_model(params.model.arch, num_classes=summary["num_classes"], kernels="mindspore",
                           normalised_head=normalised)
    load_weights(network, checkpoints["last"])
    started = time.perf_counter()
    result = analyze(network, split, params.analysis, log=lambda text: print(f"{name}: {text}", flush=True))
    record = {
        "optimizer": optimizer,
        "seed": seed,
        "arch": params.model.arch,
        "epoch": run["last_epoch"],
        "checkpoint": "last",
        "loss": "cross-entropy of the network's outputs, mean over each group's samples, no weight decay",
        "settings": params.analysis.model_dump(),
        "device": info,
        "seconds": time.perf_counter() - started,
        **result,
    }
    ANALYSIS_DIR.mkdir(exist_ok=True)
    write_text(ANALYSIS_DIR / f"{name}.json", json.dumps(record, indent=2) + "\n")
    for group, figures in result["groups"].items():
        shown = [f"{key} {figures[key]:.4g}" for key in ("gap", "lambda_max", "lambda_min", "trace")
                 if figures.get(key) is not None]
        print(f"{name}: {group}: {', '.join(shown) or 'no figures (no images of the group)'}")


if __name__ == "__main__":
    main_guard(main)
