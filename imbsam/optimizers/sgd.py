"""Plain SGD with momentum: the gradient of the mean loss, nothing beyond train.*."""

from imbsam.params import OptimizerParams

LABEL = "SGD"
SOURCE = "SGD with momentum"


class Params(OptimizerParams):
    """Nothing beyond train.*."""


def make_step(parts):
    def step(images, labels):
        loss, (grads,) = parts.gradients(images, labels, parts.uniform(labels))
        parts.update(grads)
        return loss

    return step
