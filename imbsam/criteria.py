"""The per-sample loss Cells of the losses table (imbsam.losses): loss_fn(logits, labels) -> (B,) losses."""

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from imbsam.losses import LOSSES


class CrossEntropy(nn.Cell):
    """-log softmax(z + offsets)_y: plain cross-entropy without offsets (MindSpore's own, the kernel the paper's
    protocol has always trained with), logit adjustment and balanced softmax with theirs (per class, fixed by
    the split). num_classes: what create_loss gives every loss Cell; this one needs no more than its logits."""

    def __init__(self, num_classes, offsets=None):
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(reduction="none")
        self.offsets = None if offsets is None else Tensor(np.asarray(offsets, dtype=np.float32))

    def construct(self, logits, labels):
        if self.offsets is not None:
            logits = logits + self.offsets
        return self.cross_entropy(logits, labels)

    def start_epoch(self, epoch):
        """Nothing changes with the epoch."""


class LDAM(nn.Cell):
    """LDAM with deferred re-weighting on cosine logits: the true class's cosine lowered by its margin, everything
    times scale, each sample weighted by its class's weight over the batch's mean weight (PyTorch's weighted
    cross-entropy mean, as a per-sample loss). The weights are 1 before epoch weights_from_epoch; `start_epoch`
    sets them from the epoch alone, so a resumed run has the same ones."""

    def __init__(self, num_classes, margins, scale, class_weights, weights_from_epoch):
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(reduction="none")
        self.margins = Tensor(np.asarray(margins, dtype=np.float32))
        self.scale = scale
        self.num_classes = num_classes
        self.drw_weights = np.asarray(class_weights, dtype=np.float32)
        self.weights_from_epoch = weights_from_epoch
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
        weights = self.drw_weights if epoch >= self.weights_from_epoch else np.ones_like(self.drw_weights)
        self.class_weights.set_data(Tensor(weights))


def create_loss(name, num_classes, options):
    """The per-sample loss Cell of `name` (imbsam.losses.LOSSES) with its loss_options."""
    return LOSSES[name].cell_class()(num_classes, **options)
