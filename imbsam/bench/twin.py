"""The PyTorch twin of imbsam.models' networks, built from the same imbsam.architectures entry: the step
benchmark's PyTorch SGD row (`--compare-torch`), the oracle (imbsam.bench.oracle) and kinks (imbsam.bench.kinks)
run it. Only they need PyTorch, so it comes in as an argument rather than an import."""

from imbsam.architectures import ARCHITECTURES, blocks
from imbsam.datasets import cifar100


def torch_resnet(torch, arch, relu=None):
    """The PyTorch twin of imbsam.models' network `arch` (create_model(arch)), a torch.nn.Module.
    relu: the function every ReLU of the network calls, in forward order (default torch's)."""
    nn, functional = torch.nn, torch.nn.functional
    architecture = ARCHITECTURES[arch]
    relu = relu or functional.relu

    class ReLU(nn.Module):
        def forward(self, x):
            return relu(x)

    class PadShortcut(nn.Module):
        def __init__(self, extra):
            super().__init__()
            self.padding = (0, 0, 0, 0, extra // 2, extra - extra // 2)

        def forward(self, x):
            return functional.pad(x[:, :, ::2, ::2], self.padding)

    class BasicBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride, shortcut):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.shortcut = shortcut

        def forward(self, x):
            out = relu(self.bn1(self.conv1(x)))
            return relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    stem = architecture.stem_channels
    layers = [nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), ReLU()]
    for in_channels, channels, stride in blocks(architecture):
        if stride == 1 and in_channels == channels:
            shortcut = nn.Identity()
        elif architecture.shortcut == "projection":
            shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
        else:
            shortcut = PadShortcut(channels - in_channels)
        layers.append(BasicBlock(in_channels, channels, stride, shortcut))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(architecture.stages[-1][0], cifar100.NUM_CLASSES)]
    return nn.Sequential(*layers)
