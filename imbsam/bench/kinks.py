"""Whether a float32 gradient that is far from float64's is a ReLU decided the other way, not an error.

    python -m imbsam.bench.kinks [--seed 0] [--kernels auto] [--threshold 1e-5]

needs PyTorch (`pip install torch==2.13.0`). On the oracle's (imbsam.bench.oracle) first batch of that seed that
holds tail samples, it takes ImbSAM's tail-loss gradient at w, the one only a few samples carry, from MindSpore
float32 and PyTorch float32, and compares each with PyTorch float64's. ReLU inputs that lie within `threshold` of 0
(relative to their layer's standard deviation) are where a float32 forward, accurate to about 1e-6 of that spread
at depth, may take the other side of the kink; the gradient then jumps by that unit's whole contribution. The
float64 gradient is recomputed with such units flipped, one at a time, keeping each flip that brings it at least
10% closer to the float32 gradient. When a flip or two bring float64 to within float32 rounding of it, the
difference was which side of a kink a unit fell on, and every other part of the gradient agrees.
"""

import argparse

import numpy as np

from imbsam import registry
from imbsam.architectures import ARCHITECTURES, blocks
from imbsam.bench import positive_int, require_torch
from imbsam.bench.oracle import _batches, torch_twin
from imbsam.bench.workload import longtail_dataset
from imbsam.params import defaults

ARCH, NUM_CLASSES, MAX_CANDIDATES = "resnet32", 100, 40


def tail_batch(seed, batch_size):
    """The seed's first oracle batch with tail samples: images, labels, ImbSAM's tail weights."""
    imbsam = registry.module("optimizers", "imbsam").Params(**defaults()["imbsam"])
    options = imbsam.step_options(longtail_dataset()[1], (1, 1))
    for images, labels in _batches(8, batch_size, seed):
        is_tail = np.isin(labels, np.asarray(sorted(options["tail_classes"])))
        if is_tail.any():
            return images, labels, np.where(is_tail, options["tail_loss_scale"] / batch_size, 0.0)
    raise SystemExit(f"seed {seed}: no tail sample in its first 8 batches; try another --seed")


def mindspore_gradient(seed, kernels, images, labels, weights):
    """(initial weights, the gradient of sum_i weights_i l_i at them, flat float64, each block's output, the kernels
    used)."""
    import mindspore as ms
    from mindspore import Tensor, nn

    from imbsam.criteria import create_loss
    from imbsam.models import create_model
    from imbsam.optim import WeightedGradients

    network = create_model(ARCH, NUM_CLASSES, seed=seed, kernels=kernels)
    network.set_train()
    params = ms.ParameterTuple(network.trainable_params())
    gradients = WeightedGradients(network, create_loss("ce", NUM_CLASSES, {}), params)
    _, (grads,) = gradients(Tensor(images), Tensor(labels), ms.mutable((Tensor(weights.astype(np.float32)),)))

    class Blocks(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.network = network

        def construct(self, x):
            out, outputs = self.network.bn1(self.network.conv1(x)), ()
            for block in self.network.layers:
                out = block(out)
                outputs += (out,)
            return outputs

    outputs = [o.asnumpy() for o in Blocks()(Tensor(images))]
    return [p.asnumpy() for p in params], _flat(g.asnumpy() for g in grads), outputs, network.kernels


def _flat(tensors):
    return np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in tensors])


def _distance(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class FlippableReLU:
    """max(0, x) for every ReLU of the network, in forward order, recording its inputs; `flips` holds
    (ReLU index, unit) pairs whose side of the kink is swapped. The gradient through it is the mask, as ReLU's."""

    def __init__(self):
        self.inputs, self.outputs, self.flips, self.calls = [], [], set(), 0

    def __call__(self, x):
        index, self.calls = self.calls, self.calls + 1
        self.inputs.append(x.detach())
        mask = (x > 0).to(x.dtype)
        for layer, unit in self.flips:
            if layer == index:
                mask[unit] = 1 - mask[unit]
        out = x * mask
        self.outputs.append(out.detach())
        return out

    def block_outputs(self):
        return [y.double().numpy() for y, name in zip(self.outputs, relu_names()) if name.endswith("output")]


def relu_names():
    """Each ReLU's place, in forward order: the stem's, then each block's inner and output ReLU."""
    names = ["stem"]
    for number, _ in enumerate(blocks(ARCHITECTURES[ARCH])):
        names += [f"block {number} inner", f"block {number} output"]
    return names


def torch_gradient(torch, relu, initial, images, labels, weights, dtype, flips=()):
    net, params, _ = torch_twin(torch, initial, dtype, relu=relu)
    relu.inputs, relu.outputs, relu.flips, relu.calls = [], [], set(flips), 0
    losses = torch.nn.functional.cross_entropy(net(torch.from_numpy(images).to(dtype)),
                                               torch.from_numpy(labels.astype(np.int64)), reduction="none")
    grads = torch.autograd.grad((losses * torch.from_numpy(weights).to(dtype)).sum(), params)
    return _flat(g.double().numpy() for g in grads)


def near_kinks(inputs, threshold):
    """(|x| / std of its layer, ReLU index, unit) of the inputs within threshold of 0, closest first."""
    found = []
    for layer, x in enumerate(inputs):
        closeness = (x.abs() / x.std()).double().numpy()
        for unit in zip(*np.nonzero(closeness < threshold)):
            found.append((float(closeness[unit]), layer, tuple(int(i) for i in unit)))
    return sorted(found)


def explain(gradient, exact, recompute, candidates, shortlist=8):
    """Flip candidates greedily while a flip brings the float64 gradient at least 10% closer to `gradient`; the
    flips kept. After the first round only the `shortlist` candidates that round ranked best are tried."""
    kept, distance = [], _distance(gradient, exact)
    while True:
        tried = sorted((_distance(gradient, recompute([*(c[1:] for c in kept), c[1:]])), c)
                       for c in candidates if c not in kept)
        if not tried or tried[0][0] > 0.9 * distance:
            return kept, distance
        distance, candidate = tried[0]
        kept.append(candidate)
        candidates = [c for _, c in tried[1:shortlist + 1]]
        print(f"  flip {relu_names()[candidate[1]]}, sample {candidate[2][0]}, channel {candidate[2][1]}, "
              f"at {candidate[2][2:]} (input {candidate[0]:.1e} of its layer's std): distance {distance:.2e}")


def main(argv=None):
    from imbsam.check_host.host import cpu

    parser = argparse.ArgumentParser(prog="python -m imbsam.bench.kinks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--kernels", choices=("auto", "onednn", "mindspore"), default="auto")
    parser.add_argument("--threshold", type=float, default=1e-5)
    args = parser.parse_args(argv)
    require_torch(parser, "the kinks diagnosis")
    import torch

    images, labels, weights = tail_batch(args.seed, args.batch_size)
    initial, mindspore, mindspore_blocks, kernels = mindspore_gradient(args.seed, args.kernels, images, labels,
                                                                       weights)
    relu = FlippableReLU()
    exact = torch_gradient(torch, relu, initial, images, labels, weights, torch.float64)
    found, exact_blocks = near_kinks(relu.inputs, args.threshold), relu.block_outputs()
    candidates, units = found[:MAX_CANDIDATES], sum(x.numel() for x in relu.inputs)
    single = torch_gradient(torch, relu, initial, images, labels, weights, torch.float32)
    forward = {"MindSpore f32": mindspore_blocks, "PyTorch f32": relu.block_outputs()}
    host = cpu()
    print(f"seed {args.seed}: ImbSAM's tail-loss gradient at w on a batch of {args.batch_size} with "
          f"{int((weights > 0).sum())} tail samples; {ARCH}; MindSpore graph mode, {kernels} kernels; "
          f"PyTorch {torch.__version__}")
    print(f"CPU: {host['model']}, {host['cores']} cores, {' '.join(host['isa'])}")
    print("block outputs off float64, first block to last: " + ", ".join(
        f"{name} {min(errors):.1e} to {max(errors):.1e}" for name, errors in
        ((name, [_distance(a, b) for a, b in zip(blocks, exact_blocks, strict=True)]) for name, blocks in
         forward.items())))
    print(f"ReLU inputs within {args.threshold:g} of their layer's std of 0 in float64: {len(found)} of {units:,}"
          f"{f' (the {MAX_CANDIDATES} closest tried)' if len(found) > MAX_CANDIDATES else ''}")

    def recompute(flips):
        return torch_gradient(torch, relu, initial, images, labels, weights, torch.float64, flips)

    for name, gradient in (("MindSpore f32", mindspore), ("PyTorch f32", single)):
        print(f"{name} against PyTorch f64: {_distance(gradient, exact):.2e}")
        kept, distance = explain(gradient, exact, recompute, candidates)
        print(f"  {len(kept)} flips kept; against float64 with them: {distance:.2e}")


if __name__ == "__main__":
    main()
