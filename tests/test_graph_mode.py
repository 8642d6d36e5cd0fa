"""Graph mode (train.mode=graph, the default on GPU and Ascend) against PyNative on the real networks.

The tiny network of test_optim_equivalence.py checks the update rule in both modes; these tests check
that the ResNets themselves differentiate the same way in both, over several calls, because the
graph-mode fault met so far (ops.pad's gradient, MindSpore 2.10) was right on the first call and
wrong on every later one.
"""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from mindspore.graph.api import cells_compile_cache  # the phases each Cell compiled

from imbsam.models import create_model
from imbsam.optim import make_optimizer, make_train_step

BATCH, CLASSES = 8, 10


@pytest.fixture
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def batches(count):
    rng = np.random.default_rng(3)
    out = []
    for index in range(count):
        labels = rng.integers(0, CLASSES, BATCH).astype(np.int32)
        if index == 1:
            labels %= 7  # no tail sample: ImbSAM's other branch
        out.append((Tensor(rng.normal(size=(BATCH, 3, 32, 32)).astype(np.float32)), Tensor(labels)))
    return out


def run_steps(method, data, mode):
    network = create_model("resnet32", CLASSES, seed=5)
    optimizer = make_optimizer(network, 0.1, momentum=0.9, weight_decay=1e-3)
    step = make_train_step(network, nn.CrossEntropyLoss(reduction="none"), optimizer, method, rho=0.5,
                           tail_classes=(7, 8, 9), mode=mode)
    losses = [float(step(images, labels).asnumpy()) for images, labels in data]
    return losses, {p.name: p.asnumpy().copy() for p in network.get_parameters()}


def test_resnet32_gradient_is_the_same_on_every_call_in_graph_mode(graph_mode):
    network = create_model("resnet32", CLASSES, seed=5)
    network.set_train(True)
    loss_fn = nn.CrossEntropyLoss()

    def loss(images, labels):  # graph mode cannot compile a lambda written inside a call
        return loss_fn(network(images), labels)

    grad_fn = ms.grad(loss, None, network.trainable_params())
    (images, labels), = batches(1)
    first, second = ([g.asnumpy().copy() for g in grad_fn(images, labels)] for _ in range(2))
    for a, b, p in zip(first, second, network.trainable_params()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=p.name)


def test_graph_and_pynative_imbsam_steps_agree_on_resnet32():
    data = batches(3)
    pynative_losses, pynative = run_steps("imbsam", data, "pynative")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        graph_losses, graph = run_steps("imbsam", data, "graph")
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(graph_losses, pynative_losses, rtol=1e-5)
    for name, value in pynative.items():
        np.testing.assert_allclose(graph[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


TAIL = {"tail_classes": (7, 8, 9)}
FOCAL = {"class_weights": tuple(np.linspace(0.8, 0.0, CLASSES))}


@pytest.mark.parametrize(("method", "options"), [
    ("sgd", {}), ("sam", {}), ("imbsam", TAIL), ("focal_sam", FOCAL), ("focal_sam", {**FOCAL, "adaptive": True}),
    ("sse_sam", TAIL)])
def test_graph_mode_steps_compile_once_and_never_again(method, options):
    """A step's graphs compile on the first batches of each kind, then never: tuples of fresh tensors
    passed as plain tuples recompiled a graph on every call (seconds per step on ResNet-34)."""

    def compiled_graphs():
        return sum(len(phases) for phases in cells_compile_cache.values())

    network = create_model("resnet32", CLASSES, seed=5)
    step = make_train_step(network, nn.CrossEntropyLoss(reduction="none"),
                           make_optimizer(network, 0.1, momentum=0.9), method, **options)
    warm_up, later = batches(3), batches(6)[3:]  # batches(3): a tail batch, a tail-free one, a tail one
    before = compiled_graphs()
    for images, labels in warm_up:
        step(images, labels)
    after_warm_up = compiled_graphs()
    for images, labels in later:
        step(Tensor(images.asnumpy() + 0.5), Tensor(labels.asnumpy()))
    assert after_warm_up > before
    assert compiled_graphs() == after_warm_up
