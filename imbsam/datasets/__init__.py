"""The datasets: what `data.dataset` names, one module each, found by name (imbsam.registry).

A dataset module defines NAME, URL, MD5, ARCHIVE (the file name), LAYOUT, NUM_CLASSES, TRAIN_PER_CLASS
(the balanced count the long-tail rule starts from), DEFAULTS (the values of the params.yaml keys set to
`auto`, by dotted key) and read(folder). The long-tail split (imbsam.data.split) works on what read() returns,
whatever the archive. A module whose name starts with "_" is a format the datasets share, not a dataset.
"""

from pathlib import Path

from imbsam import registry

# The download stage's output: one folder whatever the dataset, so that switching datasets leaves no file
# outside DVC's outputs and keeps the other archive (the stage persists it) for switching back.
ARCHIVE_DIR = Path("data/archive")


def get(name):
    """The module of dataset `name`; InputError naming the known ones for another name."""
    return registry.module("datasets", name)


def archive_path(name):
    """Where the pipeline keeps dataset `name`'s archive, under its official file name."""
    return ARCHIVE_DIR / get(name).ARCHIVE
