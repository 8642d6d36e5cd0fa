"""The per-sample loss Cells' common part, and a loss built by name (imbsam/losses/<name>.py):
loss_fn(logits, labels) -> (B,) losses."""

import numpy as np
from mindspore import Tensor, nn

from imbsam import registry


class CrossEntropy(nn.Cell):
    """-log softmax(z + offsets)_y: plain cross-entropy without offsets (MindSpore's own, the kernel the paper's
    protocol has always trained with), logit adjustment and balanced softmax with theirs (per class, fixed by
    the split)."""

    def __init__(self, num_classes, offsets=None):
        super().__init__()
        self.num_classes = num_classes
        self.cross_entropy = nn.CrossEntropyLoss(reduction="none")
        self.offsets = None if offsets is None else Tensor(np.asarray(offsets, dtype=np.float32))

    def construct(self, logits, labels):
        if self.offsets is not None:
            logits = logits + self.offsets
        return self.cross_entropy(logits, labels)

    def start_epoch(self, epoch):
        """Nothing changes with the epoch."""


def create_loss(name, num_classes, options):
    """The per-sample loss Cell of loss `name` with its loss_options."""
    return registry.module("losses", name).make_loss(num_classes, **options)
