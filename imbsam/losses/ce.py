"""Cross-entropy, the paper's loss: -log softmax(z)_y."""

from imbsam.params import LossParams

LABEL = "CE"
SOURCE = "cross-entropy, the paper's"
NORMALISED_HEAD = False


class Params(LossParams):
    """Cross-entropy: nothing to set."""


def make_loss(num_classes):
    from imbsam.criteria import CrossEntropy

    return CrossEntropy(num_classes)
