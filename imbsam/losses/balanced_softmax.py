"""Balanced softmax (Ren et al., NeurIPS 2020): cross-entropy of z + log n, n_k the training split's class
counts."""

import numpy as np

from imbsam.params import LossParams

LABEL = "BS"
SOURCE = "Ren et al., NeurIPS 2020"
NORMALISED_HEAD = False


class Params(LossParams):
    """logits + log n_k: nothing to set."""

    def loss_options(self, class_counts):
        return {"offsets": np.log(np.asarray(class_counts, dtype=np.float64)).tolist()}


def make_loss(num_classes, offsets):
    from imbsam.criteria import CrossEntropy

    return CrossEntropy(num_classes, offsets)
