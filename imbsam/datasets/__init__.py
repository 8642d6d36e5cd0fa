"""The datasets, one module per archive format: its URL, checksum, layout and reader.

A dataset module defines NAME, URL, MD5, ARCHIVE (the file name), LAYOUT, NUM_CLASSES, TRAIN_PER_CLASS
(the balanced count the long-tail rule starts from), DEFAULTS (the values of the params.yaml keys set to
`auto`, by dotted key) and read(folder). The long-tail split
(imbsam.data) works on what read() returns, whatever the archive.
"""

from pathlib import Path

from imbsam.datasets import cifar10, cifar100
from imbsam.errors import InputError

DATASETS = {module.NAME: module for module in (cifar100, cifar10)}


def get(name):
    if name not in DATASETS:
        raise InputError(f"data.dataset={name!r} is not one of {', '.join(DATASETS)}")
    return DATASETS[name]


# The download stage's output: one folder whatever the dataset, so that switching datasets leaves no file
# outside DVC's outputs and keeps the other archive (the stage persists it) for switching back.
ARCHIVE_DIR = Path("data/archive")


def archive_path(name):
    """Where the pipeline keeps dataset `name`'s archive, under its official file name."""
    return ARCHIVE_DIR / get(name).ARCHIVE
