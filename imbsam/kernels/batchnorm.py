"""Training-mode BatchNorm on the CPU, fused with what follows it in a ResNet block: nothing, a ReLU,
or a residual add and a ReLU, as MindSpore custom operators on batchnorm.c's kernels.

MindSpore 2.10's CPU BatchNorm, ReLU and Add are separate kernels, each a pass over the activations
forward and backward; fused, ResNet-32's graph-mode SGD step ran about 1.2x faster (docs/performance.md).
The kernels sum in double, so their input gradient is closer to a float64 reference than
MindSpore's own (tests/unit/test_batchnorm.py). imbsam.models' BatchNorm2d calls them in training;
evaluation keeps MindSpore's kernels, which read the running statistics.
"""

import functools

from imbsam.kernels import native

SOURCE = "batchnorm.c"
_ENTRY_POINTS = {(False, False): "BatchNorm", (True, False): "BatchNormReLU", (True, True): "BatchNormAddReLU"}


def available():
    """Whether the kernels build here; the reason if not."""
    try:
        native.build(SOURCE)
    except (native.BuildError, OSError) as error:
        return False, str(error)
    return True, ""


def _statistics_in_double(x, *_):
    from mindspore import float64

    return x, float64, float64


@functools.cache
def operator(relu, residual):
    """(x[, residual], gamma, beta, running mean, running variance, (eps, momentum)) -> (max(0, bn(x)
    [+ residual]) or bn(x), batch mean, 1 / sqrt(batch variance + eps)) for NCHW float32, with its gradient.
    The statistics are float64; as MindSpore's BatchNorm, the operator moves the running statistics
    (Parameters) in place, by `momentum` towards the batch mean and unbiased variance."""
    from mindspore import ops

    if (relu, residual) not in _ENTRY_POINTS:
        raise ValueError("batchnorm.c fuses a residual add only before a ReLU")
    entry = f"{native.build(SOURCE)}:{_ENTRY_POINTS[relu, residual]}"
    r = int(residual)

    def grad_shape(x, *rest):
        channels = rest[1 + relu]  # gamma's shape, after dy [and y]
        return (x, channels, channels, x) if residual else (x, channels, channels)

    grad = ops.Custom(f"{entry}Grad", grad_shape, lambda x, *_: (x,) * (3 + r), "aot")

    # The ReLU's mask is read off the output; the statistics have no gradient.
    if residual:
        def bprop(x, skip, gamma, beta, mean, variance, settings, out, dout):
            dx, dgamma, dbeta, dskip = grad(x, dout[0], out[0], gamma, out[1], out[2])
            return dx, dskip, dgamma, dbeta, ops.zeros_like(mean), ops.zeros_like(variance), ops.zeros_like(settings)
    elif relu:
        def bprop(x, gamma, beta, mean, variance, settings, out, dout):
            dx, dgamma, dbeta = grad(x, dout[0], out[0], gamma, out[1], out[2])
            return dx, dgamma, dbeta, ops.zeros_like(mean), ops.zeros_like(variance), ops.zeros_like(settings)
    else:
        def bprop(x, gamma, beta, mean, variance, settings, out, dout):
            dx, dgamma, dbeta = grad(x, dout[0], gamma, out[1], out[2])
            return dx, dgamma, dbeta, ops.zeros_like(mean), ops.zeros_like(variance), ops.zeros_like(settings)

    def out_shape(x, *rest):
        return x, rest[r], rest[r]

    fused = ops.Custom(entry, out_shape, _statistics_in_double, "aot", bprop=bprop)
    # The kernel writes the running statistics in place, as MindSpore's BatchNorm kernel does: as a side
    # effect, the call is kept and ordered in graph mode. Assigning them from outputs instead doubled the
    # graphs' compile time and added 130 MiB to ResNet-32's peak. (MindSpore's BatchNorm also declares the
    # two inputs written, but MindSpore 2.10's PyNative keys such declarations by primitive name, and every
    # custom operator is "Custom": the convolutions' and the gradients' would inherit them.)
    fused.add_prim_attr("side_effect_mem", True)
    return fused
