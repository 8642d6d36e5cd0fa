"""The machinery every optimizer's step is made of (imbsam/optimizers/<name>.py builds its step from it): the base
optimizer (SGD with momentum), the gradients of weighted per-sample losses, SAM's perturbation and its undoing,
the update, and the BatchNorm running statistics. Editing this file changes every optimizer's update, so every
train@ stage depends on it.

By default each piece of a step runs compiled: the gradients (one forward pass at w and one
backward pass per loss: ImbSAM's g_h and g_t share the forward), the perturbation, and the update
(undo the perturbation, then the base optimizer). The gradient graph is shared by the passes at w
and at w + eps and by every kind of batch, which keeps memory and compile time down.
mode="pynative" runs the same pieces op by op, for debugging; there a backward pass consumes its
forward, so a second gradient takes a second forward whose running-statistics update is undone. Both modes
are tested against an independent reference (imbsam/verify/).
"""

import inspect

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from imbsam import registry
from imbsam.errors import InputError
from imbsam.params import STEP_MODES


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


class WeightedGradients(nn.Cell):
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


_times_squared = ops.MultitypeFuncGraph("times_squared")
_times_abs = ops.MultitypeFuncGraph("times_abs")


@_times_squared.register("Tensor", "Tensor")
def _(w, g):
    return w * w * g


@_times_abs.register("Tensor", "Tensor")
def _(w, g):
    return ops.abs(w) * g


@_add.register("Tensor", "Tensor")
def _(a, b):
    return a + b


@_replay.register("Tensor", "Tensor", "Tensor")
def _(keep, stat, saved):
    return ops.assign(stat, stat + keep * (stat - saved))


class _Perturb(nn.Cell):
    """w <- w + eps, eps = rho * d / (||n|| + floor), with d = n = g for SAM (the floor 1e-16 in the ImbSAM
    authors' code, 1e-12 in Focal-SAM's). Returns the scale, from which _Update recomputes the same eps, bit for
    bit, to subtract (w + eps - eps, as in the ImbSAM authors' code), so no copy of w is kept."""

    def __init__(self, weights):
        super().__init__(auto_prefix=False)
        self.weights = weights

    def construct(self, direction, norm_of, rho, floor):
        scale = rho / (ops.sqrt(ops.addn(_hyper_map(_squared_sum, norm_of))) + floor)
        _hyper_map(ops.partial(_add_scaled, scale), self.weights, direction)
        return scale


class _Adaptive(nn.Cell):
    """ASAM's perturbation as Focal-SAM's code has it: direction w * w * g, its norm taken of |w| * g."""

    def __init__(self, weights):
        super().__init__(auto_prefix=False)
        self.weights = weights

    def construct(self, grads):
        return _hyper_map(_times_squared, self.weights, grads), _hyper_map(_times_abs, self.weights, grads)


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


class _Undo(nn.Cell):
    """w <- w - eps: a perturbation taken off without an optimizer step."""

    def __init__(self, weights):
        super().__init__(auto_prefix=False)
        self.weights = weights

    def construct(self, direction, scale):
        _hyper_map(ops.partial(_add_scaled, -scale), self.weights, direction)
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


class StepParts:
    """The compiled pieces every step is made of, shared by the optimizers' make_step.

    mode: "graph" runs each piece compiled, "pynative" op by op.
    """

    def __init__(self, network, loss_fn, optimizer, mode):
        weights = optimizer.parameters
        self.mode = mode
        self._gradients, self._perturb = WeightedGradients(network, loss_fn, weights), _Perturb(weights)
        self._adaptive, self._undo = _Adaptive(weights), _Undo(weights)
        self._optimizer = optimizer
        self._update = _Update(optimizer)
        self.stats = _RunningStats(network)

    def gradients(self, images, labels, *sample_weights):
        """(mean loss at w, (gradient of sum_i weights_i l_i for each weights given)); in graph mode two
        weight vectors share one forward pass."""
        if self.mode == "graph" or len(sample_weights) == 1:
            return self._gradients(images, labels, ms.mutable(sample_weights))
        # Op by op, a backward pass consumes its forward: run a second one and undo its running-statistics
        # update, as if both gradients came from one forward.
        loss, (first,) = self._gradients(images, labels, ms.mutable(sample_weights[:1]))
        self.stats("save")
        _, (second,) = self._gradients(images, labels, ms.mutable(sample_weights[1:]))
        self.stats("restore")
        return loss, (first, second)

    def perturbed_gradients(self, images, labels, sample_weights, grads_at_w, rho, move_stats=True, floor=None,
                            adaptive=False):
        """w <- w + eps from g = grads_at_w (see _Perturb; adaptive: _Adaptive's); return the gradient of the
        weighted loss at w + eps and the perturbation, which `update` or `undo` takes off again. move_stats=False
        keeps the BatchNorm running statistics from moving in that forward pass."""
        grads_at_w = ms.mutable(grads_at_w)
        # _adaptive's tuples leave its graph as constants: passed on as they are, each new value would compile
        # _perturb again.
        direction, norm_of = map(ms.mutable, self._adaptive(grads_at_w)) if adaptive else (grads_at_w, grads_at_w)
        scale = self._perturb(direction, norm_of, rho, _SAM_FLOOR if floor is None else floor)
        if not move_stats:
            self.stats("save")
        _, (grads,) = self._gradients(images, labels, ms.mutable((sample_weights,)))
        if not move_stats:
            self.stats("restore")
        return grads, (direction, scale)

    def update(self, grads, more_grads=(), perturbation=None):
        """Undo the perturbation (if given), then one base-optimizer step on grads (+ more_grads)."""
        direction, scale = perturbation or ((), _ONE)
        # Tuples of tensors enter a graph as ms.mutable: as plain tuples, each new one recompiles it.
        self._update(*(ms.mutable(t) if t else t for t in (grads, more_grads, direction)), scale)

    def undo(self, perturbation):
        """Take a perturbation of `perturbed_gradients` off again, without an update."""
        direction, scale = perturbation
        self._undo(ms.mutable(direction), scale)

    def steps_done(self):
        """Updates made so far: the optimizer's step counter, which checkpoints keep, so it survives a resume."""
        return int(self._optimizer.global_step.asnumpy()[0])

    @staticmethod
    def uniform(labels):
        """Sample weights 1/B: the gradient of the mean loss."""
        return Tensor(np.full(labels.shape[0], 1.0 / labels.shape[0], dtype=np.float32))

    @staticmethod
    def sample_weights(values):
        """Per-sample weights computed on the host, as the gradients take them."""
        return Tensor(np.asarray(values, dtype=np.float32))

    @staticmethod
    def on_host(labels):
        """The labels as a NumPy array, for the host-side decisions a step makes on them."""
        return labels.asnumpy() if isinstance(labels, Tensor) else np.asarray(labels)

    @staticmethod
    def radius(rho):
        """A perturbation radius (or norm floor) as the compiled pieces take it; InputError below 0."""
        if not rho >= 0:
            raise InputError(f"rho={rho!r} must be >= 0")
        return Tensor(rho, ms.float32)


_ONE = Tensor(1.0, ms.float32)
_SAM_FLOOR = Tensor(1e-16, ms.float32)  # what eps's norm is offset by in the ImbSAM authors' SAM


def make_train_step(network, loss_fn, base_optimizer, name, mode="graph", **options):
    """Return step(images, labels) -> loss (mean loss at w, before the update); one call = one update.

    loss_fn: per-sample loss (reduction="none"). name: an optimizer, imbsam/optimizers/<name>.py; options: the
    keyword arguments of its make_step (what its Params' step_options gives), others refused. base_optimizer:
    make_optimizer's SGD, which every optimizer updates with. mode: "graph" runs each piece of the step compiled,
    "pynative" op by op, whatever the context's mode.
    """
    build = registry.module("optimizers", name).make_step
    if mode not in STEP_MODES:
        raise InputError(f"train step mode={mode!r} is not one of {', '.join(STEP_MODES)}")
    accepted = list(inspect.signature(build).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"{name} takes no option {', '.join(unknown)}: its options are "
                         f"{', '.join(accepted) or 'none'}")
    inner = build(StepParts(network, loss_fn, base_optimizer, mode), **options)
    context_mode = ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE

    def step(images, labels):
        if not network.training:  # an evaluation between steps leaves the network in eval mode
            network.set_train(True)
        previous = ms.get_context("mode")
        # The context's mode is switched for the call instead of wrapping the Cells in ms.jit: called in a
        # graph-mode context, ResNet-32's SGD step took 430 ms on the CPU; under ms.jit, 1000-1250 ms.
        ms.set_context(mode=context_mode)
        try:
            return inner(images, labels)
        finally:
            ms.set_context(mode=previous)

    return step
