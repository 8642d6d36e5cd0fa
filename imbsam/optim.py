"""SGD, SAM and ImbSAM train steps with the update of the authors' PyTorch code.

ImbSAM (one step on a batch of B samples, tail classes T, per-sample loss l_i):
    L_h = sum_{i not in T} l_i / B            L_t = tail_loss_scale * sum_{i in T} l_i / B
    g_h = grad L_h(w)        eps = rho * g_t / (||g_t|| + 1e-16) with g_t = grad L_t(w)
    g_t' = grad L_t(w + eps)  (forward on the whole batch at w + eps)
    w <- base_optimizer(w, g_h + g_t')
SAM is the same with L = mean loss in both places. BatchNorm running statistics move
once per forward pass the authors' code runs: once at w, once at w + eps.

By default a step is one compiled graph (ImbSAM has two: batches with and without tail
samples), in which g_h and g_t are two backward passes of one forward at w. mode="pynative" runs it
op by op instead, for debugging; there a backward pass consumes its forward, so g_t takes a second
forward whose running-statistics update is undone. Both are tested against an independent reference.
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
    def restore(self, after):
        """w <- w - eps once `after` is computed: the gradient at w + eps. In one graph, nothing else
        orders the two, and a backward pass that reads a weight (BatchNorm's gamma) after the restore
        returns a gradient taken partly at w (MindSpore 2.10, tests/test_optim_equivalence.py)."""
        for w, e in zip(self.weights, self.eps):
            ops.assign_sub(w, ops.depend(e, after))
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


class _TrainStep(nn.Cell):
    """One update of `method`, written once for both modes (see the module docstring)."""

    def __init__(self, network, loss_fn, optimizer, method, rho, bn_update_in_perturbed_pass):
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.method = method
        self.perturbation = _Perturbation(self.weights) if method != "sgd" else None
        self.stats = _RunningStats(network)
        self.rho = Tensor(rho, ms.float32)
        self.bn_update_in_perturbed_pass = bn_update_in_perturbed_pass

    def per_sample_loss(self, images, labels):
        return self.loss_fn(self.network(images), labels)

    def weighted_loss(self, images, labels, sample_weights):
        return (self.per_sample_loss(images, labels) * sample_weights).sum()

    def gradient(self, images, labels, sample_weights):
        """grad of sum_i sample_weights_i * l_i: one forward and one backward pass."""
        return ms.grad(self.weighted_loss, None, self.weights)(images, labels, sample_weights)

    def perturbed_gradient(self, images, labels, sample_weights, grads_at_w):
        self.perturbation.perturb(ms.mutable(grads_at_w), self.rho)
        if not self.bn_update_in_perturbed_pass:
            self.stats.save()
        grads = self.gradient(images, labels, sample_weights)
        if not self.bn_update_in_perturbed_pass:
            self.stats.restore()
        self.perturbation.restore(ms.mutable(grads))
        return grads

    def construct(self, images, labels, sample_weights, tail_weights, tail_free, graph):
        """sample_weights: 1/B for sgd and sam, the head weights for ImbSAM. tail_free, graph: Python
        bools (constants of the compiled graph): a batch without tail samples; one graph for the step."""
        # ImbSAM on a tail-free batch: eps = 0 and g_t' = 0, so the update is SGD on L_h. The authors' code
        # still runs a forward at w + 0, moving the running statistics a second time with this batch.
        replay = self.method == "imbsam" and tail_free and self.bn_update_in_perturbed_pass
        if replay:
            self.stats.save()
        per_sample, backward = ms.vjp(self.per_sample_loss, images, labels, weights=self.weights)
        grads = backward(sample_weights)[1]
        if self.method == "sam":
            grads = self.perturbed_gradient(images, labels, sample_weights, grads)
        elif self.method == "imbsam" and not tail_free:
            if graph:
                # Ordered after g_h: both backward passes read the weights at w, before the perturbation.
                tail_grads = backward(ops.depend(tail_weights, grads))[1]
            else:
                # Op by op, a backward pass consumes its forward: run a second one and undo its
                # running-statistics update, as if both gradients came from one forward.
                self.stats.save()
                tail_grads = self.gradient(images, labels, tail_weights)
                self.stats.restore()
            grads = _add(ms.mutable(grads), ms.mutable(self.perturbed_gradient(images, labels, tail_weights,
                                                                               tail_grads)))
        if replay:
            self.stats.repeat_last_update()
        self.optimizer(grads)
        return per_sample.mean()


STEP_MODES = ("graph", "pynative")


def make_train_step(network, loss_fn, optimizer, method, rho=0.05, tail_classes=(), tail_loss_scale=2.0,
                    bn_update_in_perturbed_pass=True, mode="graph"):
    """Return step(images, labels) -> loss (mean loss at w, before the update); one call = one update.

    loss_fn: per-sample loss (reduction="none"). bn_update_in_perturbed_pass=False keeps the
    BatchNorm running statistics from moving in the forward pass at w + eps (the paper: they move).
    mode: "graph" runs each step as one compiled graph, "pynative" op by op, whatever the context's mode.
    """
    if method not in METHODS:
        raise InputError(f"unknown optimizer method {method!r}: choose one of {', '.join(METHODS)}")
    if not rho >= 0:
        raise InputError(f"rho={rho!r} must be >= 0")
    if mode not in STEP_MODES:
        raise InputError(f"train step mode={mode!r} is not one of {', '.join(STEP_MODES)}")
    train_step = _TrainStep(network, loss_fn, optimizer, method, rho, bn_update_in_perturbed_pass)
    tail_classes = np.asarray(sorted(tail_classes), dtype=np.int64)
    if method == "imbsam" and not len(tail_classes):
        warnings.warn("ImbSAM with no tail classes (raise imbsam.eta): every step equals SGD", stacklevel=2)

    context_mode = ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE

    def run(images, labels, sample_weights, tail_weights, tail_free):
        # The context's mode is switched for the call instead of wrapping the Cell in ms.jit: called in a
        # graph-mode context, ResNet-32's SGD step took 430 ms on the CPU; under ms.jit, 1000-1250 ms.
        previous = ms.get_context("mode")
        ms.set_context(mode=context_mode)
        try:
            return train_step(images, labels, sample_weights, tail_weights, tail_free, mode == "graph")
        finally:
            ms.set_context(mode=previous)

    def step(images, labels):
        if not network.training:  # an evaluation between steps leaves the network in eval mode
            network.set_train(True)
        if method != "imbsam":
            uniform = Tensor(np.full(labels.shape[0], 1.0 / labels.shape[0], dtype=np.float32))
            return run(images, labels, uniform, uniform, False)
        # Which samples are tail is a host-side decision on labels the host just produced.
        labels_np = labels.asnumpy() if isinstance(labels, Tensor) else np.asarray(labels)
        is_tail = np.isin(labels_np, tail_classes)
        batch = len(labels_np)
        head_weights = Tensor(np.where(is_tail, 0.0, 1.0 / batch).astype(np.float32))
        tail_weights = Tensor(np.where(is_tail, tail_loss_scale / batch, 0.0).astype(np.float32))
        return run(images, labels, head_weights, tail_weights, bool(not is_tail.any()))

    return step
