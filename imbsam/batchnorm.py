"""Training-mode BatchNorm on the CPU, fused with what follows it in a ResNet block: nothing, a ReLU,
or a residual add and a ReLU, as MindSpore custom operators on batchnorm.c's kernels.

MindSpore 2.10's CPU BatchNorm, ReLU and Add are separate kernels, each a pass over the activations
forward and backward; fused, ResNet-32's graph-mode SGD step ran 13% faster (README, Performance).
The kernels sum in double, so their input gradient is closer to a float64 reference than
MindSpore's own (tests/test_batchnorm.py). imbsam.models' BatchNorm2d calls them in training;
evaluation keeps MindSpore's kernels, which read the running statistics.
"""

import functools

from imbsam import native

SOURCE = "batchnorm.c"
_ENTRY_POINTS = {(False, False): "BatchNorm", (True, False): "BatchNormReLU", (True, True): "BatchNormAddReLU"}


def available():
    """Whether the kernels build here; the reason if not."""
    try:
        native.build(SOURCE)
    except (native.BuildError, OSError) as error:
        return False, str(error)
    return True, ""


def _same_dtype(x, *_):
    return x, x, x, x


def _statistics_in_double(x, *_):
    from mindspore import float64

    return x, float64, float64, float64


@functools.cache
def operator(relu, residual):
    """(x[, residual], gamma, beta, eps) -> (max(0, bn(x) [+ residual]) or bn(x), batch mean, biased batch
    variance, 1 / sqrt(variance + eps)) for NCHW float32, with its gradient; eps is a 1-element tensor and
    the statistics are float64."""
    from mindspore import ops

    if (relu, residual) not in _ENTRY_POINTS:
        raise ValueError("batchnorm.c fuses a residual add only before a ReLU")
    entry = f"{native.build(SOURCE)}:{_ENTRY_POINTS[relu, residual]}"
    r = int(residual)

    def grad_shape(x, *rest):
        channels = rest[1 + relu]  # gamma's shape, after dy [and y]
        return (x, channels, channels, x) if residual else (x, channels, channels)

    grad = ops.Custom(f"{entry}Grad", grad_shape, lambda x, *_: _same_dtype(x)[:3 + r], "aot")

    # The ReLU's mask is read off the output; dout's statistics entries only ever feed running averages.
    if residual:
        def bprop(x, skip, gamma, beta, eps, out, dout):
            dx, dgamma, dbeta, dskip = grad(x, dout[0], out[0], gamma, out[1], out[3])
            return dx, dskip, dgamma, dbeta, ops.zeros_like(eps)
    elif relu:
        def bprop(x, gamma, beta, eps, out, dout):
            return (*grad(x, dout[0], out[0], gamma, out[1], out[3]), ops.zeros_like(eps))
    else:
        def bprop(x, gamma, beta, eps, out, dout):
            return (*grad(x, dout[0], gamma, out[1], out[3]), ops.zeros_like(eps))

    def out_shape(x, *rest):
        return x, rest[r], rest[r], rest[r]

    return ops.Custom(entry, out_shape, _statistics_in_double, "aot", bprop=bprop)
