"""Focal-SAM's checks, from its authors' code (focal_sam_step, FocalSAM)."""

import numpy as np

FLOOR = "2f+3b"


def floor(f, b, tail_free):
    # One forward at w for the clean and the focal gradients, one at w + eps.
    return 2 * f + 3 * b


def reference(ref, p, stats, x, labels, rho=0.3, class_weights=(), adaptive=False):
    """With c = class_weights[y], backward of sum (1 - c) l / B at w (first_step keeps it), backward of sum c l / B
    on the same graph, second_step to w + eps (norm + 1e-12), a forward there, backward of sum c l / B, third_step
    back to w adding the kept gradient."""
    c = np.asarray(class_weights)[labels]
    losses, cache = ref.forward(p, x, labels)
    ref.update_running_stats(stats, cache)
    clean, focal = ref.backward(p, cache, (1.0 - c) / len(labels)), ref.backward(p, cache, c / len(labels))
    at_eps = ref.forward_backward(ref.perturbed(p, focal, rho, 1e-12, adaptive), stats, x, labels,
                                  c / len(labels))[1]
    return losses.mean(), {k: clean[k] + at_eps[k] for k in ref.PARAM_KEYS}


def torch_gradients(t, net, params, x, y, rho, class_weights, adaptive):
    c = t.torch.tensor(class_weights, dtype=x.dtype)[y]
    clean, focal = t.two_at_w(net, params, x, y, (1 - c) / len(y), c / len(y))
    perturbed = t.at_eps(net, params, x, y, c / len(y), focal, rho, 1e-12, adaptive)
    return [a + b for a, b in zip(clean, perturbed)]
