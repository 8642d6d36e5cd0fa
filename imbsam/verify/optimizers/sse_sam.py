"""SSE-SAM's checks, from its authors' code (its trainval.py's ssesam branch and SSESAM)."""

import numpy as np

FLOOR = "4(f+b)"


def floor(f, b, tail_free):
    # A forward and a backward at w and at w + eps, for the head and then for the tail.
    return 4 * (f + b)


def reference(ref, p, stats, x, labels, head_rho=0.05, tail_rho=0.1, tail_classes=(), head_off_from_step=None,
              step=0):
    """For the head, then the tail, each loss summed over its samples / B: backward at w, compute_and_add_epsilon
    (norm + 1e-16), a forward at w + eps and backward, compute_grad_sum_and_restore_p; a new forward at w before the
    tail's; update() steps on the sum. update_rho sets the head's rho to 0 once the epochs done reach the cut, here
    the step index head_off_from_step."""
    is_tail = np.isin(labels, tail_classes)
    if head_off_from_step is not None and step >= head_off_from_step:
        head_rho = 0.0
    total, mean_loss = {k: 0.0 for k in ref.PARAM_KEYS}, None
    for members, rho in ((~is_tail, head_rho), (is_tail, tail_rho)):
        coef = members / len(labels)
        losses, grads = ref.forward_backward(p, stats, x, labels, coef)
        mean_loss = losses.mean() if mean_loss is None else mean_loss
        at_eps = ref.forward_backward(ref.perturbed(p, grads, rho), stats, x, labels, coef)[1]
        total = {k: total[k] + at_eps[k] for k in ref.PARAM_KEYS}
    return mean_loss, total


def torch_gradients(t, net, params, x, y, head_rho, tail_rho, tail_classes, head_off_from_step, step=0):
    is_tail = t.members(y, tail_classes, x)
    if head_off_from_step is not None and step >= head_off_from_step:
        head_rho = 0.0
    total = None
    for members, rho in ((1 - is_tail, head_rho), (is_tail, tail_rho)):
        grads = t.grads_of(net, params, x, y, members / len(y))[1]
        perturbed = t.at_eps(net, params, x, y, members / len(y), grads, rho)
        total = perturbed if total is None else [a + b for a, b in zip(total, perturbed)]
    return total
