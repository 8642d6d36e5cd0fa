"""Stage evaluate@<optimizer>-<seed>: test accuracy of one run's last and best checkpoints.

Always computes all four variants (last / best epoch x without / with flip TTA), so the
report's choice among them (eval.selection, eval.flip_tta) never re-runs this stage.
Writes evals/<optimizer>-<seed>.json, the four variants' per-image predictions beside it (the report's bootstrap
resamples them) and prints a short table.
"""

import json
from pathlib import Path

from tabulate import tabulate

from imbsam import predictions, registry
from imbsam.device.claims import claim_for
from imbsam.device.target import setup
from stages._common import main_guard, matrix_run, trained_run

SPLIT_DIR = Path("data/split")
EVALS_DIR = Path("evals")
# Last first: the best epoch is often the last one, and then reuses its result.
SELECTIONS = predictions.SELECTIONS


def print_table(name, variants):
    rows = [
        [selection, result["epoch"], variant, *(result[g] for g in ("many", "medium", "few", "all"))]
        for selection, by_variant in variants.items()
        for variant, result in by_variant.items()
    ]
    print(f"{name}: balanced test accuracy (%)")
    print(tabulate(rows, headers=["selection", "epoch", "variant", "many", "medium", "few", "all"],
                   floatfmt=".2f", missingval="n/a"))


def main():
    params, optimizer, seed = matrix_run(__doc__.splitlines()[0])
    arch, batch_size, kernels = params.model.arch, params.eval.batch_size, params.train.kernels
    name = f"{optimizer}-{seed}"
    run, checkpoints = trained_run(name, arch, SELECTIONS)

    info = setup(params.device.target, slot=claim_for(params.device.target))
    # Imported only now: MindSpore must not load before device.setup has set the CPU environment.
    from imbsam.data.loading import load_split
    from imbsam.evaluate import TTA_VARIANTS, load_weights, predict_variants, summarize
    from imbsam.models import create_model

    split = load_split(SPLIT_DIR)
    summary = split["summary"]
    # The loss the run trained with decides its last layer (LDAM's is normalised).
    normalised = registry.module("losses", run.get("loss", "ce")).NORMALISED_HEAD
    network = create_model(arch, num_classes=summary["num_classes"], kernels=kernels, normalised_head=normalised)
    info["kernels"] = network.kernels

    labels = split["test_labels"]
    variants, predicted = {}, {}
    for selection in SELECTIONS:
        epoch = run[f"{selection}_epoch"]
        # The best epoch is often the last one; its checkpoint holds the same weights, so reuse the result.
        if selection == "best" and epoch == run["last_epoch"]:
            variants[selection], predicted[selection] = variants["last"], predicted["last"]
            continue
        load_weights(network, checkpoints[selection])
        predicted[selection] = predict_variants(network, split["test_images"], batch_size)
        # imbsam.evaluate.evaluate_network's scores, from predictions the stage keeps. Not a function there: every
        # train@ and analyze@ depends on imbsam/evaluate.py, and an edit would re-run them all.
        variants[selection] = {
            variant: {"epoch": epoch, "tta": TTA_VARIANTS[variant],
                      **summarize(predicted[selection][variant], labels, summary["groups"], summary["num_classes"])}
            for variant in TTA_VARIANTS}

    EVALS_DIR.mkdir(exist_ok=True)
    record = {
        "optimizer": optimizer,
        "seed": seed,
        "arch": arch,
        "num_classes": summary["num_classes"],
        "test_total": len(labels),
        "device": info,
        "variants": variants,
    }
    predictions.write(EVALS_DIR / f"{name}.predictions.npz", labels, predicted)
    (EVALS_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print_table(name, variants)


if __name__ == "__main__":
    main_guard(main)
