"""Stage split: extract the archive, validate it, and write the long-tailed split to data/split."""

import sys
import tempfile
from pathlib import Path

from _common import load_params, main_guard, param

from imbsam.data import (
    PROFILES,
    longtail_counts,
    longtail_indices,
    read_cifar100,
    safe_extract,
    write_split,
)
from imbsam.errors import InputError

ARCHIVE = Path("data/cifar-100-python.tar.gz")
OUT = Path("data/split")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def main():
    params = load_params()
    imb_factor = param(
        params,
        "split.imb_factor",
        check=(lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1], e.g. 0.01 for imbalance factor 100"),
    )
    profile = param(params, "split.profile", choices=PROFILES)
    shuffle_seed = param(
        params, "split.shuffle_seed", check=(lambda v: _is_int(v) and v >= -1, "an integer >= -1 (-1 = file order)")
    )
    many_threshold = param(params, "split.many_threshold", check=(lambda v: _is_int(v) and v >= 0, "an integer >= 0"))
    few_threshold = param(
        params,
        "split.few_threshold",
        check=(
            lambda v: _is_int(v) and 0 <= v <= many_threshold,
            f"an integer in 0..split.many_threshold ({many_threshold})",
        ),
    )
    if not ARCHIVE.is_file():
        raise InputError(f"{ARCHIVE} not found; run `dvc repro download` first")

    # Extracted outside data/split, so nothing but the finished split ever lands in the DVC output.
    with tempfile.TemporaryDirectory(prefix="imbsam-cifar-") as tmp:
        safe_extract(ARCHIVE, tmp)
        data = read_cifar100(tmp)
    if data["synthetic"]:
        print(
            f"warning: {ARCHIVE} is a synthetic archive (imbsam.synthetic): results say nothing about CIFAR-100",
            file=sys.stderr,
        )

    num_classes = len(data["class_names"])
    # The LDAM-DRW rule's maximum is the balanced per-class count: 500 for CIFAR-100.
    counts = longtail_counts(num_classes, len(data["train_labels"]) // num_classes, imb_factor, profile)
    keep = longtail_indices(data["train_labels"], counts, None if shuffle_seed == -1 else shuffle_seed)
    summary = write_split(
        OUT,
        data["train_images"][keep],
        data["train_labels"][keep],
        data["test_images"],
        data["test_labels"],
        data["class_names"],
        imb_factor=imb_factor,
        profile=profile,
        shuffle_seed=None if shuffle_seed == -1 else shuffle_seed,
        many_threshold=many_threshold,
        few_threshold=few_threshold,
        synthetic=data["synthetic"],
    )
    groups = summary["groups"]
    print(
        f"split: imb_factor {imb_factor} ({profile}): {summary['train_total']} train images "
        f"({max(counts)}..{min(counts)} per class), {summary['test_total']} test; "
        f"many/medium/few {len(groups['many'])}/{len(groups['medium'])}/{len(groups['few'])} classes -> {OUT}"
    )


if __name__ == "__main__":
    main_guard(main)
