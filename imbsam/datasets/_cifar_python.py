"""The CIFAR "python version" format that CIFAR-10 and CIFAR-100 share: Python-2 pickles of dicts with
`data` (uint8, N x 3072: the R, G and B planes of 32x32 images, row-major) and a list of labels.

Reading validates every part, so a damaged or foreign archive stops with the file and the fix.
"""

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imbsam.errors import InputError, one_line

IMAGE_SHAPE = (3, 32, 32)
# The batch_label of imbsam.synthetic's archives starts with it, so the pipeline can tell them apart and warn.
SYNTHETIC_MARK = "synthetic"


@dataclass(frozen=True)
class Layout:
    """Where an archive keeps its batches and which keys hold labels and class names."""

    title: str  # "CIFAR-100", in messages
    root: str  # the archive's top folder
    train: tuple  # batch files, in order
    test: tuple
    meta: str
    label_key: str
    names_key: str
    num_classes: int
    image_bytes: int = 3 * 32 * 32

    def members(self):
        return [f"{self.root}/{name}" for name in (*self.train, *self.test, self.meta)]


class _CifarUnpickler(pickle.Unpickler):
    """Allows only what a CIFAR pickle contains: a pickle can otherwise run any code on load."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR pickle never does")
        return super().find_class(module, name)


def _load_pickle(path, layout):
    if not path.is_file():
        raise InputError(
            f"{path} not found: the archive must hold {', '.join(layout.members())}; "
            "re-download it (dvc repro download)"
        )
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise InputError(f"{path}: not a readable {layout.title} pickle ({one_line(e)}); "
                         "re-download the archive") from e
    if not isinstance(obj, dict):
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a dict; re-download the archive")
    return {_text(k): v for k, v in obj.items()}


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def _read_batch(path, layout):
    batch = _load_pickle(path, layout)
    key = layout.label_key
    missing = [name for name in ("data", key) if name not in batch]
    if missing:
        raise InputError(f"{path}: missing key(s) {', '.join(missing)}; re-download the archive")
    data = batch["data"]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != layout.image_bytes):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise InputError(f"{path}: data is {dtype} with shape {shape}, expected uint8 N x {layout.image_bytes}; "
                         "re-download the archive")
    try:
        labels = np.asarray(batch[key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{path}: {key} are not integers; re-download the archive") from e
    if labels.shape != (len(data),):
        raise InputError(f"{path}: {labels.size} {key} for {len(data)} images; re-download the archive")
    bad = labels[(labels < 0) | (labels >= layout.num_classes)]
    if bad.size:
        label = key.removesuffix("s").replace("_", " ")
        raise InputError(f"{path}: {label} {bad[0]} outside 0..{layout.num_classes - 1}; re-download the archive")
    synthetic = str(_text(batch.get("batch_label", ""))).startswith(SYNTHETIC_MARK)
    return data.reshape(-1, *IMAGE_SHAPE), labels, synthetic


def _read_batches(folder, names, layout):
    parts = [_read_batch(folder / layout.root / name, layout) for name in names]
    return (np.concatenate([images for images, _, _ in parts]), np.concatenate([labels for _, labels, _ in parts]),
            any(synthetic for _, _, synthetic in parts))


def read(folder, layout):
    """Read the archive extracted into folder (which holds layout.root/), validating every part.

    Returns train_images / test_images (N, 3, 32, 32) uint8, train_labels / test_labels int64,
    class_names (layout.num_classes str) and synthetic (True for an imbsam.synthetic archive).
    """
    folder = Path(folder)
    train_images, train_labels, train_synthetic = _read_batches(folder, layout.train, layout)
    test_images, test_labels, test_synthetic = _read_batches(folder, layout.test, layout)
    meta_path = folder / layout.root / layout.meta
    names = _load_pickle(meta_path, layout).get(layout.names_key)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        found = len(names) if isinstance(names, list) else "no"
        raise InputError(f"{meta_path}: {found} {layout.names_key}, expected {layout.num_classes}; "
                         "re-download the archive")
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
        "class_names": [str(_text(name)) for name in names],
        "synthetic": train_synthetic or test_synthetic,
    }
