"""Each optimizer on the project's ResNet-32 against an independent PyTorch oracle: the steps written again in PyTorch
from the authors' code (as imbsam.reference has them in NumPy), run in float64 and in float32 from the same
initial weights and running statistics on the same long-tailed batches, beside imbsam's MindSpore float32 step.

    python -m imbsam.bench.oracle [--optimizers sgd,imbsam] [--steps 4] [--batch-size 32] [--seeds 5]
                                  [--kernels auto] [--rho 0.5] [--adaptive]

needs PyTorch (`pip install torch==2.13.0`, a CPU build). For every optimizer it prints how far MindSpore's
weights and running statistics are from PyTorch float64's after the steps, relative to how far those steps
moved the weights, beside PyTorch float32's own distance, and the optimizer's distance from SGD's (the size of
what a wrong update would get wrong). Float32 drifts from float64 by a few percent over a few steps of a
BatchNorm network on noise images; MindSpore's drift should be of PyTorch's own size.

One seed is not enough: a batch holds ReLU inputs within float32 rounding of 0 (about 1e-6 of their layer's
spread), which side of the kink a float32 forward puts them on is chance, and the gradient jumps with it, ImbSAM's
tail gradient most, as few samples carry it (imbsam.bench.kinks). Each seed draws other initial weights and
batches; the summary is the median over seeds, with the largest beside it.
"""

import argparse
import inspect

import numpy as np

from imbsam import registry, verify
from imbsam.bench import add_optimizers, positive_int, require_torch
from imbsam.bench.twin import torch_resnet
from imbsam.bench.workload import longtail_dataset
from imbsam.params import defaults

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-3
RADII = ("rho", "head_rho", "tail_rho")  # the params keys of the methods' perturbation radii


def _batches(steps, batch_size, seed):
    """Noise images with labels drawn from CIFAR-100-LT IF 100's class counts, so tail samples come and go."""
    counts = np.asarray(longtail_dataset()[1], dtype=np.float64)
    rng = np.random.default_rng(seed)
    return [(rng.normal(0.0, 1.0, (batch_size, 3, 32, 32)).astype(np.float32),
             rng.choice(len(counts), batch_size, p=counts / counts.sum()).astype(np.int32)) for _ in range(steps)]


class TorchPieces:
    """What the optimizers' PyTorch twins (imbsam/verify/optimizers/<name>.py, torch_gradients) are made of, from
    their authors' code: each twin returns the gradients the base optimizer steps on, leaving the weights at w (the
    running statistics moved as that code moves them)."""

    def __init__(self, torch):
        self.torch = torch

    def full(self, y, value, like):
        return self.torch.full(y.shape, value, dtype=like.dtype)

    def members(self, y, classes, like):
        """1 for the samples of `classes`, 0 for the others, in like's dtype."""
        return self.torch.isin(y, self.torch.tensor(list(classes), dtype=y.dtype)).to(like.dtype)

    def grads_of(self, net, params, x, y, weights, keep=False):
        losses = self.torch.nn.functional.cross_entropy(net(x), y, reduction="none")
        return losses, self.torch.autograd.grad((losses * weights).sum(), params, retain_graph=keep)

    def perturb(self, params, grads, rho, floor, adaptive=False):
        norm_of = [p.abs() * g for p, g in zip(params, grads)] if adaptive else grads
        scale = rho / (self.torch.sqrt(sum((g * g).sum() for g in norm_of)) + floor)
        eps = [scale * (p * p if adaptive else 1.0) * g for p, g in zip(params, grads)]
        with self.torch.no_grad():
            for p, e in zip(params, eps):
                p.add_(e)
        return eps

    def restore(self, params, eps):
        with self.torch.no_grad():
            for p, e in zip(params, eps):
                p.sub_(e)

    def at_eps(self, net, params, x, y, weights, grads, rho, floor=1e-16, adaptive=False):
        eps = self.perturb(params, grads, rho, floor, adaptive)
        _, perturbed = self.grads_of(net, params, x, y, weights)
        self.restore(params, eps)
        return perturbed

    def two_at_w(self, net, params, x, y, first, second):
        losses = self.torch.nn.functional.cross_entropy(net(x), y, reduction="none")
        return (self.torch.autograd.grad((losses * first).sum(), params, retain_graph=True),
                self.torch.autograd.grad((losses * second).sum(), params))


def twin_of(optimizer):
    """`optimizer`'s PyTorch twin (torch_gradients of imbsam/verify/optimizers/<optimizer>.py), or None."""
    checks = verify.checks(optimizer)
    return getattr(checks, "torch_gradients", None)


def torch_twin(torch, initial, dtype, stats=(), relu=None):
    """ResNet-32's PyTorch twin at `dtype` in train mode, holding MindSpore's initial weights and, if given, running
    statistics; relu as imbsam.bench.twin.torch_resnet takes it. (network, its parameters, its BatchNorms)."""
    net = torch_resnet(torch, "resnet32", relu).to(dtype).train()
    params = list(net.parameters())
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for p, value in zip(params, initial, strict=True):
            p.copy_(torch.from_numpy(value))
        if stats:
            for m, (mean, variance) in zip(norms, stats, strict=True):
                m.running_mean.copy_(torch.from_numpy(mean))
                m.running_var.copy_(torch.from_numpy(variance))
    return net, params, norms


def torch_run(torch, optimizer, options, initial, stats, batches, dtype):
    """Weights and running statistics (float64 NumPy) after the steps of `optimizer` in PyTorch at `dtype`."""
    net, params, norms = torch_twin(torch, initial, dtype, stats)
    base_optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    twin, pieces = twin_of(optimizer), TorchPieces(torch)
    # An optimizer whose update depends on how far the run is (SSE-SAM's head cut) takes the step's index.
    by_step = "step" in inspect.signature(twin).parameters
    for index, (x, y) in enumerate(batches):
        grads = twin(pieces, net, params, torch.from_numpy(x).to(dtype), torch.from_numpy(y.astype(np.int64)),
                     **options, **({"step": index} if by_step else {}))
        for p, g in zip(params, grads):
            p.grad = g.detach().clone()
        base_optimizer.step()
    return ([p.detach().double().numpy() for p in params],
            [np.concatenate([m.running_mean.double().numpy(), m.running_var.double().numpy()]) for m in norms])


def mindspore_run(method, options, batches, kernels, seed):
    """(initial weights, initial running statistics, weights and statistics after the steps) of imbsam's step."""
    from mindspore import Tensor

    from imbsam.criteria import create_loss
    from imbsam.models import create_model
    from imbsam.optim import make_optimizer, make_train_step

    network = create_model("resnet32", 100, seed=seed, kernels=kernels)
    norms = [cell for _, cell in network.cells_and_names() if hasattr(cell, "moving_variance")]

    def snapshot():
        return ([p.asnumpy().astype(np.float64) for p in network.trainable_params()],
                [(c.moving_mean.asnumpy().astype(np.float64), c.moving_variance.asnumpy().astype(np.float64))
                 for c in norms])

    initial, stats = snapshot()
    optimizer = make_optimizer(network, LR, MOMENTUM, WEIGHT_DECAY)
    step = make_train_step(network, create_loss("ce", 100, {}), optimizer, method, mode="graph", **options)
    for x, y in batches:
        step(Tensor(x), Tensor(y))
    weights, after = snapshot()
    return initial, stats, weights, [np.concatenate(pair) for pair in after], network.kernels


def relative(a, b, start):
    """|a - b| / |b - start| over all tensors together: an error relative to what the steps changed."""
    flat = [np.concatenate([t.ravel() for t in tensors]) for tensors in (a, b, start)]
    return float(np.linalg.norm(flat[0] - flat[1]) / np.linalg.norm(flat[1] - flat[2]))


def method_params(method, rho=None, adaptive=False):
    """The method's params group at params.yaml's defaults, every radius it has set to rho (if given), and ASAM's
    perturbation where the method has that option and adaptive is asked for."""
    group = dict(defaults()[method])
    for key in RADII:
        if key in group and rho is not None:
            group[key] = rho
    if "adaptive" in group:
        group["adaptive"] = adaptive
    return group


def compare(methods, steps, batch_size, kernels, seed, rho=None, adaptive=False):
    """One row per method for this seed's initial weights and batches: [method, MindSpore f32, PyTorch f32, their
    statistics' distances, distance from SGD]; and the kernels MindSpore ran on."""
    import torch

    batches = _batches(steps, batch_size, seed)
    counts, rows = longtail_dataset()[1], []
    sgd_weights = None
    for method in ("sgd", *[m for m in methods if m != "sgd"]):
        group = method_params(method, rho, adaptive)
        options = registry.module("optimizers", method).Params(**group).step_options(counts, (steps, 1))
        options.pop("bn_update_in_perturbed_pass", None)  # the authors' code always moves them
        initial, stats, weights, ms_stats, resolved = mindspore_run(method, options, batches, kernels, seed)
        runs = {dtype: torch_run(torch, method, options, initial, stats, batches, dtype)
                for dtype in (torch.float64, torch.float32)}
        exact, single = runs[torch.float64], runs[torch.float32]
        stats_start = [np.concatenate(pair) for pair in stats]
        if method == "sgd":
            sgd_weights = exact[0]
        rows.append([method, relative(weights, exact[0], initial), relative(single[0], exact[0], initial),
                     relative(ms_stats, exact[1], stats_start), relative(single[1], exact[1], stats_start),
                     None if method == "sgd" else relative(sgd_weights, exact[0], initial)])
    return rows, resolved


def summarise(per_seed):
    """Per method over seeds: the median of each distance, and the largest of MindSpore's and PyTorch's."""
    summary = []
    for rows in zip(*per_seed):
        values = np.array([[np.nan if v is None else v for v in row[1:]] for row in rows], dtype=np.float64)
        median = np.median(values, axis=0)
        summary.append([rows[0][0], median[0], values[:, 0].max(), median[1], values[:, 1].max(),
                        median[0] / median[1], median[2], median[3], None if np.isnan(median[4]) else median[4]])
    return summary


def main(argv=None):
    from tabulate import tabulate

    from imbsam.check_host.host import cpu

    parser = argparse.ArgumentParser(prog="python -m imbsam.bench.oracle", description=__doc__.split("\n\n")[0])
    twinned = tuple(name for name in registry.names("optimizers") if twin_of(name))
    add_optimizers(parser, twinned, f"comma-separated optimizers with a PyTorch twin (default {','.join(twinned)})")
    parser.add_argument("--steps", type=positive_int, default=4)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--seeds", type=positive_int, default=5, help="initial weights and batches drawn per seed")
    parser.add_argument("--kernels", choices=("auto", "onednn", "mindspore"), default="auto")
    parser.add_argument("--rho", type=float,
                        help="every perturbation radius of every optimizer (default: params.yaml's)")
    parser.add_argument("--adaptive", action="store_true",
                        help="ASAM's perturbation, where an optimizer has the option")
    args = parser.parse_args(argv)
    require_torch(parser, "the oracle")
    import torch

    per_seed = []
    for seed in range(args.seeds):
        rows, kernels = compare(args.optimizers, args.steps, args.batch_size, args.kernels, seed, args.rho,
                                args.adaptive)
        per_seed.append(rows)
    radii = "default radii" if args.rho is None else f"every radius {args.rho}"
    print(f"ResNet-32, {args.steps} steps of batch {args.batch_size}, lr {LR}, momentum {MOMENTUM}, weight decay "
          f"{WEIGHT_DECAY}, {args.seeds} seeds, {radii}{', adaptive' if args.adaptive else ''}; MindSpore graph mode, "
          f"{kernels} kernels; PyTorch {torch.__version__}")
    host = cpu()
    print(f"CPU: {host['model']}, {host['cores']} cores, {' '.join(host['isa'])}")
    print("distance from PyTorch float64 after the steps, over how far the steps moved the weights "
          "(statistics: over how far they moved the running statistics); median over seeds, largest beside it:")
    print(tabulate(summarise(per_seed), missingval="", floatfmt=".2e",
                   headers=["optimizer", "MindSpore f32", "largest", "PyTorch f32", "largest", "MindSpore / PyTorch",
                            "stats: MindSpore", "stats: PyTorch", "optimizer vs SGD"]))
    print("\nper seed, MindSpore f32 / PyTorch f32:")
    print(tabulate([[rows[0][0], *(f"{row[1]:.1e} / {row[2]:.1e}" for row in rows)] for rows in zip(*per_seed)],
                   headers=["optimizer", *(f"seed {seed}" for seed in range(args.seeds))]))


if __name__ == "__main__":
    main()
