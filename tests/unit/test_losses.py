"""Each loss of imbsam/losses/ against its paper's formula, written here in NumPy; LDAM's normalised head and its
deferred re-weighting; and every loss under every optimizer's step."""

import numpy as np
import pytest
from mindspore import Tensor

from imbsam import reference, registry
from imbsam.check_host.correctness import PAPER, TinyNet
from imbsam.criteria import create_loss
from imbsam.models import NormalisedLinear, create_model
from imbsam.optim import make_optimizer, make_train_step

COUNTS = [500, 120, 30, 5]
RNG = np.random.default_rng(4)
LOGITS = RNG.normal(0, 2, (12, 4))
LABELS = np.array([0, 1, 2, 3] * 3)


def _ce(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]


def _per_sample(name, epoch=1, logits=LOGITS, **params):
    cell = create_loss(name, len(COUNTS), registry.module("losses", name).Params(**params).loss_options(COUNTS))
    cell.start_epoch(epoch)
    return cell(Tensor(logits.astype(np.float32)), Tensor(LABELS.astype(np.int32))).asnumpy()


def _ldam(logits, labels, weights, max_margin=0.5, scale=30.0):
    """Cao et al.: margins C / n_j^(1/4) with the largest max_margin, on s * (z - m_y e_y); PyTorch's weighted mean
    sum w_y l / sum w_y, written per sample as w_y l * B / sum w_y."""
    margins = 1 / np.asarray(COUNTS, dtype=np.float64) ** 0.25
    margins *= max_margin / margins.max()
    shifted = logits.copy()
    shifted[np.arange(len(labels)), labels] -= margins[labels]
    w = weights[labels]
    return _ce(scale * shifted, labels) * w * len(labels) / w.sum()


def test_cross_entropy():
    np.testing.assert_allclose(_per_sample("ce"), _ce(LOGITS, LABELS), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_logit_adjusted_adds_tau_log_prior(tau):
    prior = np.asarray(COUNTS) / sum(COUNTS)
    np.testing.assert_allclose(_per_sample("logit_adjusted", tau=tau), _ce(LOGITS + tau * np.log(prior), LABELS),
                               rtol=1e-5, atol=1e-5)


def test_balanced_softmax_adds_log_counts():
    np.testing.assert_allclose(_per_sample("balanced_softmax"), _ce(LOGITS + np.log(COUNTS), LABELS), rtol=1e-5,
                               atol=1e-5)


def test_ldam_before_and_after_deferred_reweighting():
    cosines = np.tanh(LOGITS)  # what a normalised head gives: values in [-1, 1]
    effective = (1 - 0.9999) / (1 - 0.9999 ** np.asarray(COUNTS, dtype=np.float64))
    drw = effective / effective.sum() * len(COUNTS)
    np.testing.assert_allclose(_per_sample("ldam_drw", 160, cosines), _ldam(cosines, LABELS, np.ones(4)), rtol=1e-5,
                               atol=1e-5)
    # LDAM-DRW's `idx = epoch // 160` on 0-based epochs: re-weighting from the 161st epoch on.
    after = _per_sample("ldam_drw", 161, cosines)
    np.testing.assert_allclose(after, _ldam(cosines, LABELS, drw), rtol=1e-5, atol=1e-5)
    assert after.mean() == pytest.approx(float((drw[LABELS] * _ldam(cosines, LABELS, np.ones(4))).sum()
                                               / drw[LABELS].sum()), rel=1e-5)
    np.testing.assert_allclose(_per_sample("ldam_drw", 1, cosines, max_margin=0.3, scale=10.0, drw_after=0),
                               _ldam(cosines, LABELS, drw, 0.3, 10.0), rtol=1e-5, atol=1e-5)


def test_the_normalised_head_gives_cosines_from_unit_columns():
    network = create_model("resnet32", 10, seed=2, kernels="mindspore", normalised_head=True)
    assert isinstance(network.fc, NormalisedLinear)
    weight = network.fc.weight.asnumpy()
    assert weight.shape == (64, 10)
    np.testing.assert_allclose(np.linalg.norm(weight, axis=0), 1.0, rtol=1e-5, atol=1e-5)
    features = RNG.normal(size=(5, 64))
    expected = features / np.linalg.norm(features, axis=1, keepdims=True) @ weight
    np.testing.assert_allclose(network.fc(Tensor(features.astype(np.float32))).asnumpy(), expected, rtol=1e-4,
                               atol=1e-6)


def _options(method):
    group = registry.module("optimizers", method).Params(**PAPER[method])
    return group.step_options(list(reference.CLASS_COUNTS), (2, 1))


@pytest.mark.parametrize("loss", registry.names("losses"))
@pytest.mark.parametrize("method", registry.names("optimizers"))
def test_every_loss_trains_under_every_optimizer(loss, method):
    """Two steps on imbsam.reference's net and batches: the loss each step reports is the loss Cell's mean at w
    (LDAM-DRW's re-weighted from the first epoch here), and the weights move."""
    network = TinyNet(reference.initial_params())
    network.set_train(True)
    counts = list(reference.CLASS_COUNTS)
    params = registry.module("losses", loss).Params(**({"drw_after": 0} if loss == "ldam_drw" else {}))
    loss_fn = create_loss(loss, len(counts), params.loss_options(counts))
    loss_fn.start_epoch(1)
    optimizer = make_optimizer(network, [0.1, 0.1], weight_decay=1e-3)
    # PyNative: the same pieces as graph mode (tested against the reference for cross-entropy), without compiling
    # forty sets of graphs.
    step = make_train_step(network, loss_fn, optimizer, method, mode="pynative", **_options(method))
    before = network.snapshot()
    for images, labels in reference.make_batches()[:2]:
        images, labels = Tensor(images.astype(np.float32)), Tensor(labels.astype(np.int32))
        # Train mode normalises with the batch's statistics, so this forward gives the loss the step sees at w.
        expected = float(loss_fn(network(images), labels).asnumpy().mean())
        assert float(step(images, labels).asnumpy()) == pytest.approx(expected, rel=1e-5)
    after = network.snapshot()
    assert all(np.isfinite(after[key]).all() for key in after)
    assert all(not np.allclose(before[key], after[key]) for key in reference.PARAM_KEYS)
