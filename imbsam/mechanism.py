"""The mechanism behind a run's accuracy, per class group (many / medium / few): its generalization gap and the
curvature of its training loss, as the ImbSAM, Focal-SAM and SSE-SAM papers and Saddle-LongTail argue from.

Everything is of the network as the run left it, BatchNorm on its running statistics, on images without
augmentation. The loss is the plain cross-entropy of the network's outputs, whatever `train.loss` the run trained
with: the papers measure the cross-entropy's landscape, and one objective keeps runs of different losses
comparable (for LDAM's normalised head the outputs are cosines, not the scaled logits it trained on).
"""

import time

import mindspore as ms
import numpy as np
from mindspore import nn

from imbsam.analysis import Curvature, hutchinson, lanczos, sharpness
from imbsam.evaluate import GROUPS, group_accuracy, logits, per_class_accuracy

CLASSES_PER_GROUP_KEY = "groups"


def per_sample_cross_entropy(scores, labels):
    """Each sample's cross-entropy of float logits, in float64."""
    scores = np.asarray(scores, dtype=np.float64)
    top = scores.max(axis=1, keepdims=True)
    return np.log(np.exp(scores - top).sum(axis=1)) + top[:, 0] - scores[np.arange(len(scores)), labels]


def generalization(network, images, labels, groups, num_classes, batch_size):
    """Balanced accuracy (%) per group and the mean cross-entropy of each group's samples, one plain pass (no flip)."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = logits(network, images, batch_size)
    accuracy = group_accuracy(per_class_accuracy(scores.argmax(axis=1), labels, num_classes), groups)
    losses = per_sample_cross_entropy(scores, labels)
    members = {group: np.isin(labels, groups[group]) for group in GROUPS}
    loss = {group: float(losses[members[group]].mean()) if members[group].any() else None for group in GROUPS}
    return accuracy, loss


def group_sample(labels, classes, limit, rng):
    """Indices of the samples of `classes`, a seeded subsample of at most `limit` of them, in file order."""
    indices = np.flatnonzero(np.isin(np.asarray(labels), classes))
    if len(indices) > limit:
        indices = np.sort(rng.choice(indices, limit, replace=False))
    return indices


CURVATURE_KEYS = ("lambda_max", "lambda_min", "saddle_ratio", "trace", "trace_stderr", "rho_sharpness")


def _finite_products(hvp):
    def checked(vector):
        product = hvp(vector)
        if not np.isfinite(product).all():
            raise FloatingPointError("a Hessian-vector product is not finite")
        return product
    return checked


def curvature_of(curvature, settings, seed, log):
    """The curvature figures of the mean cross-entropy over a Curvature's samples (imbsam.analysis); None for each,
    with the reason, where the products are not finite (a run whose loss overflowed there), so that one such run
    leaves the others' analysis and the report standing."""
    started = time.perf_counter()
    hvp = _finite_products(curvature.hvp)
    try:
        runs = []
        for run in range(settings.lanczos_runs):
            runs.append(lanczos(hvp, curvature.size, steps=settings.lanczos_steps, seed=seed + run))
            log(f"Lanczos run {run + 1}/{settings.lanczos_runs} ({time.perf_counter() - started:.0f} s)")
        trace, stderr = hutchinson(hvp, curvature.size, samples=settings.hutchinson_samples, seed=seed)
    except FloatingPointError as error:
        log(f"no curvature: {error}")
        return {**dict.fromkeys(CURVATURE_KEYS), "curvature_error": str(error), "samples": curvature.samples}
    log(f"trace from {settings.hutchinson_samples} vectors ({time.perf_counter() - started:.0f} s)")
    nodes, weights = np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs])
    # The extremes over every run's Ritz values, never an average of them: each is a bound the spectrum reaches.
    lambda_max, lambda_min = float(nodes.max()), float(nodes.min())
    return {
        "lambda_max": lambda_max,
        "lambda_min": lambda_min,
        "saddle_ratio": abs(lambda_min) / lambda_max if lambda_max > 0 else None,
        "trace": trace,
        "trace_stderr": stderr,
        "rho_sharpness": float(sharpness(curvature, settings.rho)),
        "samples": curvature.samples,
        "hessian_vector_products": settings.lanczos_runs * settings.lanczos_steps + settings.hutchinson_samples,
        "seconds": time.perf_counter() - started,
        "nodes": nodes.tolist(),
        "weights": weights.tolist(),
    }


class _EvenPixels(nn.Cell):
    """x[:, :, ::2, ::2] from a reshape, a mask and a sum, standing in for PadShortcut's 1x1 stride-2 AvgPool2d, whose
    gradient has no derivative in MindSpore 2.10 ("AvgPoolGrad's bprop not defined"); the same values exactly."""

    def __init__(self):
        super().__init__()
        self.mask = ms.Tensor(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32).reshape(1, 1, 1, 2, 1, 2))

    def construct(self, x):
        n, c, h, w = x.shape
        return (x.reshape(n, c, h // 2, 2, w // 2, 2) * self.mask).sum(axis=(3, 5))


def twice_differentiable(network):
    """The network with every PadShortcut subsampling by _EvenPixels: in place, and harmless to its values."""
    from imbsam.models import PadShortcut

    for _, cell in network.cells_and_names():
        if isinstance(cell, PadShortcut):
            cell.subsample = _EvenPixels()
    return network


def weight_norm(network):
    """The norm of every trainable parameter together: curvature scales with 1/|w|^2 under BatchNorm."""
    return float(np.sqrt(sum(float((p.asnumpy().astype(np.float64) ** 2).sum()) for p in network.trainable_params())))


def analyze(network, split, settings, log=print):
    """{"weight_norm", "groups": {group: figures}} of a network in eval mode on a split (imbsam.data.loading)."""
    from imbsam.data.augment import normalize

    summary = split["summary"]
    groups, num_classes = summary[CLASSES_PER_GROUP_KEY], summary["num_classes"]
    twice_differentiable(network).set_train(False)
    train = generalization(network, split["train_images"], split["train_labels"], groups, num_classes,
                           settings.batch_size)
    test = generalization(network, split["test_images"], split["test_labels"], groups, num_classes,
                          settings.batch_size)
    rng = np.random.default_rng(settings.seed)
    figures, curvature = {}, None
    for group in GROUPS:
        entry = {"train_acc": train[0][group], "test_acc": test[0][group], "train_loss": train[1][group],
                 "test_loss": test[1][group]}
        known = None not in (entry["train_acc"], entry["test_acc"])
        entry["gap"] = entry["train_acc"] - entry["test_acc"] if known else None
        indices = group_sample(split["train_labels"], groups[group], settings.samples_per_group, rng)
        if len(indices) and settings.curvature:
            log(f"{group}: curvature over {len(indices)} training images")
            images, labels = normalize(split["train_images"][indices]), np.asarray(split["train_labels"][indices])
            curvature = (Curvature(network, images, labels, batch_size=settings.batch_size) if curvature is None
                         else curvature.on(images, labels))
            entry.update(curvature_of(curvature, settings, settings.seed,
                                      lambda text, group=group: log(f"{group}: {text}")))
        figures[group] = entry
    return {"weight_norm": weight_norm(network), "groups": figures}
