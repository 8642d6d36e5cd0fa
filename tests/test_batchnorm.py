"""imbsam.kernels.batchnorm's fused BatchNorm in a whole network: a graph-mode ImbSAM step of ResNet-32 moves the
running statistics as MindSpore's own kernels do. Compiling ResNet-32 takes seconds, so this is not in
tests/unit/test_batchnorm.py with the kernels' own tests."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from imbsam.device.target import setup
from imbsam.models import create_model
from imbsam.optim import make_optimizer, make_train_step

setup("CPU", "pynative")


@pytest.mark.parametrize("bn_update_in_perturbed_pass", [True, False])
@pytest.mark.parametrize("tail", [True, False])
def test_an_imbsam_step_moves_the_running_statistics_as_with_mindspores_kernels(bn_update_in_perturbed_pass, tail):
    """A graph-mode ImbSAM step saves, restores and replays the running statistics around the fused kernels'
    in-place updates, on a batch with a tail sample and on one without. One step from the same weights:
    float32 rounding, amplified through 31 layers, parts the two kernels' weights within a few steps."""
    rng = np.random.default_rng(3)
    images = Tensor(rng.normal(size=(8, 3, 32, 32)).astype(np.float32))
    labels = Tensor((rng.integers(0, 10, 8) % (10 if tail else 7)).astype(np.int32))
    results = {}
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        for kernels in ("onednn", "mindspore"):
            network = create_model("resnet32", 10, seed=5, kernels=kernels)
            step = make_train_step(network, nn.CrossEntropyLoss(reduction="none"),
                                   make_optimizer(network, 0.1, momentum=0.9), "imbsam", rho=0.5,
                                   tail_classes=(7, 8, 9), bn_update_in_perturbed_pass=bn_update_in_perturbed_pass)
            step(images, labels)
            results[kernels] = {p.name: p.asnumpy() for p in network.get_parameters() if "moving" in p.name}
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert len(results["onednn"]) == 62
    for name, value in results["mindspore"].items():
        assert np.linalg.norm(results["onednn"][name] - value) < 1e-5 * np.linalg.norm(value), name
