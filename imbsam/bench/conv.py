"""One convolution layer: MindSpore's kernels, imbsam.kernels.onednn's custom operator, and PyTorch's, on the CPU.

    python -m imbsam.bench.conv [--shape CIN,COUT,SIZE ...] [--batch-size 64] [--repeats 7]

On the CPU, MindSpore 2.10's oneDNN convolution is several times slower than PyTorch's
(docs/mindspore.md). This measures, on one 3x3 stride-1 pad-1 bias-free NCHW float32 layer, what
the networks' replacement buys: `imbsam.kernels.onednn.conv2d_operator`, an "aot" `ops.Custom` operator
whose forward and bprop run oneDNN 3.2's blocked AVX-512 kernels.

Rows: MindSpore's ops.conv2d (as nn.Conv2d calls it), the oneDNN operator, and PyTorch's conv2d with
MindSpore's thread count and the user's environment (imbsam's CPU defaults are for MindSpore), the
target. Each row computes loss = sum(conv(x, w) * g) for a fixed g: "forward" times the loss,
"forward+backward" its gradients with respect to x and w (ms.grad; loss.backward() in PyTorch), and
backward is their difference, so the small multiply-and-sum costs every row alike. A timed call ends
by reading its results back to the host (.asnumpy()). Every row is warmed up first; then rows take
turns in interleaved repeats, so load from other jobs on a shared machine falls on every row alike,
and each figure is the median over the repeats. "cores busy" is the process's CPU time over wall
time during forward+backward; "fastest" is the least disturbed of its calls. The operator's output
and gradients are checked against MindSpore's before timing.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import sys
import time

import numpy as np
from tabulate import tabulate

from imbsam.bench import positive_int
from imbsam.kernels import onednn
from imbsam.kernels.environment import ONEDNN_ISA_ENV, prepare_environment, restore_user_environment

PADDING = 1
KERNEL = 3
SEED = 0
# (input channels, output channels, image side) of the most common 3x3 layer of each network.
SHAPES = {"resnet32 16->16 32x32": (16, 16, 32), "resnet34 128->128 16x16": (128, 128, 16)}
PASSES = ("forward", "forward+backward")
OPERATOR = "oneDNN op"


def onednn_conv2d(x, w):
    return onednn.conv2d_operator(1)(x, w)


def mindspore_conv2d(x, w):
    from mindspore import ops

    return ops.conv2d(x, w, pad_mode="pad", padding=PADDING)


# ---- what is timed ----

def _loss(conv, cotangent):
    def loss(x, w):
        return (conv(x, w) * cotangent).sum()

    return loss


def _mindspore_calls(conv, x, w, cotangent):
    """(forward, forward+backward) of sum(conv(x, w) * cotangent), each ending with its results on the host."""
    import mindspore as ms

    loss = _loss(conv, cotangent)
    grad = ms.grad(loss, grad_position=(0, 1))
    return (lambda: loss(x, w).asnumpy(),
            lambda: [g.asnumpy() for g in grad(x, w)])


def _torch_calls(x, w, cotangent, threads):
    import torch
    from torch.nn.functional import conv2d

    torch.set_num_threads(threads)
    x, w, cotangent = (torch.from_numpy(a) for a in (x, w, cotangent))
    x_grad, w_grad = x.clone().requires_grad_(), w.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            (conv2d(x, w, padding=PADDING) * cotangent).sum()

    def forward_backward():
        x_grad.grad = w_grad.grad = None
        (conv2d(x_grad, w_grad, padding=PADDING) * cotangent).sum().backward()

    return forward, forward_backward


def layer_arrays(batch_size, in_channels, out_channels, size, seed=SEED):
    """(x, w, cotangent) in NCHW float32; w at He-normal scale, as the networks initialise it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, in_channels, size, size), dtype=np.float32)
    w = rng.standard_normal((out_channels, in_channels, KERNEL, KERNEL), dtype=np.float32)
    w *= np.sqrt(2.0 / (in_channels * KERNEL * KERNEL), dtype=np.float32)
    cotangent = rng.standard_normal((batch_size, out_channels, size, size), dtype=np.float32)
    return x, w, cotangent


def gradient_errors(x, w, cotangent):
    """max |oneDNN op - MindSpore| / max |MindSpore| for the output and the gradients of sum(conv * cotangent)."""
    import mindspore as ms
    from mindspore import Tensor

    x, w, cotangent = Tensor(x), Tensor(w), Tensor(cotangent)
    results = []
    for conv in (onednn_conv2d, mindspore_conv2d):
        gradients = ms.grad(_loss(conv, cotangent), grad_position=(0, 1))(x, w)
        results.append([conv(x, w).asnumpy()] + [g.asnumpy() for g in gradients])
    return {name: float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            for name, ours, theirs in zip(("output", "input gradient", "weight gradient"), *results)}


def _timed(call):
    cpu, start = time.process_time(), time.perf_counter()
    call()
    return time.perf_counter() - start, time.process_time() - cpu


def setup_cpu(threads=None):
    """PyNative on the CPU, the only device the oneDNN operator runs on, with `threads` runtime threads if given;
    return the mindspore module."""
    prepare_environment("CPU")
    import mindspore as ms

    try:
        ms.set_device("CPU")
    except RuntimeError:
        pass  # the device is fixed once per process; a test process may have run MindSpore work already
    if ms.get_context("device_target") != "CPU":
        raise RuntimeError("the oneDNN operator runs on the CPU only; this process already uses "
                           f"{ms.get_context('device_target')}")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    if threads:
        ms.set_context(runtime_num_threads=threads)
    ms.runtime.launch_blocking()  # as imbsam.device.setup does on the CPU for training
    return ms


def run(shapes=SHAPES, batch_size=64, repeats=7, warmup=2, compare_torch=True, threads=None):
    """Check and time every row for each shape; return the figures as a dict."""
    ms = setup_cpu(threads)
    from mindspore import Tensor

    threads = ms.get_context("runtime_num_threads")
    config = {"batch_size": batch_size, "repeats": repeats, "warmup": warmup, "mindspore": ms.__version__,
              "threads": threads, "onednn_max_cpu_isa": os.environ.get(ONEDNN_ISA_ENV),
              "onednn": f"{onednn.DISTRIBUTION} {importlib.metadata.version(onednn.DISTRIBUTION)}"}
    if compare_torch:
        # Each oneDNN copy fixes its ISA cap at its first convolution, and PyTorch's OpenMP reads its
        # policy when it loads: MindSpore's takes imbsam's AVX2 cap, then PyTorch the user's environment,
        # then imbsam's is put back for the rest of the process.
        mindspore_conv2d(*(Tensor(a) for a in layer_arrays(1, 1, 1, KERNEL)[:2])).asnumpy()
        restore_user_environment()
        import torch

        cap = os.environ.get(ONEDNN_ISA_ENV, "unset")
        torch.nn.functional.conv2d(torch.zeros(1, 1, KERNEL, KERNEL), torch.zeros(1, 1, KERNEL, KERNEL))
        prepare_environment("CPU")
        config["torch"] = (f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()} kernels, "
                           f"ONEDNN_MAX_CPU_ISA={cap})")
    layers = {}
    for label, (in_channels, out_channels, size) in shapes.items():
        arrays = layer_arrays(batch_size, in_channels, out_channels, size)
        errors = gradient_errors(*arrays)
        tensors = [Tensor(a) for a in arrays]
        calls = {"MindSpore": _mindspore_calls(mindspore_conv2d, *tensors),
                 OPERATOR: _mindspore_calls(onednn_conv2d, *tensors)}
        if compare_torch:
            calls["PyTorch"] = _torch_calls(*arrays, threads)
        for pair in calls.values():
            for call in pair * warmup:
                call()
        samples = {(row, name): [] for row in calls for name in PASSES}
        for _ in range(repeats):
            for row, pair in calls.items():
                for name, call in zip(PASSES, pair):
                    samples[row, name].append(_timed(call))
        layers[label] = {"errors": errors, "rows": _row_figures(samples, calls)}
    return {"config": config, "layers": layers}


def _row_figures(samples, rows):
    figures = {}
    for row in rows:
        forward = 1000 * np.median([wall for wall, _ in samples[row, "forward"]])
        both = samples[row, "forward+backward"]
        forward_backward = 1000 * np.median([wall for wall, _ in both])
        figures[row] = {"forward_ms": forward, "forward_backward_ms": forward_backward,
                        "fastest_forward_backward_ms": 1000 * min(wall for wall, _ in both),
                        "backward_ms": forward_backward - forward,
                        "cores_busy": float(np.median([cpu / wall for wall, cpu in both]))}
    for figure in figures.values():
        figure["backward_vs_mindspore"] = figure["backward_ms"] / figures["MindSpore"]["backward_ms"]
    return figures


def _conclusion(layers):
    verdicts, saved = [], []
    for label, layer in layers.items():
        mindspore, operator = layer["rows"]["MindSpore"], layer["rows"][OPERATOR]
        backward = mindspore["backward_ms"] - operator["backward_ms"]
        total = mindspore["forward_backward_ms"] - operator["forward_backward_ms"]
        saved.append(total > 0)
        verdicts.append(f"{label}: backward {'saves' if backward > 0 else 'costs'} {abs(backward):.1f} ms "
                        f"({operator['backward_vs_mindspore']:.2f}x MindSpore's), forward+backward "
                        f"{'saves' if total > 0 else 'costs'} {abs(total):.1f} ms")
    if all(saved):
        verdict = "the oneDNN operator pays on every shape"
    elif any(saved):
        verdict = "the oneDNN operator pays on some shapes only"
    else:
        verdict = "the oneDNN operator does not pay"
    return f"conclusion, per call of one layer: {'; '.join(verdicts)}: {verdict}."


def format_report(figures):
    config = figures["config"]
    torch = f"; PyTorch {config['torch']}, {config['threads']} threads" if "torch" in config else ""
    lines = [
        (f"{KERNEL}x{KERNEL} stride-1 pad-{PADDING} convolution, NCHW float32, batch {config['batch_size']}: "
         f"MindSpore {config['mindspore']} PyNative, {config['threads']} threads, "
         f"ONEDNN_MAX_CPU_ISA={config['onednn_max_cpu_isa']}; oneDNN op: aot on {config['onednn']}{torch}"),
        (f"median of {config['repeats']} interleaved repeats after {config['warmup']} warm-up calls; "
         "backward = forward+backward - forward"),
    ]
    headers = ["layer", "", "forward ms", "fwd+bwd ms", "backward ms", "bwd vs MindSpore", "fastest fwd+bwd ms",
               "cores busy"]
    table = [[label, row, r["forward_ms"], r["forward_backward_ms"], r["backward_ms"], r["backward_vs_mindspore"],
              r["fastest_forward_backward_ms"], r["cores_busy"]]
             for label, layer in figures["layers"].items() for row, r in layer["rows"].items()]
    lines.append(tabulate(table, headers, floatfmt=("", "", ".1f", ".1f", ".1f", ".2f", ".1f", ".2f")))
    lines.append("oneDNN op vs MindSpore, max |difference| / max |MindSpore|: " + "; ".join(
        f"{label}: " + ", ".join(f"{name} {error:.1e}" for name, error in layer["errors"].items())
        for label, layer in figures["layers"].items()))
    lines.append(_conclusion(figures["layers"]))
    return "\n".join(lines)


def _shape(text):
    try:
        values = tuple(positive_int(part) for part in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: give CIN,COUT,SIZE as three positive integers")
    return values


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m imbsam.bench.conv", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=_shape, action="append", metavar="CIN,COUT,SIZE",
                        help="a layer to measure, repeatable (default: resnet32's 16,16,32 and resnet34's 128,128,16)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--repeats", type=positive_int, default=7, help="timed calls per row and pass (default 7)")
    parser.add_argument("--warmup", type=positive_int, default=2,
                        help="untimed calls per row and pass first (default 2)")
    parser.add_argument("--threads", type=positive_int,
                        help="MindSpore's runtime threads, and PyTorch's (default: MindSpore's own choice)")
    args = parser.parse_args(argv)
    shapes = SHAPES
    if args.shape:
        shapes = {f"{cin}->{cout} {size}x{size}": (cin, cout, size) for cin, cout, size in args.shape}
    figures = run(shapes, args.batch_size, args.repeats, args.warmup,
                  compare_torch=importlib.util.find_spec("torch") is not None, threads=args.threads)
    print(format_report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
