"""A run's per-image test predictions, as the evaluate stage keeps them and the report's bootstrap reads them:
evals/<optimizer>-<seed>.predictions.npz, int16 arrays `labels`, `last`, `last_tta`, `best`, `best_tta` (the
predicted classes of the last and the best epoch, without and with flip TTA), in the split's test order."""

import numpy as np

from imbsam.files import atomic_path

SELECTIONS = ("last", "best")


def key(selection, flip_tta):
    """The array of a protocol: "last", "last_tta", "best" or "best_tta"."""
    return f"{selection}{'_tta' if flip_tta else ''}"


def write(path, labels, predicted):
    """predicted: {selection: {"plain": classes, "flip_tta": classes}} (imbsam.evaluate.predict_variants')."""
    arrays = {key(selection, variant == "flip_tta"): np.asarray(classes, dtype=np.int16)
              for selection, by_variant in predicted.items() for variant, classes in by_variant.items()}
    with atomic_path(path) as partial:
        np.savez_compressed(partial, labels=np.asarray(labels, dtype=np.int16), **arrays)


def read(path):
    """{array name: array} of a predictions file."""
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}
