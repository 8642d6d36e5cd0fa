"""The networks of imbsam.architectures in MindSpore, by name: the paper's ResNet-34 and LDAM's ResNet-32.

Weights are drawn from a NumPy generator seeded by `seed`, so a seed gives the same initial network on
CPU, GPU and Ascend; the distribution of each layer kind is the architecture's (imbsam.architectures).
"""

import warnings

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from imbsam.architectures import ARCHITECTURES, KAIMING_NORMAL_FAN_IN, PYTORCH_DEFAULT, blocks
from imbsam.errors import InputError
from imbsam.kernels import batchnorm, onednn
from imbsam.params import ARCHS, KERNELS


class Conv2d(nn.Conv2d):
    """A bias-free nn.Conv2d padded by kernel_size // 2, whose kernels `use_onednn_kernels` can swap
    for imbsam.kernels.onednn's: the same parameter, the same result to float32 rounding."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                         padding=kernel_size // 2, has_bias=False)
        self.onednn = None

    def construct(self, x):
        if self.onednn is None:
            return self.conv2d(x, self.weight)
        return self.onednn(x, self.weight)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d, then with `relu` max(0, .), or with `residual` too max(0, . + the call's residual):
    in training, one kernel of imbsam.kernels.batchnorm once `use_onednn_kernels` sets `fused`, with the same
    parameters and running statistics."""

    def __init__(self, num_features, relu=False, residual=False):
        super().__init__(num_features)
        self.relu, self.residual = relu or residual, residual
        self.fused = None
        # self.momentum is MindSpore's: the weight of the new batch
        self.settings = Tensor([self.eps, self.momentum], ms.float32)

    def construct(self, x, residual=None):
        if self.fused is None or not self.training:
            out = super().construct(x)
            if residual is not None:
                out = out + residual
            return ops.relu(out) if self.relu else out
        stats = (self.moving_mean, self.moving_variance, self.settings)
        if residual is None:
            return self.fused(x, self.gamma, self.beta, *stats)[0]
        return self.fused(x, residual, self.gamma, self.beta, *stats)[0]


def _conv3x3(in_channels, out_channels, stride=1):
    return Conv2d(in_channels, out_channels, 3, stride)


class BasicBlock(nn.Cell):
    """Two 3x3 convolutions with BatchNorm; `shortcut` maps the input to the output shape."""

    def __init__(self, in_channels, out_channels, stride, shortcut):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = BatchNorm2d(out_channels, relu=True)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = BatchNorm2d(out_channels, residual=True)
        self.shortcut = shortcut

    def construct(self, x):
        out = self.bn1(self.conv1(x))
        return self.bn2(self.conv2(out), self.shortcut(x))


class ProjectionShortcut(nn.Cell):
    """1x1 convolution + BatchNorm (torchvision's downsample)."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, 1, stride)
        self.bn = BatchNorm2d(out_channels)

    def construct(self, x):
        return self.bn(self.conv(x))


class PadShortcut(nn.Cell):
    """LDAM's option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        extra = out_channels - in_channels
        self.low, self.high = extra // 2, extra - extra // 2
        # A 1x1 stride-2 pool is x[:, :, ::2, ::2]; the slice's gradient kernel fails on the CPU.
        self.subsample = nn.AvgPool2d(kernel_size=1, stride=2)

    def construct(self, x):
        x = self.subsample(x)
        n, _, h, w = x.shape
        # Concatenated zeros rather than ops.pad: in graph mode ops.pad's gradient was wrong on every
        # call after the first (MindSpore 2.10, CPU), while concat's matches PyNative bit for bit.
        return ops.concat((ops.zeros((n, self.low, h, w), x.dtype), x, ops.zeros((n, self.high, h, w), x.dtype)), 1)


class Identity(nn.Cell):
    def construct(self, x):
        return x


class GlobalAvgPool(nn.Cell):
    def construct(self, x):
        return x.mean(axis=(2, 3), keep_dims=True)


class NormalisedLinear(nn.Cell):
    """LDAM-DRW's `NormedLinear`: cosines between the unit feature and each class's unit weight column, no bias."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = Parameter(Tensor(np.zeros((in_features, out_features), dtype=np.float32)), name="weight")

    @staticmethod
    def _unit(x, axis):
        # F.normalize's x / max(||x||, 1e-12).
        return x / ops.maximum(ops.sqrt((x * x).sum(axis=axis, keepdims=True)), 1e-12)

    def construct(self, x):
        return ops.matmul(self._unit(x, 1), self._unit(self.weight, 0))


class ResNet(nn.Cell):
    def __init__(self, architecture, num_classes, normalised_head=False):
        super().__init__()
        self.conv1 = _conv3x3(3, architecture.stem_channels)
        self.bn1 = BatchNorm2d(architecture.stem_channels, relu=True)
        layers = []
        for in_channels, channels, stride in blocks(architecture):
            if stride == 1 and in_channels == channels:
                shortcut = Identity()
            elif architecture.shortcut == "projection":
                shortcut = ProjectionShortcut(in_channels, channels, stride)
            else:
                shortcut = PadShortcut(in_channels, channels)
            layers.append(BasicBlock(in_channels, channels, stride, shortcut))
        self.layers = nn.SequentialCell(layers)
        # Input 32x32 and three stride-2 stages leave 4x4 maps, which the authors' 4x4 average pool covers.
        self.pool = GlobalAvgPool()
        self.flatten = nn.Flatten()
        features = architecture.stages[-1][0]
        self.fc = NormalisedLinear(features, num_classes) if normalised_head else nn.Dense(features, num_classes)

    def construct(self, x):
        out = self.layers(self.bn1(self.conv1(x)))
        return self.fc(self.flatten(self.pool(out)))


def _draw(rng, rule, shape):
    """Weights of `shape` (out, in[, kh, kw]) by an imbsam.architectures rule."""
    fan_in = int(np.prod(shape[1:]))
    if rule == PYTORCH_DEFAULT:
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape)
    fan = fan_in if rule == KAIMING_NORMAL_FAN_IN else shape[0] * int(np.prod(shape[2:]))
    return rng.normal(0.0, np.sqrt(2.0 / fan), shape)


def _initialise(network, architecture, rng):
    for _, cell in network.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            rule = architecture.stem_init if cell is network.conv1 else architecture.conv_init
            _assign(cell.weight, _draw(rng, rule, cell.weight.shape))
        elif isinstance(cell, NormalisedLinear):
            # uniform(-1, 1), each class's column renormed to length 1 (LDAM-DRW's renorm_(2, 1, 1e-5).mul_(1e5)).
            weight = rng.uniform(-1.0, 1.0, cell.weight.shape)
            _assign(cell.weight, weight / np.linalg.norm(weight, axis=0, keepdims=True))
        elif isinstance(cell, nn.Dense):
            _assign(cell.weight, _draw(rng, architecture.linear_weight_init, cell.weight.shape))
            bound = 1.0 / np.sqrt(cell.weight.shape[1])
            _assign(cell.bias, rng.uniform(-bound, bound, cell.bias.shape))
        elif isinstance(cell, nn.BatchNorm2d):
            _assign(cell.gamma, np.ones(cell.gamma.shape))
            _assign(cell.beta, np.zeros(cell.beta.shape))


def _assign(parameter: Parameter, value):
    ops.assign(parameter, Tensor(np.asarray(value, dtype=np.float32)))


def resolve_kernels(kernels="auto"):
    """"onednn" or "mindspore": which kernels `kernels` ("auto", "onednn", "mindspore") means here.
    "onednn" is imbsam's CPU set: imbsam.kernels.onednn's convolutions and imbsam.kernels.batchnorm's
    fused BatchNorm.

    auto takes them on the CPU, where they made graph-mode steps 1.8-2.2x faster than MindSpore's own
    (docs/performance.md), if they load here, and warns why if not; on GPU and Ascend MindSpore's own
    kernels are the device's."""
    if kernels not in KERNELS:
        raise InputError(f"train.kernels={kernels!r} is not one of {', '.join(KERNELS)}")
    if kernels == "mindspore" or (kernels == "auto" and ms.get_context("device_target") != "CPU"):
        return "mindspore"
    (convolutions, reason), (batch_norm, why_not) = onednn.available(), batchnorm.available()
    loads, reason = convolutions and batch_norm, reason or why_not
    if loads:
        return "onednn"
    if kernels == "onednn":
        raise InputError(f"train.kernels=onednn, but oneDNN does not load: {reason}; "
                         "or set train.kernels=auto")
    warnings.warn(f"train.kernels=auto: MindSpore's own (slower) CPU kernels, because {reason}", stacklevel=2)
    return "mindspore"


def use_onednn_kernels(network):
    """Run every imbsam Conv2d of `network` on imbsam.kernels.onednn's kernels and every BatchNorm2d, in training,
    on imbsam.kernels.batchnorm's (CPU only)."""
    for _, cell in network.cells_and_names():
        if isinstance(cell, Conv2d):
            cell.onednn = onednn.conv2d_operator(cell.stride[0])
        elif isinstance(cell, BatchNorm2d):
            cell.fused = batchnorm.operator(cell.relu, cell.residual)


def create_model(arch, num_classes=100, seed=0, kernels="auto", normalised_head=False):
    """Build "resnet34" (the paper's) or "resnet32" (LDAM's, about 1/45 of the compute), its convolutions
    and BatchNorms on the kernels `resolve_kernels(kernels)` names; `network.kernels` says
    which. normalised_head: a NormalisedLinear last layer (LDAM's) instead of a linear one."""
    if arch not in ARCHITECTURES:
        raise InputError(f"model.arch={arch!r} is not one of {', '.join(ARCHS)}")
    resolved = resolve_kernels(kernels)
    network = ResNet(ARCHITECTURES[arch], num_classes, normalised_head)
    _initialise(network, ARCHITECTURES[arch], np.random.default_rng(seed))
    if resolved == "onednn":
        use_onednn_kernels(network)
    network.kernels = resolved
    return network
