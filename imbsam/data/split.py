"""The long-tailed split of a dataset archive: safe extraction, the long-tail rule, class groups, and the split files
the training reads (imbsam.data.loading).

What an archive holds and how it is read is its dataset's (imbsam/datasets/); nothing here depends on which.
"""

import gzip
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from imbsam import datasets
from imbsam.data.checksum import md5sum
from imbsam.data.loading import SUMMARY_FILE
from imbsam.errors import InputError, one_line
from imbsam.params import PROFILES

_CHUNK = 1 << 20


def longtail_counts(num_classes, max_per_class, imb_factor, profile="exp"):
    """Training images kept per class (the LDAM-DRW rule the paper uses).

    exp: int(max_per_class * imb_factor ** (c / (num_classes - 1))).
    step: the first num_classes // 2 classes keep max_per_class, the rest int(max_per_class * imb_factor).
    """
    if profile not in PROFILES:
        raise InputError(f"split.profile={profile!r} is not one of {', '.join(PROFILES)}")
    if isinstance(imb_factor, bool) or not isinstance(imb_factor, (int, float)) or not 0 < imb_factor <= 1:
        raise InputError(f"split.imb_factor={imb_factor!r} must be a number in (0, 1] (0.01 = imbalance factor 100)")
    if num_classes < 2 or max_per_class < 1:
        raise ValueError(f"need num_classes >= 2 and max_per_class >= 1, got {num_classes}, {max_per_class}")
    if profile == "step":
        head = num_classes // 2
        return [max_per_class] * head + [int(max_per_class * imb_factor)] * (num_classes - head)
    return [int(max_per_class * imb_factor ** (c / (num_classes - 1))) for c in range(num_classes)]


def class_groups(counts, many_threshold=100, few_threshold=20):
    """Classes by training count: "many" > many_threshold, "few" < few_threshold, "medium" otherwise."""
    if few_threshold > many_threshold:
        raise InputError(
            f"split.few_threshold={few_threshold} exceeds split.many_threshold={many_threshold}: "
            "set few_threshold <= many_threshold"
        )
    groups = {"many": [], "medium": [], "few": []}
    for c, count in enumerate(counts):
        if count > many_threshold:
            groups["many"].append(c)
        elif count < few_threshold:
            groups["few"].append(c)
        else:
            groups["medium"].append(c)
    return groups


def _strict_data_filter(member, dest_path):
    # The "data" filter strips a leading "/" and extracts such a member inside dest; a genuine
    # CIFAR archive never has one, so refuse it outright.
    if member.name.startswith("/") or os.path.isabs(member.name):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest_path)


def safe_extract(archive, dest_dir):
    """Extract a .tar.gz into dest_dir, refusing members that would land outside it.

    Needs Python >= 3.11.4 for tarfile's extraction filters.
    """
    redownload = f"delete {archive} and download it again (dvc repro download)"
    try:
        with gzip.open(archive, "rb") as gz, tarfile.open(fileobj=gz, mode="r:") as tar:
            tar.extractall(dest_dir, filter=_strict_data_filter)
            # tarfile stops at its end-of-archive marker (or silently at a damaged header); reading
            # the rest of the stream makes gzip check its CRC and length, which catch corrupt data.
            while gz.read(_CHUNK):
                pass
    except tarfile.FilterError as e:
        raise InputError(f"{archive}: refusing member {e.tarinfo.name!r} ({e}); {redownload}") from e
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise InputError(f"{archive}: truncated or corrupt archive ({one_line(e)}); {redownload}") from e


def longtail_indices(labels, counts, shuffle_seed=None):
    """Indices of the long-tailed subset, grouped by class: the first counts[c] images of class c.

    File order is the paper's rule; with shuffle_seed, each class is shuffled (seeded) first.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    chosen = []
    for c, count in enumerate(counts):
        members = np.flatnonzero(labels == c)
        if len(members) < count:
            raise InputError(
                f"class {c} has {len(members)} training images but the split asks for {count}; "
                "use the full archive or a larger split.imb_factor"
            )
        if rng is not None:
            members = rng.permutation(members)
        chosen.append(members[:count])
    return np.concatenate(chosen).astype(np.int64)


def write_split(
    out_dir,
    train_images,
    train_labels,
    test_images,
    test_labels,
    class_names,
    *,
    imb_factor,
    profile,
    shuffle_seed,
    many_threshold,
    few_threshold,
    synthetic,
    dataset="cifar100",
):
    """Write the four arrays as .npy (NCHW uint8 images, int32 labels) plus summary.json into out_dir.

    Byte-identical for identical inputs. Written into a sibling folder and renamed into place, so an
    interrupted run never leaves a half-written out_dir.
    """
    out_dir = Path(out_dir)
    num_classes = len(class_names)
    arrays = {
        "train_images.npy": np.ascontiguousarray(train_images, dtype=np.uint8),
        "train_labels.npy": np.ascontiguousarray(train_labels, dtype=np.int32),
        "test_images.npy": np.ascontiguousarray(test_images, dtype=np.uint8),
        "test_labels.npy": np.ascontiguousarray(test_labels, dtype=np.int32),
    }
    class_counts = np.bincount(arrays["train_labels.npy"], minlength=num_classes).tolist()
    groups = class_groups(class_counts, many_threshold, few_threshold)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for name, array in arrays.items():
            np.save(partial / name, array)
        summary = {
            "dataset": dataset,
            "imb_factor": imb_factor,
            "profile": profile,
            "shuffle_seed": shuffle_seed,
            "num_classes": num_classes,
            "class_names": list(class_names),
            "class_counts": class_counts,
            "groups": groups,
            "many_threshold": many_threshold,
            "few_threshold": few_threshold,
            "train_total": len(arrays["train_labels.npy"]),
            "test_total": len(arrays["test_labels.npy"]),
            "synthetic": bool(synthetic),
            "md5": {name: md5sum(partial / name) for name in arrays},
        }
        (partial / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        _swap_into_place(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return summary


def _swap_into_place(new, target):
    # rename() cannot replace a non-empty directory, so move the old one aside first.
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def build_split(archive, out_dir, *, imb_factor, profile="exp", shuffle_seed=None, many_threshold=100,
                few_threshold=20, dataset="cifar100"):
    """Extract and validate a dataset archive (imbsam.datasets), then write its long-tailed split to out_dir."""
    # Extracted outside out_dir, so nothing but the finished split ever lands in the DVC output.
    with tempfile.TemporaryDirectory(prefix="imbsam-archive-") as tmp:
        safe_extract(archive, tmp)
        data = datasets.get(dataset).read(tmp)
    num_classes = len(data["class_names"])
    # The LDAM-DRW rule's maximum is the balanced per-class count: 500 for CIFAR-100.
    counts = longtail_counts(num_classes, len(data["train_labels"]) // num_classes, imb_factor, profile)
    keep = longtail_indices(data["train_labels"], counts, shuffle_seed)
    return write_split(
        out_dir,
        data["train_images"][keep],
        data["train_labels"][keep],
        data["test_images"],
        data["test_labels"],
        data["class_names"],
        imb_factor=imb_factor,
        profile=profile,
        shuffle_seed=shuffle_seed,
        many_threshold=many_threshold,
        few_threshold=few_threshold,
        synthetic=data["synthetic"],
        dataset=dataset,
    )
