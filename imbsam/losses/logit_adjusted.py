"""Logit-adjusted cross-entropy (Menon et al., ICLR 2021): cross-entropy of z + tau * log pi, pi_k = n_k / N the
training split's class prior."""

import numpy as np
from pydantic import Field

from imbsam.params import LossParams

LABEL = "LA"
SOURCE = "Menon et al., ICLR 2021"
NORMALISED_HEAD = False


class Params(LossParams):
    tau: float = Field(1.0, ge=0, description="the prior's weight: logits + tau * log(n_k / N) (1: Menon et al.'s "
                       "and Focal-SAM's scripts)")

    def loss_options(self, class_counts):
        return {"offsets": (self.tau * np.log(np.asarray(class_counts) / np.sum(class_counts))).tolist()}


def make_loss(num_classes, offsets):
    from imbsam.criteria import CrossEntropy

    return CrossEntropy(num_classes, offsets)
