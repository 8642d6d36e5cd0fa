"""SAM's checks, as the ImbSAM authors' code runs SAM."""

import numpy as np

FLOOR = "2(f+b)"


def floor(f, b, tail_free):
    return 2 * (f + b)


def reference(ref, p, stats, x, labels, rho=0.05, bn_update_in_perturbed_pass=True):
    """first_step on the mean loss's gradient, then the mean loss's gradient at w + eps."""
    mean = np.full(len(labels), 1.0 / len(labels))
    losses, grads = ref.forward_backward(p, stats, x, labels, mean)
    moved = stats if bn_update_in_perturbed_pass else dict(stats)
    return losses.mean(), ref.forward_backward(ref.perturbed(p, grads, rho), moved, x, labels, mean)[1]


def torch_gradients(t, net, params, x, y, rho, bn_update_in_perturbed_pass=True):
    mean = t.full(y, 1.0 / len(y), x)
    return t.at_eps(net, params, x, y, mean, t.grads_of(net, params, x, y, mean)[1], rho)
