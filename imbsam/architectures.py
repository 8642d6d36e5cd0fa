"""The networks as data: one description per architecture, built by imbsam.models in MindSpore and by the
benchmark's PyTorch twin, so the two cannot drift apart. Importing it loads no framework.

Initialisation follows each network's source, layer kind by layer kind:
- resnet34, the authors' `ResnetEncoder` (utils/network_arch_resnet.py of their PyTorch code): torchvision's
  resnet34() initialises its convolutions Kaiming-normal (fan_out, ReLU) and its BatchNorms to scale 1 and
  shift 0; the 3x3 stride-1 stem and the linear head are then REPLACED by new layers, which keep PyTorch's
  default: uniform(+-1/sqrt(fan_in)) for the weights (kaiming_uniform with a = sqrt(5)) and the bias.
- resnet32, LDAM-DRW's `resnet32` (models/resnet_cifar.py): `_weights_init` draws every convolution and the
  linear weight Kaiming-normal (fan_in); the linear bias keeps PyTorch's default uniform(+-1/sqrt(fan_in)).
"""

from dataclasses import dataclass

from imbsam.params import ARCHS

KAIMING_NORMAL_FAN_OUT = "kaiming_normal_fan_out"
KAIMING_NORMAL_FAN_IN = "kaiming_normal_fan_in"
PYTORCH_DEFAULT = "pytorch_default"  # uniform(+-1/sqrt(fan_in)), weight and bias


@dataclass(frozen=True)
class Architecture:
    """A CIFAR ResNet of BasicBlocks: a 3x3 stride-1 stem, stages of (channels, blocks) whose first block
    halves the resolution (after the first stage), a global average pool and a linear head."""

    stem_channels: int
    stages: tuple
    shortcut: str  # "projection": 1x1 convolution + BatchNorm (torchvision); "pad": subsample, zero channels (LDAM)
    stem_init: str
    conv_init: str
    linear_weight_init: str
    source: str


ARCHITECTURES = {
    "resnet34": Architecture(
        stem_channels=64, stages=((64, 3), (128, 4), (256, 6), (512, 3)), shortcut="projection",
        stem_init=PYTORCH_DEFAULT, conv_init=KAIMING_NORMAL_FAN_OUT, linear_weight_init=PYTORCH_DEFAULT,
        source="the authors' CIFAR ResNet-34 (torchvision's, 3x3 stem, no max-pool)"),
    "resnet32": Architecture(
        stem_channels=16, stages=((16, 5), (32, 5), (64, 5)), shortcut="pad",
        stem_init=KAIMING_NORMAL_FAN_IN, conv_init=KAIMING_NORMAL_FAN_IN, linear_weight_init=KAIMING_NORMAL_FAN_IN,
        source="LDAM-DRW's CIFAR ResNet-32, about 1/45 of ResNet-34's compute"),
}
assert tuple(ARCHITECTURES) == ARCHS, "imbsam.params.ARCHS names the architectures, in this order"


def blocks(architecture):
    """(in_channels, out_channels, stride) of every BasicBlock, in order."""
    in_channels = architecture.stem_channels
    for stage_index, (channels, depth) in enumerate(architecture.stages):
        for block_index in range(depth):
            yield in_channels, channels, 2 if stage_index > 0 and block_index == 0 else 1
            in_channels = channels
