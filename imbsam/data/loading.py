"""Reading the split that imbsam.data.split wrote: what training, evaluation and analysis read."""

import json
from pathlib import Path

import numpy as np

from imbsam.errors import InputError

SPLIT_FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy")
SUMMARY_FILE = "summary.json"


def load_split(folder):
    """The arrays write_split wrote (memory-mapped) and "summary", the parsed summary.json."""
    folder = Path(folder)
    missing = [name for name in (*SPLIT_FILES, SUMMARY_FILE) if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{folder}: split not found (missing {', '.join(missing)}); run `dvc repro split`")
    split = {name.removesuffix(".npy"): np.load(folder / name, mmap_mode="r") for name in SPLIT_FILES}
    split["summary"] = json.loads((folder / SUMMARY_FILE).read_text())
    return split
