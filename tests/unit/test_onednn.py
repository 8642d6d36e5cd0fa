"""imbsam.kernels.onednn's convolutions against MindSpore's own, alone and inside the networks, in both modes."""

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from imbsam.device.target import setup
from imbsam.errors import InputError
from imbsam.kernels import onednn
from imbsam.models import create_model, resolve_kernels

setup("CPU", "pynative")

# (batch, in channels, out channels, image side, kernel, stride): the networks' kinds of layer, at odd sides too.
LAYERS = [(3, 3, 8, 9, 3, 1), (2, 8, 16, 9, 3, 2), (2, 8, 16, 10, 3, 2), (2, 8, 16, 7, 1, 2), (4, 16, 16, 8, 3, 1)]


def _relative(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _layer(batch, in_channels, out_channels, side, kernel, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, in_channels, side, side), dtype=np.float32),
            rng.standard_normal((out_channels, in_channels, kernel, kernel), dtype=np.float32))


class _Gradients(nn.Cell):
    """Gradients of sum(conv(x, w) * cotangent) with respect to x and w; a Cell, so graph mode compiles it."""

    def __init__(self, conv, cotangent):
        super().__init__()
        self.conv, self.cotangent = conv, cotangent
        self.grad = ms.grad(self.loss, grad_position=(0, 1))

    def loss(self, x, w):
        return (self.conv(x, w) * self.cotangent).sum()

    def construct(self, x, w):
        return self.conv(x, w), self.grad(x, w)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("batch, in_channels, out_channels, side, kernel, stride", LAYERS)
def test_operator_output_and_gradients_match_mindspore(mode, batch, in_channels, out_channels, side, kernel,
                                                       stride):
    x, w = _layer(batch, in_channels, out_channels, side, kernel)
    padding = kernel // 2
    theirs = ops.Conv2D(out_channels, kernel, pad_mode="pad", pad=padding, stride=stride)
    side_out = (side + 2 * padding - kernel) // stride + 1
    cotangent = Tensor(np.random.default_rng(1).standard_normal((batch, out_channels, side_out, side_out),
                                                                 dtype=np.float32))
    results = []
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        for conv in (onednn.conv2d_operator(stride), theirs):
            output, grads = _Gradients(conv, cotangent)(Tensor(x), Tensor(w))
            results.append([output.asnumpy()] + [g.asnumpy() for g in grads])
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    ours, theirs = results
    assert ours[0].shape == theirs[0].shape
    for name, a, b in zip(("output", "input gradient", "weight gradient"), ours, theirs):
        assert _relative(a, b) < 1e-5, name


@pytest.mark.parametrize("train", [False, True])
def test_networks_give_mindspores_outputs_and_gradients(train):
    rng = np.random.default_rng(0)
    images = Tensor(rng.standard_normal((4, 3, 32, 32), dtype=np.float32))
    labels = Tensor(rng.integers(0, 10, 4).astype(np.int32))
    results = {}
    for kernels in ("onednn", "mindspore"):
        network = create_model("resnet32", 10, seed=3, kernels=kernels)
        assert network.kernels == kernels
        network.set_train(train)
        loss, grads = ms.value_and_grad(nn.WithLossCell(network, nn.CrossEntropyLoss()), None,
                                        network.trainable_params())(images, labels)
        results[kernels] = [loss.asnumpy()] + [g.asnumpy() for g in grads]
    for ours, theirs in zip(results["onednn"], results["mindspore"]):
        assert _relative(ours, theirs) < 1e-4


def test_layers_of_one_shape_share_their_primitives():
    x, w = _layer(2, 8, 8, 6, 3)
    assert onednn.convolution(x.shape, w.shape, 1, 1) is onednn.convolution(x.shape, w.shape, 1, 1)


def test_onednn_lifts_the_avx2_cap_imbsam_sets_for_mindspore():
    if " avx512f " not in Path("/proc/cpuinfo").read_text():
        pytest.skip("no AVX-512 on this CPU: the cap changes nothing")
    onednn.convolution((1, 1, 3, 3), (1, 1, 3, 3), 1, 1)
    avx2 = 0x7  # dnnl_cpu_isa_avx2
    assert onednn._library().dnnl_get_effective_cpu_isa() > avx2


def test_kernels_resolve_per_device_and_library():
    assert resolve_kernels("auto") == "onednn"
    assert resolve_kernels("mindspore") == "mindspore"
    with pytest.raises(InputError, match="train.kernels='cudnn' is not one of auto, onednn, mindspore"):
        resolve_kernels("cudnn")


def test_without_the_library_auto_falls_back_and_onednn_says_why(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: (False, "onednn-cpu-gomp is not installed"))
    with pytest.warns(UserWarning, match="MindSpore's own .* because onednn-cpu-gomp is not installed"):
        assert resolve_kernels("auto") == "mindspore"
    with pytest.raises(InputError, match="onednn-cpu-gomp is not installed.*train.kernels=auto"):
        resolve_kernels("onednn")


def test_a_missing_distribution_names_the_install_command(monkeypatch):
    monkeypatch.setattr(onednn, "DISTRIBUTION", "no-such-onednn-distribution")
    with pytest.raises(onednn.OneDNNError, match="pip install -r requirements.lock"):
        onednn.library_path()

