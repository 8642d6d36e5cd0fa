"""The datasets, one module per archive format: its URL, checksum, layout and reader.

A dataset module defines NAME, URL, MD5, ARCHIVE (the file name), LAYOUT, NUM_CLASSES, TRAIN_PER_CLASS
(the balanced count the long-tail rule starts from) and read(folder). The long-tail split
(imbsam.data) works on what read() returns, whatever the archive.
"""

from imbsam.datasets import cifar100
from imbsam.errors import InputError

DATASETS = {module.NAME: module for module in (cifar100,)}


def get(name):
    if name not in DATASETS:
        raise InputError(f"data.dataset={name!r} is not one of {', '.join(DATASETS)}")
    return DATASETS[name]
