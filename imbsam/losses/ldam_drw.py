"""LDAM with deferred re-weighting (Cao et al., NeurIPS 2019), as kaidic/LDAM-DRW's code has it.

The network's head is normalised (cosines of the unit feature and unit class weights); the true class's cosine
is lowered by m_y = C / n_y ** (1/4), C such that the largest is max_margin, and everything is multiplied by
scale. After drw_after epochs each sample weighs w_y * B / sum_batch w (PyTorch's weighted mean, as a per-sample
loss), w_k = (1 - beta) / (1 - beta ** n_k) normalised to sum to the number of classes; before it every w_k is 1.
"""

import numpy as np
from pydantic import Field

from imbsam.params import LossParams

LABEL = "LDAM-DRW"
SOURCE = "Cao et al., NeurIPS 2019"
NORMALISED_HEAD = True


class Params(LossParams):
    max_margin: float = Field(0.5, gt=0, description="the largest class margin (the rarest class's), LDAM's 0.5")
    scale: float = Field(30.0, gt=0, description="s, the cosines' factor, LDAM's 30")
    drw_after: int = Field(160, ge=0, description="epochs before re-weighting starts (LDAM-DRW's 160 of 200)")
    beta: float = Field(0.9999, ge=0, lt=1, description="the effective number's beta of the re-weighting")

    def loss_options(self, class_counts):
        counts = np.asarray(class_counts, dtype=np.float64)
        margins = counts ** -0.25
        weights = (1 - self.beta) / (1 - self.beta ** counts)
        return {"margins": (margins * self.max_margin / margins.max()).tolist(), "scale": self.scale,
                "class_weights": (weights / weights.sum() * len(counts)).tolist(), "weights_from_epoch":
                self.drw_after + 1}


def make_loss(num_classes, margins, scale, class_weights, weights_from_epoch):
    """The class is defined here so that validating the group loads no MindSpore."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, ops

    from imbsam.criteria import CrossEntropy

    class LDAM(CrossEntropy):
        """The class weights are 1 before epoch weights_from_epoch; start_epoch sets them from the epoch alone, so
        a resumed run has the same ones."""

        def __init__(self):
            super().__init__(num_classes)
            self.margins = Tensor(np.asarray(margins, dtype=np.float32))
            self.scale = scale
            self.drw_weights = np.asarray(class_weights, dtype=np.float32)
            self.class_weights = Parameter(Tensor(np.ones(num_classes, dtype=np.float32)), name="ldam_class_weights",
                                           requires_grad=False)

        def construct(self, logits, labels):
            one_hot = ops.one_hot(labels.astype(ms.int32), self.num_classes, Tensor(1.0, ms.float32),
                                  Tensor(0.0, ms.float32))
            shifted = self.scale * (logits - one_hot * self.margins[labels].expand_dims(1))
            losses = self.cross_entropy(shifted, labels)
            weights = self.class_weights[labels]
            return losses * weights * (weights.shape[0] / weights.sum())

        def start_epoch(self, epoch):
            """epoch: 1-based."""
            weights = self.drw_weights if epoch >= weights_from_epoch else np.ones_like(self.drw_weights)
            self.class_weights.set_data(Tensor(weights))

    return LDAM()
