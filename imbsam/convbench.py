"""One convolution layer: MindSpore's backward, a custom operator's backward, and PyTorch's, on the CPU.

    python -m imbsam.convbench [--shape CIN,COUT,SIZE ...] [--batch-size 64] [--repeats 7]

On the CPU, MindSpore's oneDNN convolution backward (input- and weight-gradient) is several times
slower than PyTorch's (notes/mindspore.md). This measures, on one 3x3 stride-1 pad-1 bias-free NCHW
float32 layer, what replacing it with an `ops.Custom` operator would buy. MindSpore 2.10 offers two
custom-operator kinds on the CPU, "pyfunc" (a Python function) and "aot" (a compiled .so); the
operator here is "pyfunc". Its forward is im2col plus one matmul per image in NumPy (OpenBLAS); its
bprop is two more pyfunc operators: the weight-gradient is the output gradient times the im2col
columns, one matmul per image summed over the batch; the input-gradient is, at stride 1, the
convolution of the output gradient with the flipped, transposed kernel, so it reuses the forward.

Rows: MindSpore's ops.conv2d (as nn.Conv2d calls it), the custom operator, and PyTorch's conv2d with
MindSpore's thread count, the target. Each row computes loss = sum(conv(x, w) * g) for a fixed g:
"forward" times the loss, "forward+backward" its gradients with respect to x and w (ms.grad;
loss.backward() in PyTorch), and backward is their difference, so the small multiply-and-sum costs
every row alike. A timed call ends by reading its results back to the host (.asnumpy()). Every row
is warmed up first; then rows take turns in interleaved repeats, so load from other jobs on a
shared machine falls on every row alike, and each figure is the median over the repeats. "cores
busy" is the process's CPU time over wall time during forward+backward; "fastest" is the least
disturbed of its calls, because a median alone hides how far MindSpore's kernels can swing: with
asynchronous launch (MindSpore's default, not what training uses on the CPU) the 16->16 layer's
forward+backward took 37 ms at best and 286 ms at the median on an idle machine. The custom operator's
output and gradients are checked against MindSpore's before timing.
"""

import argparse
import importlib.util
import os
import sys
import time

if __name__ == "__main__":
    # Before NumPy loads OpenBLAS. A pyfunc kernel has one core at best: the thread waiting for its
    # result spins on the other (a pyfunc that sleeps 0.2 s costs 0.2 s of CPU time). A second BLAS
    # thread only contends with that spinner; here it made the custom operator's rows 1.5-4x slower.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tabulate import tabulate

from imbsam.bench import positive_int
from imbsam.device import ONEDNN_ISA_ENV, prepare_environment, restore_user_onednn_isa

PADDING = 1
KERNEL = 3
SEED = 0
# (input channels, output channels, image side) of the most common 3x3 layer of each network.
SHAPES = {"resnet32 16->16 32x32": (16, 16, 32), "resnet34 128->128 16x16": (128, 128, 16)}
PASSES = ("forward", "forward+backward")


# ---- the custom operator's kernels: NumPy, stride 1, square kernel, no bias ----

def _columns(x, kernel, padding):
    """im2col: the (N, C*k*k, Ho*Wo) patches of zero-padded `x`, so that a convolution is one matmul per image."""
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(padded, (kernel, kernel), axis=(2, 3))  # (N, C, Ho, Wo, k, k), a view
    n, c, ho, wo = windows.shape[:4]
    return windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kernel * kernel, ho * wo), (ho, wo)


def conv2d_forward(x, w, padding):
    columns, (ho, wo) = _columns(x, w.shape[2], padding)
    return np.matmul(w.reshape(w.shape[0], -1), columns).reshape(x.shape[0], w.shape[0], ho, wo)


def conv2d_input_grad(dy, w, padding):
    # At stride 1 the transposed convolution is a convolution with the kernel flipped and its channel
    # axes swapped, padded so every output position reaches every input pixel it was computed from.
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return conv2d_forward(dy, flipped, w.shape[2] - 1 - padding)


def conv2d_weight_grad(x, dy, w, padding):
    columns, _ = _columns(x, w.shape[2], padding)
    per_image = np.matmul(dy.reshape(dy.shape[0], dy.shape[1], -1), columns.transpose(0, 2, 1))
    return per_image.sum(axis=0).reshape(w.shape)


def custom_conv2d(padding=PADDING):
    """A pyfunc ops.Custom convolution, (x, w) -> y, whose forward and bprop run the NumPy kernels above."""
    from mindspore import ops

    def output_shape(x, w):
        return [x[0], w[0], x[2] + 2 * padding - w[2] + 1, x[3] + 2 * padding - w[3] + 1]

    def input_grad_shape(dy, w):
        return [dy[0], w[1], dy[2] - 2 * padding + w[2] - 1, dy[3] - 2 * padding + w[3] - 1]

    def first_dtype(first, *_):
        return first

    def weight_shape(x, dy, w):
        return w

    input_grad = ops.Custom(lambda dy, w: conv2d_input_grad(dy, w, padding), input_grad_shape, first_dtype, "pyfunc")
    # w is an input only so that the kernel and the shape function know the kernel size.
    weight_grad = ops.Custom(lambda x, dy, w: conv2d_weight_grad(x, dy, w, padding), weight_shape, first_dtype,
                             "pyfunc")

    def bprop(x, w, out, dout):
        return input_grad(dout, w), weight_grad(x, dout, w)

    return ops.Custom(lambda x, w: conv2d_forward(x, w, padding), output_shape, first_dtype, "pyfunc", bprop=bprop)


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


def gradient_errors(x, w, cotangent, custom=None):
    """max |custom - MindSpore| / max |MindSpore| for the output and the gradients of sum(conv * cotangent)."""
    import mindspore as ms
    from mindspore import Tensor

    x, w, cotangent = Tensor(x), Tensor(w), Tensor(cotangent)
    results = []
    for conv in (custom_conv2d() if custom is None else custom, mindspore_conv2d):
        gradients = ms.grad(_loss(conv, cotangent), grad_position=(0, 1))(x, w)
        results.append([conv(x, w).asnumpy()] + [g.asnumpy() for g in gradients])
    return {name: float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            for name, ours, theirs in zip(("output", "input gradient", "weight gradient"), *results)}


def _timed(call):
    cpu, start = time.process_time(), time.perf_counter()
    call()
    return time.perf_counter() - start, time.process_time() - cpu


def setup_cpu(threads=None):
    """PyNative on the CPU, the only device pyfunc operators run on, with `threads` runtime threads if given;
    return the mindspore module."""
    prepare_environment("CPU")
    import mindspore as ms

    try:
        ms.set_device("CPU")
    except RuntimeError:
        pass  # the device is fixed once per process; a test process may have run MindSpore work already
    if ms.get_context("device_target") != "CPU":
        raise RuntimeError("pyfunc custom operators run on the CPU only; this process already uses "
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
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    config = {"batch_size": batch_size, "repeats": repeats, "warmup": warmup, "mindspore": ms.__version__,
              "threads": threads, "onednn_max_cpu_isa": os.environ.get(ONEDNN_ISA_ENV),
              "numpy": f"{np.__version__} ({blas['name']} {blas.get('version', '')}, "
                       f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})"}
    if compare_torch:
        # MindSpore's oneDNN fixes its AVX2 cap at its first convolution; PyTorch's then reads the user's.
        mindspore_conv2d(*(Tensor(a) for a in layer_arrays(1, 1, 1, KERNEL)[:2])).asnumpy()
        restore_user_onednn_isa()
        import torch

        cap = os.environ.get(ONEDNN_ISA_ENV, "unset")
        config["torch"] = (f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()} kernels, "
                           f"ONEDNN_MAX_CPU_ISA={cap})")
    custom = custom_conv2d()
    layers = {}
    for label, (in_channels, out_channels, size) in shapes.items():
        arrays = layer_arrays(batch_size, in_channels, out_channels, size)
        errors = gradient_errors(*arrays, custom=custom)
        tensors = [Tensor(a) for a in arrays]
        calls = {"MindSpore": _mindspore_calls(mindspore_conv2d, *tensors),
                 "Custom": _mindspore_calls(custom, *tensors)}
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
        mindspore, custom = layer["rows"]["MindSpore"], layer["rows"]["Custom"]
        backward = mindspore["backward_ms"] - custom["backward_ms"]
        total = mindspore["forward_backward_ms"] - custom["forward_backward_ms"]
        saved.append(total > 0)
        verdicts.append(f"{label}: backward {'saves' if backward > 0 else 'costs'} {abs(backward):.1f} ms "
                        f"({custom['backward_vs_mindspore']:.2f}x MindSpore's), forward+backward "
                        f"{'saves' if total > 0 else 'costs'} {abs(total):.1f} ms")
    if all(saved):
        verdict = "the custom operator pays on every shape"
    elif any(saved):
        verdict = "the custom operator pays on some shapes only"
    else:
        verdict = "the custom operator does not pay"
    return f"conclusion, per call of one layer: {'; '.join(verdicts)}: {verdict}."


def format_report(figures):
    config = figures["config"]
    torch = f"; PyTorch {config['torch']}, {config['threads']} threads" if "torch" in config else ""
    lines = [
        (f"{KERNEL}x{KERNEL} stride-1 pad-{PADDING} convolution, NCHW float32, batch {config['batch_size']}: "
         f"MindSpore {config['mindspore']} PyNative, {config['threads']} threads, "
         f"ONEDNN_MAX_CPU_ISA={config['onednn_max_cpu_isa']}; custom op pyfunc on NumPy {config['numpy']}{torch}"),
        (f"median of {config['repeats']} interleaved repeats after {config['warmup']} warm-up calls; "
         "backward = forward+backward - forward"),
    ]
    headers = ["layer", "", "forward ms", "fwd+bwd ms", "backward ms", "bwd vs MindSpore", "fastest fwd+bwd ms",
               "cores busy"]
    table = [[label, row, r["forward_ms"], r["forward_backward_ms"], r["backward_ms"], r["backward_vs_mindspore"],
              r["fastest_forward_backward_ms"], r["cores_busy"]]
             for label, layer in figures["layers"].items() for row, r in layer["rows"].items()]
    lines.append(tabulate(table, headers, floatfmt=("", "", ".1f", ".1f", ".1f", ".2f", ".1f", ".2f")))
    lines.append("custom op vs MindSpore, max |difference| / max |MindSpore|: " + "; ".join(
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
    parser = argparse.ArgumentParser(prog="python -m imbsam.convbench", description=__doc__.split("\n")[0])
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
