"""SGD's checks."""

import numpy as np

FLOOR = "f+b"


def floor(f, b, tail_free):
    return f + b


def reference(ref, p, stats, x, labels):
    """loss.mean().backward()."""
    losses, grads = ref.forward_backward(p, stats, x, labels, np.full(len(labels), 1.0 / len(labels)))
    return losses.mean(), grads


def torch_gradients(t, net, params, x, y):
    return t.grads_of(net, params, x, y, t.full(y, 1.0 / len(y), x))[1]
