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
from imbsam.errors import InputError
from imbsam.files import write_text
from stages._common import main_guard, matrix_run

SPLIT_DIR = Path("data/split")
RUNS_DIR = Path("runs")
ANALYSIS_DIR = Path("analysis")


def last_checkpoint(name, arch):
    """train.json of the run and its last checkpoint, checked against the network this stage builds."""
    train_json, checkpoint = RUNS_DIR / name / "train.json", RUNS_DIR / name / "model" / "last.ckpt"
    for path in (train_json, checkpoint):
        if not path.is_file():
            raise InputError(f"{path} not found: run `dvc repro train@{name}` first")
    run = json.loads(train_json.read_text())
    if run.get("arch") != arch:
        raise InputError(f"model.arch={arch!r} but {name} was trained as {run.get('arch')!r}: "
                         f"run `dvc repro train@{name}` or restore model.arch")
    return run, checkpoint


def main():
    params, optimizer, seed = matrix_run(__doc__.splitlines()[0])
    name = f"{optimizer}-{seed}"
    run, checkpoint = last_checkpoint(name, params.model.arch)
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
    load_weights(network, checkpoint)
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
