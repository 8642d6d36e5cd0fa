"""The two networks: the paper's ResNet-34 and LDAM's cheaper CIFAR ResNet-32.

Weights are drawn from a NumPy generator seeded by `seed`, so a seed gives the same
initial network on CPU, GPU and Ascend. The distributions follow the authors' code:
- resnet34 (the weight-balancing repository's torchvision-style CIFAR variant): Kaiming
  normal (fan_out, ReLU) convolutions, BatchNorm scale 1 / shift 0, PyTorch's default
  uniform(+-1/sqrt(fan_in)) for the linear layer;
- resnet32 (LDAM-DRW's): Kaiming normal (fan_in) convolutions and linear weight,
  PyTorch's default uniform bias.
"""

import warnings

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from imbsam import batchnorm, onednn
from imbsam.device import KERNELS
from imbsam.errors import InputError

ARCHS = ("resnet34", "resnet32")


class Conv2d(nn.Conv2d):
    """A bias-free nn.Conv2d padded by kernel_size // 2, whose kernels `use_onednn_kernels` can swap
    for imbsam.onednn's: the same parameter, the same result to float32 rounding."""

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
    in training, one kernel of imbsam.batchnorm once `use_onednn_kernels` sets `fused`, with the same
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


class ResNet(nn.Cell):
    def __init__(self, stem_channels, stages, num_classes, shortcut_kind, pool):
        super().__init__()
        self.conv1 = _conv3x3(3, stem_channels)
        self.bn1 = BatchNorm2d(stem_channels, relu=True)
        blocks = []
        in_channels = stem_channels
        for stage_index, (channels, depth) in enumerate(stages):
            for block_index in range(depth):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                if stride == 1 and in_channels == channels:
                    shortcut = Identity()
                elif shortcut_kind == "projection":
                    shortcut = ProjectionShortcut(in_channels, channels, stride)
                else:
                    shortcut = PadShortcut(in_channels, channels)
                blocks.append(BasicBlock(in_channels, channels, stride, shortcut))
                in_channels = channels
        self.layers = nn.SequentialCell(blocks)
        self.pool = pool
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(in_channels, num_classes)

    def construct(self, x):
        out = self.layers(self.bn1(self.conv1(x)))
        return self.fc(self.flatten(self.pool(out)))


def _resnet34(num_classes):
    # Input 32x32 and three stride-2 stages leave 4x4 maps: the 4x4 average pool is global.
    return ResNet(64, [(64, 3), (128, 4), (256, 6), (512, 3)], num_classes, "projection",
                  nn.AvgPool2d(kernel_size=4, stride=4))


class GlobalAvgPool(nn.Cell):
    def construct(self, x):
        return x.mean(axis=(2, 3), keep_dims=True)


def _resnet32(num_classes):
    return ResNet(16, [(16, 5), (32, 5), (64, 5)], num_classes, "pad", GlobalAvgPool())


def _initialise(network, arch, rng):
    for _, cell in network.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            out_c, in_c, kh, kw = cell.weight.shape
            fan = out_c * kh * kw if arch == "resnet34" else in_c * kh * kw
            _assign(cell.weight, rng.normal(0.0, np.sqrt(2.0 / fan), cell.weight.shape))
        elif isinstance(cell, nn.Dense):
            fan_in = cell.weight.shape[1]
            bound = 1.0 / np.sqrt(fan_in)
            if arch == "resnet34":
                weight = rng.uniform(-bound, bound, cell.weight.shape)
            else:
                weight = rng.normal(0.0, np.sqrt(2.0 / fan_in), cell.weight.shape)
            _assign(cell.weight, weight)
            _assign(cell.bias, rng.uniform(-bound, bound, cell.bias.shape))
        elif isinstance(cell, nn.BatchNorm2d):
            _assign(cell.gamma, np.ones(cell.gamma.shape))
            _assign(cell.beta, np.zeros(cell.beta.shape))


def _assign(parameter: Parameter, value):
    ops.assign(parameter, Tensor(np.asarray(value, dtype=np.float32)))


def resolve_kernels(kernels="auto"):
    """"onednn" or "mindspore": which kernels `kernels` ("auto", "onednn", "mindspore") means here.
    "onednn" is imbsam's CPU set: imbsam.onednn's convolutions and imbsam.batchnorm's fused BatchNorm.

    auto takes them on the CPU, where they made graph-mode steps 1.8-2.2x faster than MindSpore's own
    (README, Performance), if they load here, and warns why if not; on GPU and Ascend MindSpore's own
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
    """Run every imbsam Conv2d of `network` on imbsam.onednn's kernels and every BatchNorm2d, in training,
    on imbsam.batchnorm's (CPU only)."""
    for _, cell in network.cells_and_names():
        if isinstance(cell, Conv2d):
            cell.onednn = onednn.conv2d_operator(cell.stride[0])
        elif isinstance(cell, BatchNorm2d):
            cell.fused = batchnorm.operator(cell.relu, cell.residual)


def create_model(arch, num_classes=100, seed=0, kernels="auto"):
    """Build "resnet34" (the paper's) or "resnet32" (LDAM's, about 1/45 of the compute), its convolutions
    and BatchNorms on the kernels `resolve_kernels(kernels)` names; `network.kernels` says which."""
    builders = {"resnet34": _resnet34, "resnet32": _resnet32}
    if arch not in builders:
        raise InputError(f"model.arch={arch!r} is not one of {', '.join(ARCHS)}")
    resolved = resolve_kernels(kernels)
    network = builders[arch](num_classes)
    _initialise(network, arch, np.random.default_rng(seed))
    if resolved == "onednn":
        use_onednn_kernels(network)
    network.kernels = resolved
    return network
