"""imbsam.kernels.batchnorm's fused training-mode BatchNorm (+ ReLU, + residual add) against MindSpore's own
kernels, in both modes, and against a float64 reference where float32 arithmetic loses digits."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from imbsam.device.target import setup
from imbsam.errors import InputError
from imbsam.kernels import batchnorm, onednn
from imbsam.models import BatchNorm2d, resolve_kernels

setup("CPU", "pynative")

# (relu, residual): what follows the BatchNorm in imbsam.models' networks
VARIANTS = [(False, False), (True, False), (True, True)]


def _relative(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


class _Gradients(nn.Cell):
    """The output, and the gradients of sum(bn(x[, residual]) * cotangent) for the inputs, gamma and beta."""

    def __init__(self, bn, cotangent):
        super().__init__()
        self.bn, self.cotangent = bn, cotangent
        self.grad = ms.grad(self.loss, grad_position=(0, 1), weights=bn.trainable_params())

    def loss(self, x, residual):
        return (self.bn(x, residual) * self.cotangent).sum()

    def construct(self, x, residual):
        output = self.bn(x, residual)
        return output, self.grad(x, residual)


class _NoResidual(nn.Cell):
    def __init__(self, bn):
        super().__init__()
        self.bn = bn

    def construct(self, x, residual):
        return self.bn(x) + 0 * residual  # the same signature; the residual's gradient is zero


def _bn(relu, residual, fused, gamma, beta):
    bn = BatchNorm2d(gamma.size, relu=relu, residual=residual)
    ms.ops.assign(bn.gamma, Tensor(gamma))
    ms.ops.assign(bn.beta, Tensor(beta))
    if fused:
        bn.fused = batchnorm.operator(bn.relu, bn.residual)
    return bn


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("relu, residual", VARIANTS)
@pytest.mark.parametrize("shape", [(4, 8, 6, 6), (3, 5, 7, 9)])
def test_fused_kernels_match_mindspores(mode, relu, residual, shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    skip = rng.standard_normal(shape).astype(np.float32)
    cotangent = Tensor(rng.standard_normal(shape).astype(np.float32))
    gamma, beta = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
    results = []
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        for fused in (True, False):
            bn = _bn(relu, residual, fused, gamma, beta)
            bn.set_train(True)
            cell = bn if residual else _NoResidual(bn)
            output, (input_grads, weight_grads) = _Gradients(cell, cotangent)(Tensor(x), Tensor(skip))
            results.append({"output": output, "input gradient": input_grads[0], "residual gradient": input_grads[1],
                            "gamma gradient": weight_grads[0], "beta gradient": weight_grads[1],
                            "running mean": bn.moving_mean, "running variance": bn.moving_variance})
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    ours, theirs = results
    for name in ours:
        if name == "residual gradient" and not residual:
            continue
        assert _relative(ours[name].asnumpy(), theirs[name].asnumpy()) < 1e-5, name
    # Two forwards ran (the output, then the gradient's): the running statistics moved twice from 0 and 1.
    mean = x.astype(np.float64).mean(axis=(0, 2, 3))
    count = x.size // shape[1]
    variance = x.astype(np.float64).var(axis=(0, 2, 3)) * count / (count - 1)
    np.testing.assert_allclose(ours["running mean"].asnumpy(), 0.19 * mean, rtol=1e-5)
    np.testing.assert_allclose(ours["running variance"].asnumpy(), 0.81 + 0.19 * variance, rtol=1e-5)


def test_the_input_gradient_keeps_its_digits_where_its_terms_cancel():
    """The output gradient nearly in the span of 1 and the normalised input: dx is a small difference of
    large terms. With the statistics, sums and dx in double, the fused kernel's dx stays within float32
    rounding of a float64 reference; MindSpore's own kernel is further off."""
    rng = np.random.default_rng(0)
    shape = (4, 16, 32, 32)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    x64 = x.astype(np.float64)
    normalised = (x64 - x64.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x64.var(axis=(0, 2, 3), keepdims=True)
                                                                          + 1e-5)
    cotangent = (0.7 + 1.3 * normalised + 1e-3 * rng.standard_normal(shape)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 16)
    dy = cotangent.astype(np.float64)
    inv_std = 1 / np.sqrt(x64.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    reference = gamma.reshape(1, -1, 1, 1) * inv_std * (dy - dy.mean(axis=(0, 2, 3), keepdims=True) - normalised
                                                        * (dy * normalised).mean(axis=(0, 2, 3), keepdims=True))
    errors = {}
    for fused in (True, False):
        bn = _bn(False, False, fused, gamma.astype(np.float32), np.zeros(16, np.float32))
        bn.set_train(True)
        gradient = ms.grad(lambda x, bn=bn: (bn(x) * Tensor(cotangent)).sum())(Tensor(x))
        errors[fused] = _relative(gradient.asnumpy(), reference)
    assert errors[True] < 1e-6  # float32 statistics alone would give 1e-4 here
    assert errors[True] < errors[False] / 100  # MindSpore 2.10's: 3.7e-4


@pytest.mark.parametrize("relu, residual", VARIANTS)
def test_evaluation_reads_the_running_statistics(relu, residual):
    rng = np.random.default_rng(2)
    x, skip = (Tensor(rng.standard_normal((2, 4, 3, 3)).astype(np.float32)) for _ in range(2))
    outputs = []
    for fused in (True, False):
        bn = _bn(relu, residual, fused, np.full(4, 1.5, np.float32), np.full(4, 0.25, np.float32))
        ms.ops.assign(bn.moving_mean, Tensor(np.arange(4, dtype=np.float32)))
        ms.ops.assign(bn.moving_variance, Tensor(np.full(4, 4.0, np.float32)))
        bn.set_train(False)
        outputs.append((bn(x, skip) if residual else bn(x)).asnumpy())
    np.testing.assert_allclose(*outputs, rtol=1e-6)
    expected = (x.asnumpy() - np.arange(4).reshape(1, -1, 1, 1)) / np.sqrt(4 + 1e-5) * 1.5 + 0.25
    if residual:
        expected = expected + skip.asnumpy()
    np.testing.assert_allclose(outputs[0], np.maximum(expected, 0) if relu else expected, rtol=1e-5, atol=1e-6)


def test_a_residual_add_is_fused_only_before_a_relu():
    with pytest.raises(ValueError, match="only before a ReLU"):
        batchnorm.operator(False, True)


def test_without_a_compiler_auto_falls_back_and_onednn_says_why(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: (True, ""))
    monkeypatch.setattr(batchnorm, "available", lambda: (False, "could not compile batchnorm.c"))
    with pytest.warns(UserWarning, match="MindSpore's own .* because could not compile batchnorm.c"):
        assert resolve_kernels("auto") == "mindspore"
    with pytest.raises(InputError, match="could not compile batchnorm.c.*train.kernels=auto"):
        resolve_kernels("onednn")
