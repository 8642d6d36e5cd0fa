"""Stage split: extract the archive, validate it, and write the long-tailed split to data/split."""

import sys
from pathlib import Path

from imbsam import datasets
from imbsam.data.split import build_split
from imbsam.errors import InputError
from stages._common import load_params, main_guard

OUT = Path("data/split")


def main():
    params = load_params(groups=())
    split, dataset = params.split, params.data.dataset
    archive = datasets.archive_path(dataset)
    if not archive.is_file():
        raise InputError(f"{archive} not found; run `dvc repro download` first")

    summary = build_split(archive, OUT, dataset=dataset, imb_factor=split.imb_factor, profile=split.profile,
                          shuffle_seed=None if split.shuffle_seed == -1 else split.shuffle_seed,
                          many_threshold=split.many_threshold, few_threshold=split.few_threshold)
    if summary["synthetic"]:
        print(
            f"warning: {archive} is a synthetic archive (imbsam.synthetic): results say nothing about "
            f"{datasets.get(dataset).LAYOUT.title}",
            file=sys.stderr,
        )
    counts = summary["class_counts"]
    groups = summary["groups"]
    print(
        f"split: imb_factor {split.imb_factor} ({split.profile}): {summary['train_total']} train images "
        f"({max(counts)}..{min(counts)} per class), {summary['test_total']} test; "
        f"many/medium/few {len(groups['many'])}/{len(groups['medium'])}/{len(groups['few'])} classes -> {OUT}"
    )


if __name__ == "__main__":
    main_guard(main)
