"""Initial weights of each network against its authors' rule, layer by layer, on the project's seeded
generator (imbsam.architectures): mean, bounds and standard deviation."""

import numpy as np
import pytest
from mindspore import nn

from imbsam.models import create_model


def _layers(network):
    for name, cell in network.cells_and_names():
        if isinstance(cell, (nn.Conv2d, nn.Dense, nn.BatchNorm2d)):
            yield name, cell


def _fan_in(shape):
    return int(np.prod(shape[1:]))


def _assert_uniform(values, bound, name):
    # U(-b, b): mean 0, std b / sqrt(3), every value inside and some near the bounds
    assert np.abs(values).max() <= bound * (1 + 1e-6), name
    assert np.abs(values).max() > 0.9 * bound, name
    assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.1), name
    assert abs(values.mean()) < 4 * bound / np.sqrt(3 * values.size) + 1e-7, name


def _assert_normal(values, std, name):
    assert values.std() == pytest.approx(std, rel=0.1), name
    assert abs(values.mean()) < 4 * std / np.sqrt(values.size), name
    # a normal's values pass its uniform twin's bound: 3 sigma are reached where there are enough of them
    if values.size > 5000:
        assert np.abs(values).max() > 3 * std, name


def test_resnet34_follows_the_authors_resnet_encoder():
    network = create_model("resnet34", 100, seed=9826, kernels="mindspore")
    layers = dict(_layers(network))
    stem = layers.pop("conv1").weight.asnumpy()
    # torchvision's init ran before the stem was replaced: PyTorch's default Conv2d, U(+-1/sqrt(3 * 3 * 3))
    _assert_uniform(stem, 1 / np.sqrt(27), "conv1")
    fc = layers.pop("fc")
    _assert_uniform(fc.weight.asnumpy(), 1 / np.sqrt(512), "fc.weight")
    _assert_uniform(fc.bias.asnumpy(), 1 / np.sqrt(512), "fc.bias")
    for name, cell in layers.items():
        if isinstance(cell, nn.BatchNorm2d):
            assert np.all(cell.gamma.asnumpy() == 1) and np.all(cell.beta.asnumpy() == 0), name
        else:  # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu")
            out_channels, _, kh, kw = cell.weight.shape
            _assert_normal(cell.weight.asnumpy(), np.sqrt(2 / (out_channels * kh * kw)), name)


def test_resnet32_follows_ldam():
    network = create_model("resnet32", 100, seed=0, kernels="mindspore")
    for name, cell in _layers(network):
        if isinstance(cell, nn.BatchNorm2d):
            continue
        weight = cell.weight.asnumpy()
        _assert_normal(weight, np.sqrt(2 / _fan_in(weight.shape)), name)  # kaiming_normal_, fan_in
        if isinstance(cell, nn.Dense):
            _assert_uniform(cell.bias.asnumpy(), 1 / np.sqrt(weight.shape[1]), f"{name}.bias")


def test_the_seed_fixes_the_network():
    first, again, other = (create_model("resnet32", 10, seed=s, kernels="mindspore") for s in (3, 3, 4))
    for a, b, c in zip(first.trainable_params(), again.trainable_params(), other.trainable_params()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert not np.array_equal(first.conv1.weight.asnumpy(), other.conv1.weight.asnumpy())
