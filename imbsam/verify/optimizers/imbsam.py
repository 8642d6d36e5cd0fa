"""ImbSAM's checks, from its authors' code."""

import numpy as np

FLOOR = "f+b on a tail-free batch and 2f+3b otherwise"


def floor(f, b, tail_free):
    # A batch with a tail sample: one forward at w for the head and tail gradients, one at w + eps.
    return tail_free * (f + b) + (1 - tail_free) * (2 * f + 3 * b)


def reference(ref, p, stats, x, labels, rho=0.05, tail_classes=(), tail_loss_scale=2.0,
              bn_update_in_perturbed_pass=True):
    """Head loss backward at w; tail loss (times tail_loss_scale) backward at w, first_step, tail loss backward at
    w + eps; the base optimizer steps on the sum. With no tail sample in the batch g_t = 0, eps = 0, and the second
    forward runs at w."""
    is_tail = np.isin(labels, tail_classes)
    head = np.where(is_tail, 0.0, 1.0) / len(labels)
    tail = np.where(is_tail, tail_loss_scale, 0.0) / len(labels)
    losses, cache = ref.forward(p, x, labels)
    ref.update_running_stats(stats, cache)
    head_grads, tail_grads = ref.backward(p, cache, head), ref.backward(p, cache, tail)
    moved = stats if bn_update_in_perturbed_pass else dict(stats)
    perturbed_tail = ref.forward_backward(ref.perturbed(p, tail_grads, rho), moved, x, labels, tail)[1]
    return losses.mean(), {k: head_grads[k] + perturbed_tail[k] for k in ref.PARAM_KEYS}


def torch_gradients(t, net, params, x, y, rho, tail_classes, tail_loss_scale, bn_update_in_perturbed_pass=True):
    is_tail = t.members(y, tail_classes, x)
    head, tail = (1 - is_tail) / len(y), tail_loss_scale * is_tail / len(y)
    head_grads, tail_grads = t.two_at_w(net, params, x, y, head, tail)
    return [a + b for a, b in zip(head_grads, t.at_eps(net, params, x, y, tail, tail_grads, rho))]
