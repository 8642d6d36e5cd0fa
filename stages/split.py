"""Stage split: extract the archive, validate it, and write the long-tailed split to data/split."""

import sys
from pathlib import Path

from _common import is_int, is_number, load_params, main_guard, param

from imbsam.data import PROFILES, build_split
from imbsam.errors import InputError

ARCHIVE = Path("data/cifar-100-python.tar.gz")
OUT = Path("data/split")


def main():
    params = load_params()
    imb_factor = param(
        params,
        "split.imb_factor",
        check=(lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1], e.g. 0.01 for imbalance factor 100"),
    )
    profile = param(params, "split.profile", choices=PROFILES)
    shuffle_seed = param(
        params, "split.shuffle_seed", check=(lambda v: is_int(v) and v >= -1, "an integer >= -1 (-1 = file order)")
    )
    many_threshold = param(params, "split.many_threshold", check=(lambda v: is_int(v) and v >= 0, "an integer >= 0"))
    few_threshold = param(
        params,
        "split.few_threshold",
        check=(
            lambda v: is_int(v) and 0 <= v <= many_threshold,
            f"an integer in 0..split.many_threshold ({many_threshold})",
        ),
    )
    if not ARCHIVE.is_file():
        raise InputError(f"{ARCHIVE} not found; run `dvc repro download` first")

    summary = build_split(ARCHIVE, OUT, imb_factor=imb_factor, profile=profile,
                          shuffle_seed=None if shuffle_seed == -1 else shuffle_seed,
                          many_threshold=many_threshold, few_threshold=few_threshold)
    if summary["synthetic"]:
        print(
            f"warning: {ARCHIVE} is a synthetic archive (imbsam.synthetic): results say nothing about CIFAR-100",
            file=sys.stderr,
        )
    counts = summary["class_counts"]
    groups = summary["groups"]
    print(
        f"split: imb_factor {imb_factor} ({profile}): {summary['train_total']} train images "
        f"({max(counts)}..{min(counts)} per class), {summary['test_total']} test; "
        f"many/medium/few {len(groups['many'])}/{len(groups['medium'])}/{len(groups['few'])} classes -> {OUT}"
    )


if __name__ == "__main__":
    main_guard(main)
