"""SGD, SAM and ImbSAM train steps with the update of the authors' PyTorch code.

ImbSAM (one step on a batch of B samples, tail classes T, per-sample loss l_i):
    L_h = sum_{i not in T} l_i / B            L_t = tail_loss_scale * sum_{i in T} l_i / B
    g_h = grad L_h(w)        eps = rho * g_t / (||g_t|| + 1e-16) with g_t = grad L_t(w)
    g_t' = grad L_t(w + eps)  (forward on the whole batch at w + eps)
    w <- base_optimizer(w, g_h + g_t')
SAM is the same with L = mean loss in both places. BatchNorm running statistics move
once per forward pass the authors' code runs: once at w, once at w + eps.

Vector arithmetic over all parameters (norm, perturb, restore) runs as one compiled graph
per call; each gradient is one value_and_grad call, run op by op (PyNative) or as a graph
(train.mode), and both modes are tested against an independent reference.
"""

import warnings

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from imbsam.errors import InputError

METHODS = ("sgd", "sam", "imbsam")


def make_optimizer(network, learning_rate, momentum=0.9, weight_decay=0.0, decay_bn=True):
    """SGD with momentum over the trainable parameters.

    decay_bn=True decays every parameter, BatchNorm scale and shift included, as PyTorch's SGD
    in the paper's code does; MindSpore's default (decay_bn=False) skips names with
    "gamma"/"beta". learning_rate: a float, or one value per step (the schedule).
    """
    params = network.trainable_params()
    if decay_bn:
        groups = [{"params": params, "weight_decay": weight_decay}]
    else:
        is_bn = [("gamma" in p.name or "beta" in p.name) for p in params]
        groups = [{"params": [p for p, bn in zip(params, is_bn) if not bn], "weight_decay": weight_decay},
                  {"params": [p for p, bn in zip(params, is_bn) if bn], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    if not np.isscalar(learning_rate):
        learning_rate = Tensor(np.asarray(learning_rate, dtype=np.float32))
    return nn.SGD(groups, learning_rate=learning_rate, momentum=momentum)


class _Perturbation(nn.Cell):
    """w <- w + rho * g / (||g|| + 1e-16), remembering eps so that `restore` undoes it exactly."""

    def __init__(self, weights):
        super().__init__(auto_prefix=False)
        self.weights = weights
        self.eps = weights.clone(prefix="sam_eps", init="zeros")

    @ms.jit
    def perturb(self, grads, rho):
        norm = ops.sqrt(ops.addn([ops.reduce_sum(g * g) for g in grads]))
        scale = rho / (norm + 1e-16)
        for w, e, g in zip(self.weights, self.eps, grads):
            ops.assign(e, g * scale)
            ops.assign_add(w, e)
        return norm

    @ms.jit
    def restore(self):
        for w, e in zip(self.weights, self.eps):
            ops.assign_sub(w, e)
        return True


class _RunningStats(nn.Cell):
    """Snapshot, restore and replay of the BatchNorm running statistics."""

    def __init__(self, network):
        super().__init__(auto_prefix=False)
        stats, keep = [], []
        for _, cell in network.cells_and_names():
            if isinstance(cell, nn.layer.normalization._BatchNorm):
                stats += [cell.moving_mean, cell.moving_variance]
                keep += [1.0 - cell.momentum] * 2  # MindSpore stores the weight of the new batch
        self.stats = ms.ParameterTuple(stats)
        self.saved = self.stats.clone(prefix="saved", init="zeros")
        self.keep = tuple(keep)

    @ms.jit
    def save(self):
        for s, c in zip(self.stats, self.saved):
            ops.assign(c, s)
        return True

    @ms.jit
    def restore(self):
        for s, c in zip(self.stats, self.saved):
            ops.assign(s, c)
        return True

    @ms.jit
    def repeat_last_update(self):
        """Apply the last update r0 -> r1 = k r0 + (1-k) b once more with the same batch statistic b:
        r2 = k r1 + (1-k) b = r1 + k (r1 - r0). Equals a second forward of the same batch at the
        same weights, without running it."""
        for s, c, k in zip(self.stats, self.saved, self.keep):
            ops.assign(s, s + k * (s - c))
        return True


@ms.jit
def _add(grads_a, grads_b):
    return tuple(a + b for a, b in zip(grads_a, grads_b))


def make_train_step(network, loss_fn, optimizer, method, rho=0.05, tail_classes=(), tail_loss_scale=2.0,
                    bn_update_in_perturbed_pass=True):
    """Return step(images, labels) -> loss (mean loss at w, before the update); one call = one update.

    loss_fn: per-sample loss (reduction="none"). bn_update_in_perturbed_pass=False keeps the
    BatchNorm running statistics from moving in the forward pass at w + eps (the paper: they move).
    """
    if method not in METHODS:
        raise InputError(f"unknown optimizer method {method!r}: choose one of {', '.join(METHODS)}")
    if not rho >= 0:
        raise InputError(f"rho={rho!r} must be >= 0")
    weights = optimizer.parameters

    def weighted_loss(images, labels, sample_weights):
        per_sample = loss_fn(network(images), labels)
        return (per_sample * sample_weights).sum(), per_sample

    grad_fn = ms.value_and_grad(weighted_loss, None, weights, has_aux=True)
    perturbation = _Perturbation(weights) if method != "sgd" else None
    stats = _RunningStats(network)
    rho_tensor = Tensor(rho, ms.float32)

    def sgd_step(images, labels):
        uniform = ops.full(labels.shape, 1.0 / labels.shape[0], dtype=ms.float32)
        (_, per_sample), grads = grad_fn(images, labels, uniform)
        optimizer(grads)
        return per_sample.mean()

    def perturbed_gradient(images, labels, sample_weights, grads_at_w):
        perturbation.perturb(ms.mutable(grads_at_w), rho_tensor)
        if not bn_update_in_perturbed_pass:
            stats.save()
        _, grads = grad_fn(images, labels, sample_weights)
        if not bn_update_in_perturbed_pass:
            stats.restore()
        perturbation.restore()
        return grads

    def sam_step(images, labels):
        uniform = ops.full(labels.shape, 1.0 / labels.shape[0], dtype=ms.float32)
        (_, per_sample), grads = grad_fn(images, labels, uniform)
        optimizer(perturbed_gradient(images, labels, uniform, grads))
        return per_sample.mean()

    tail_classes = np.asarray(sorted(tail_classes), dtype=np.int64)

    def imbsam_step(images, labels):
        # Which samples are tail is a host-side decision on labels the host just produced.
        labels_np = labels.asnumpy() if isinstance(labels, Tensor) else np.asarray(labels)
        is_tail = np.isin(labels_np, tail_classes)
        batch = len(labels_np)
        head_weights = Tensor(np.where(is_tail, 0.0, 1.0 / batch).astype(np.float32))
        tail_free = not is_tail.any()
        replay = tail_free and bn_update_in_perturbed_pass
        if replay:
            stats.save()
        (_, per_sample), head_grads = grad_fn(images, labels, head_weights)
        if tail_free:
            # eps = 0 and g_t' = 0: the update is SGD on L_h. The authors' code still runs a forward
            # at w + 0, moving the running statistics a second time with this batch.
            if replay:
                stats.repeat_last_update()
            optimizer(head_grads)
            return per_sample.mean()
        tail_weights = Tensor(np.where(is_tail, tail_loss_scale / batch, 0.0).astype(np.float32))
        # The reference computes g_h and g_t from one forward at w: undo this second one's statistics.
        stats.save()
        _, tail_grads = grad_fn(images, labels, tail_weights)
        stats.restore()
        tail_grads_perturbed = perturbed_gradient(images, labels, tail_weights, tail_grads)
        optimizer(_add(ms.mutable(head_grads), ms.mutable(tail_grads_perturbed)))
        return per_sample.mean()

    if method == "imbsam" and not len(tail_classes):
        warnings.warn("ImbSAM with no tail classes (raise imbsam.eta): every step equals SGD", stacklevel=2)
    update = {"sgd": sgd_step, "sam": sam_step, "imbsam": imbsam_step}[method]

    def step(images, labels):
        if not network.training:  # an evaluation between steps leaves the network in eval mode
            network.set_train(True)
        return update(images, labels)

    return step
