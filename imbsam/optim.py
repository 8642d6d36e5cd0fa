"""SGD, SAM and ImbSAM train steps with the update of the authors' PyTorch code.

ImbSAM (one step on a batch of B samples, tail classes T, per-sample loss l_i):
    L_h = sum_{i not in T} l_i / B            L_t = tail_loss_scale * sum_{i in T} l_i / B
    g_h = grad L_h(w)        eps = rho * g_t / (||g_t|| + 1e-16) with g_t = grad L_t(w)
    g_t' = grad L_t(w + eps)  (forward on the whole batch at w + eps)
    w <- base_optimizer(w, g_h + g_t')
SAM is the same with L = mean loss in both places. BatchNorm running statistics move
once per forward pass the authors' code runs: once at w, once at w + eps.

By default each piece of a step runs compiled: the gradients (one forward pass at w and one
backward pass per loss: ImbSAM's g_h and g_t share the forward), the perturbation, and the update
(undo the perturbation, then the base optimizer). The gradient graph is shared by the passes at w
and at w + eps and by every kind of batch, which keeps memory and compile time down.
mode="pynative" runs the same pieces op by op, for debugging; there a backward pass consumes its
forward, so g_t takes a second forward whose running-statistics update is undone. Both modes are
tested against an independent reference.
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


class _Gradients(nn.Cell):
    """The mean loss at the current weights and the gradients of weighted sums of the per-sample losses.

    One forward pass, then one backward pass per weight vector given (graph mode). Compiled once per
    number of weight vectors and shared by every kind of step: each copy of the network's layers in a
    compiled graph holds its own kernels and their scratch memory, so fewer copies is less memory.
    """

    def __init__(self, network, loss_fn, weights):
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss_fn = loss_fn
        self.weights = weights

    def per_sample_loss(self, images, labels):
        return self.loss_fn(self.network(images), labels)

    def construct(self, images, labels, sample_weights):
        per_sample, backward = ms.vjp(self.per_sample_loss, images, labels, weights=self.weights)
        grads = (backward(sample_weights[0])[1],)
        if len(sample_weights) == 2:
            # After the first backward pass, so that the intermediates of the two need not coexist.
            grads += (backward(ops.depend(sample_weights[1], grads[0]))[1],)
        return per_sample.mean(), grads


# The per-parameter arithmetic goes through HyperMap: written as Python loops, the same few ops per
# parameter took 4-5x longer to compile (ResNet-34's restore, sum and optimizer step: 10.9 s against 2.4 s).
_hyper_map = ops.HyperMap()
_squared_sum = ops.MultitypeFuncGraph("squared_sum")
_add_scaled = ops.MultitypeFuncGraph("add_scaled")
_add = ops.MultitypeFuncGraph("add")
_replay = ops.MultitypeFuncGraph("replay")


@_squared_sum.register("Tensor")
def _(g):
    return ops.reduce_sum(g * g)


@_add_scaled.register("Tensor", "Tensor", "Tensor")
def _(scale, w, g):
    """w <- w + g * scale. With -scale it subtracts the very same g * scale: IEEE negation is exact."""
    return ops.assign_add(w, g * scale)


@_add.register("Tensor", "Tensor")
def _(a, b):
    return a + b


@_replay.register("Tensor", "Tensor", "Tensor")
def _(keep, stat, saved):
    return ops.assign(stat, stat + keep * (stat - saved))


class _Perturb(nn.Cell):
    """w <- w + eps, eps = rho * g / (||g|| + 1e-16); returns the scale, from which _Update recomputes
    the same eps, bit for bit, to subtract (w + eps - eps, as in the authors' code), so no copy is kept."""

    def __init__(self, weights):
        super().__init__(auto_prefix=False)
        self.weights = weights

    def construct(self, grads, rho):
        scale = rho / (ops.sqrt(ops.addn(_hyper_map(_squared_sum, grads))) + 1e-16)
        _hyper_map(ops.partial(_add_scaled, scale), self.weights, grads)
        return scale


class _Update(nn.Cell):
    """Undo a perturbation (w <- w - scale * perturbed_by), then one optimizer step on the gradients given."""

    def __init__(self, optimizer):
        super().__init__(auto_prefix=False)
        self.optimizer = optimizer
        self.weights = optimizer.parameters

    def construct(self, grads, more_grads, perturbed_by, scale):
        """more_grads, perturbed_by: () for none (a constant of the compiled graph); scale: that of the
        perturbation."""
        if perturbed_by:
            _hyper_map(ops.partial(_add_scaled, -scale), self.weights, perturbed_by)
        if more_grads:
            grads = _hyper_map(_add, grads, more_grads)
        self.optimizer(grads)
        return scale


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
        self.keep = tuple(Tensor(k, ms.float32) for k in keep)

    def construct(self, action):
        """action: "save", "restore", or "replay": apply the last update r0 -> r1 = k r0 + (1-k) b once
        more with the same batch statistic b, r2 = k r1 + (1-k) b = r1 + k (r1 - r0), which equals a
        second forward of the same batch at the same weights, without running it."""
        if action == "save":
            _hyper_map(ops.assign, self.saved, self.stats)
        elif action == "restore":
            _hyper_map(ops.assign, self.stats, self.saved)
        else:
            _hyper_map(_replay, self.keep, self.stats, self.saved)
        return True


STEP_MODES = ("graph", "pynative")


def make_train_step(network, loss_fn, optimizer, method, rho=0.05, tail_classes=(), tail_loss_scale=2.0,
                    bn_update_in_perturbed_pass=True, mode="graph"):
    """Return step(images, labels) -> loss (mean loss at w, before the update); one call = one update.

    loss_fn: per-sample loss (reduction="none"). bn_update_in_perturbed_pass=False keeps the
    BatchNorm running statistics from moving in the forward pass at w + eps (the paper: they move).
    mode: "graph" runs each piece of the step compiled, "pynative" op by op, whatever the context's mode.
    """
    if method not in METHODS:
        raise InputError(f"unknown optimizer method {method!r}: choose one of {', '.join(METHODS)}")
    if not rho >= 0:
        raise InputError(f"rho={rho!r} must be >= 0")
    if mode not in STEP_MODES:
        raise InputError(f"train step mode={mode!r} is not one of {', '.join(STEP_MODES)}")
    tail_classes = np.asarray(sorted(tail_classes), dtype=np.int64)
    if method == "imbsam" and not len(tail_classes):
        warnings.warn("ImbSAM with no tail classes (raise imbsam.eta): every step equals SGD", stacklevel=2)

    weights = optimizer.parameters
    gradients, perturb, update = _Gradients(network, loss_fn, weights), _Perturb(weights), _Update(optimizer)
    stats = _RunningStats(network)
    rho = Tensor(rho, ms.float32)
    context_mode = ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE

    def head_and_tail(images, labels, head_weights, tail_weights):
        if mode == "graph":
            return gradients(images, labels, ms.mutable((head_weights, tail_weights)))
        # Op by op, a backward pass consumes its forward: run a second one and undo its running-statistics
        # update, as if both gradients came from one forward.
        loss, (head,) = gradients(images, labels, ms.mutable((head_weights,)))
        stats("save")
        _, (tail,) = gradients(images, labels, ms.mutable((tail_weights,)))
        stats("restore")
        return loss, (head, tail)

    def perturbed(images, labels, sample_weights, grads_at_w):
        """The gradient at w + eps, and the scale that undoes eps."""
        scale = perturb(ms.mutable(grads_at_w), rho)
        if not bn_update_in_perturbed_pass:
            stats("save")
        _, (grads,) = gradients(images, labels, ms.mutable((sample_weights,)))
        if not bn_update_in_perturbed_pass:
            stats("restore")
        return grads, scale

    def apply(grads, more_grads=(), perturbed_by=(), scale=rho):
        """Undo w + scale * perturbed_by (if given), then step on grads (+ more_grads)."""
        # Tuples of tensors enter a graph as ms.mutable: as plain tuples, each new one recompiles it.
        update(*(ms.mutable(t) if t else t for t in (grads, more_grads, perturbed_by)), scale)

    def sgd(images, labels, sample_weights):
        loss, (grads,) = gradients(images, labels, ms.mutable((sample_weights,)))
        apply(grads)
        return loss

    def sam(images, labels, sample_weights):
        loss, (grads,) = gradients(images, labels, ms.mutable((sample_weights,)))
        perturbed_grads, scale = perturbed(images, labels, sample_weights, grads)
        apply(perturbed_grads, perturbed_by=grads, scale=scale)
        return loss

    def imbsam(images, labels, head_weights, tail_weights, tail_free):
        if tail_free:
            # eps = 0 and g_t' = 0, so the update is SGD on L_h. The authors' code still runs a forward at
            # w + 0, moving the running statistics a second time with this batch: replayed, not run.
            if not bn_update_in_perturbed_pass:
                return sgd(images, labels, head_weights)
            stats("save")
            loss = sgd(images, labels, head_weights)
            stats("replay")
            return loss
        loss, (head, tail) = head_and_tail(images, labels, head_weights, tail_weights)
        perturbed_tail, scale = perturbed(images, labels, tail_weights, tail)
        apply(perturbed_tail, head, perturbed_by=tail, scale=scale)
        return loss

    def step(images, labels):
        if not network.training:  # an evaluation between steps leaves the network in eval mode
            network.set_train(True)
        previous = ms.get_context("mode")
        # The context's mode is switched for the call instead of wrapping the Cells in ms.jit: called in a
        # graph-mode context, ResNet-32's SGD step took 430 ms on the CPU; under ms.jit, 1000-1250 ms.
        ms.set_context(mode=context_mode)
        try:
            if method != "imbsam":
                uniform = Tensor(np.full(labels.shape[0], 1.0 / labels.shape[0], dtype=np.float32))
                return (sgd if method == "sgd" else sam)(images, labels, uniform)
            # Which samples are tail is a host-side decision on labels the host just produced.
            labels_np = labels.asnumpy() if isinstance(labels, Tensor) else np.asarray(labels)
            is_tail = np.isin(labels_np, tail_classes)
            batch = len(labels_np)
            head_weights = Tensor(np.where(is_tail, 0.0, 1.0 / batch).astype(np.float32))
            tail_weights = Tensor(np.where(is_tail, tail_loss_scale / batch, 0.0).astype(np.float32))
            return imbsam(images, labels, head_weights, tail_weights, not is_tail.any())
        finally:
            ms.set_context(mode=previous)

    return step
