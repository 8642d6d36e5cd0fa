"""The training loop's parts that need no training run: the time estimate, augmentation, the batches and their
producer thread, tail classes, bad input. The runs are in tests/test_train.py."""

import time

import numpy as np
import pytest

from imbsam import registry
from imbsam.data.augment import MEAN, STD, TrainBatches, augment, normalize
from imbsam.errors import InputError
from imbsam.train import typical_step_seconds


def test_the_time_estimate_ignores_a_step_that_compiled():
    # Step ends 1 s apart, except the third step, which compiled ImbSAM's second graph for 20 s.
    assert typical_step_seconds([0.0, 1.0, 2.0, 22.0, 23.0, 24.0]) == 1.0


def test_augment_is_a_padded_crop_with_optional_flip():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4)))
    out = augment(padded, np.arange(6), np.random.default_rng(1))
    replay = np.random.default_rng(1)
    top, left, flip = replay.integers(0, 9, 6), replay.integers(0, 9, 6), replay.random(6) < 0.5
    for i in range(6):
        expected = padded[i, :, top[i]:top[i] + 32, left[i]:left[i] + 32]
        np.testing.assert_array_equal(out[i], expected[:, :, ::-1] if flip[i] else expected)


def test_normalize_uses_the_paper_mean_and_std():
    images = np.full((1, 3, 2, 2), 255, dtype=np.uint8)
    np.testing.assert_allclose(normalize(images)[0, :, 0, 0], (1 - MEAN) / STD, rtol=1e-6)


def test_batches_depend_on_seed_and_epoch_only():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 100)
    first = list(TrainBatches(images, labels, 32, seed=3).epoch(2))
    again = list(TrainBatches(images, labels, 32, seed=3).epoch(2))
    other = list(TrainBatches(images, labels, 32, seed=3).epoch(3))
    assert [len(y) for _, y in first] == [32, 32, 32, 4]
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][1], other[0][1])
    assert TrainBatches(images, labels, 32, seed=3, max_steps_per_epoch=2).steps_per_epoch == 2


@pytest.mark.parametrize("optimizer", ["imbsam", "sse_sam"])
def test_tail_classes_are_those_below_eta(optimizer):
    group = registry.module("optimizers", optimizer).Params

    def tail_classes_for(counts, eta):
        return group(eta=eta).step_options(counts)["tail_classes"]

    assert tail_classes_for([500, 100, 20, 19, 5], 20) == [3, 4]
    assert tail_classes_for([500, 100], 20) == []


def test_bad_method_arch_and_rho_in_the_library():
    import mindspore as ms
    from mindspore import nn

    from imbsam.models import create_model
    from imbsam.optim import make_optimizer, make_train_step

    with pytest.raises(InputError, match="resnet18"):
        create_model("resnet18")
    network = nn.Dense(4, 3)
    optimizer = make_optimizer(network, 0.1)
    loss = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(InputError, match="adam"):
        make_train_step(network, loss, optimizer, "adam")
    with pytest.raises(InputError, match="rho"):
        make_train_step(network, loss, optimizer, "sam", rho=-1.0)
    with pytest.raises(InputError, match="sgd takes no option rho"):
        make_train_step(network, loss, optimizer, "sgd", rho=0.05)
    with pytest.warns(UserWarning, match="equals SGD"):
        make_train_step(network, loss, optimizer, "imbsam", tail_classes=())
    del ms


def test_an_abandoned_epoch_leaves_no_producer_thread():
    import threading

    batches = TrainBatches(np.zeros((200, 3, 32, 32), dtype=np.uint8), np.zeros(200), 4, seed=0, prefetch=2)
    before = threading.active_count()
    for epoch in range(3):
        stream = batches.epoch(epoch)
        next(stream)
        time.sleep(0.2)  # the producer fills the queue and waits for room
        stream.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
