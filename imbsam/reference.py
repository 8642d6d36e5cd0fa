"""An independent float64 NumPy network and base optimizer on which each optimizer's reference step
(imbsam/verify/optimizers/<name>.py) runs, to check the MindSpore steps against (tests/unit/test_optim_equivalence.py
and `python -m imbsam.check_host`).

Written from the authors' PyTorch code (docs/protocol.md, "Algorithm"), not from imbsam.optim: it shares
no code with it and imports no framework. The network is the smallest one that holds every kind of
layer a ResNet step moves: a 3x3 convolution, BatchNorm with its running statistics, ReLU, a global
average pool and a linear head. Its backward pass is written by hand and checked against finite
differences by the tests, so a wrong oracle cannot bless a wrong step.

An optimizer's reference takes the same options as its make_step (the ones its params group's
`step_options` gives), updates the running statistics as the authors' forward passes do, and returns the
gradient it hands to the base optimizer.
"""

import functools
import inspect
import sys

import numpy as np

from imbsam import verify

CHANNELS_IN, CHANNELS, SIZE, NUM_CLASSES, BATCH = 3, 4, 5, 4, 16
# A long tail over the four classes: at ImbSAM's default eta (20) classes 2 and 3 are its tail.
CLASS_COUNTS = (40, 25, 10, 5)
BN_EPS, BN_MOMENTUM = 1e-5, 0.9  # moving = 0.9 moving + 0.1 batch: PyTorch's momentum 0.1, MindSpore's 0.9
PARAM_KEYS = ("conv", "gamma", "beta", "fc_weight", "fc_bias")
BN_PARAM_KEYS = ("gamma", "beta")
STAT_KEYS = ("moving_mean", "moving_variance")


def initial_params(seed=20230601):
    rng = np.random.default_rng(seed)
    return {
        "conv": rng.normal(0.0, 0.5, (CHANNELS, CHANNELS_IN, 3, 3)),
        # gamma away from 1 and beta away from 0, so a missing or extra decay of either shows.
        "gamma": rng.uniform(0.5, 1.5, CHANNELS),
        "beta": rng.normal(0.0, 0.3, CHANNELS),
        "fc_weight": rng.normal(0.0, 0.6, (NUM_CLASSES, CHANNELS)),
        "fc_bias": rng.normal(0.0, 0.2, NUM_CLASSES),
    }


def initial_stats():
    return {"moving_mean": np.zeros(CHANNELS), "moving_variance": np.ones(CHANNELS)}


def make_batches(seed=7):
    """Three batches: several tail samples, none at all (ImbSAM's special case), a few."""
    rng = np.random.default_rng(seed)
    label_sets = [
        np.array([0, 1, 2, 3, 2, 0, 3, 1, 2, 0, 1, 3, 0, 1, 0, 2]),
        np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0]),
        np.array([1, 0, 0, 1, 3, 0, 1, 0, 1, 1, 0, 2, 0, 1, 0, 1]),
    ]
    return [(rng.normal(0.0, 1.0, (BATCH, CHANNELS_IN, SIZE, SIZE)), labels) for labels in label_sets]


def _patches(x):
    """(B, H, W, C*9): each output position's 3x3 neighbourhood of the zero-padded input, im2col."""
    b, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    columns = [padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)]  # each (B, C, H, W)
    return np.stack(columns, axis=2).reshape(b, c * 9, h, w).transpose(0, 2, 3, 1)


def forward(p, x, labels):
    """Train-mode forward: per-sample cross-entropy and what backward and the running statistics need."""
    patches = _patches(x)
    h = np.einsum("bijk,ok->boij", patches, p["conv"].reshape(CHANNELS, -1))
    mean = h.mean(axis=(0, 2, 3))
    var = h.var(axis=(0, 2, 3))  # biased: what train-mode BatchNorm normalises with
    inv_std = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (h - mean[:, None, None]) * inv_std[:, None, None]
    z = p["gamma"][:, None, None] * xhat + p["beta"][:, None, None]
    a = np.maximum(z, 0.0)
    pooled = a.mean(axis=(2, 3))
    logits = pooled @ p["fc_weight"].T + p["fc_bias"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    losses = -log_probs[np.arange(len(labels)), labels]
    count = h.shape[0] * h.shape[2] * h.shape[3]
    cache = {"patches": patches, "labels": labels, "xhat": xhat, "inv_std": inv_std, "z": z, "pooled": pooled,
             "probs": np.exp(log_probs), "batch_mean": mean, "batch_var_unbiased": var * count / (count - 1)}
    return losses, cache


def backward(p, cache, coef):
    """Gradient of sum_i coef_i * loss_i with respect to every trainable parameter."""
    n = len(coef)
    dlogits = cache["probs"].copy()
    dlogits[np.arange(n), cache["labels"]] -= 1.0
    dlogits *= coef[:, None]
    xhat = cache["xhat"]
    positions = xhat.shape[2] * xhat.shape[3]
    dz = (dlogits @ p["fc_weight"])[:, :, None, None] / positions * (cache["z"] > 0)
    dxhat = dz * p["gamma"][:, None, None]
    count = n * positions
    sums = dxhat.sum(axis=(0, 2, 3))[:, None, None], (dxhat * xhat).sum(axis=(0, 2, 3))[:, None, None]
    dh = cache["inv_std"][:, None, None] / count * (count * dxhat - sums[0] - xhat * sums[1])
    return {
        "conv": np.einsum("boij,bijk->ok", dh, cache["patches"]).reshape(p["conv"].shape),
        "gamma": (dz * xhat).sum(axis=(0, 2, 3)),
        "beta": dz.sum(axis=(0, 2, 3)),
        "fc_weight": dlogits.T @ cache["pooled"],
        "fc_bias": dlogits.sum(axis=0),
    }


def update_running_stats(stats, cache):
    """moving = momentum * moving + (1 - momentum) * batch, the variance unbiased (PyTorch's and MindSpore's)."""
    stats["moving_mean"] = BN_MOMENTUM * stats["moving_mean"] + (1 - BN_MOMENTUM) * cache["batch_mean"]
    stats["moving_variance"] = (BN_MOMENTUM * stats["moving_variance"]
                                + (1 - BN_MOMENTUM) * cache["batch_var_unbiased"])


def perturbed(p, grads, rho, floor=1e-16, adaptive=False):
    """w + rho * g / (||g|| + floor), the norm over all parameters together (the ImbSAM authors' SAM); adaptive
    (Focal-SAM's ASAM): w + rho * w^2 g / (|| |w| g || + floor)."""
    norm_of = {k: np.abs(p[k]) * grads[k] for k in PARAM_KEYS} if adaptive else grads
    scale = rho / (np.sqrt(sum(float((g * g).sum()) for g in norm_of.values())) + floor)
    return {k: p[k] + scale * (p[k] ** 2 if adaptive else 1.0) * grads[k] for k in PARAM_KEYS}


def forward_backward(p, stats, x, labels, coef):
    """One forward pass (moving the running statistics) and the gradient of the coef-weighted loss."""
    losses, cache = forward(p, x, labels)
    update_running_stats(stats, cache)
    return losses, backward(p, cache, coef)


def gradient_of(optimizer):
    """The float64 reference of `optimizer` (imbsam/verify/optimizers/<optimizer>.py), or None where it has none."""
    checks = verify.checks(optimizer)
    return None if checks is None else functools.partial(checks.reference, sys.modules[__name__])


def run(optimizer, batches, options=None, lrs=(0.1, 0.1, 0.1), momentum=0.9, weight_decay=1e-3, decay_bn=True):
    """Per step of `optimizer`'s reference: (mean loss at w, parameters after the update, running statistics after
    the step).

    The base optimizer is PyTorch's SGD: d = g + wd * w (not on gamma and beta unless decay_bn);
    v = d on the first step, then v = momentum * v + d; w <- w - lr * v."""
    gradient = gradient_of(optimizer)
    # An optimizer whose update depends on how far the run is (SSE-SAM's head cut) takes the step's index.
    by_step = "step" in inspect.signature(gradient).parameters
    p, stats = initial_params(), initial_stats()
    velocity = None
    history = []
    for index, (lr, (x, labels)) in enumerate(zip(lrs, batches)):
        loss, grads = gradient(p, stats, x, labels, **(options or {}), **({"step": index} if by_step else {}))
        decayed = {k: grads[k] + (weight_decay * p[k] if decay_bn or k not in BN_PARAM_KEYS else 0.0)
                   for k in PARAM_KEYS}
        velocity = decayed if velocity is None else {k: momentum * velocity[k] + decayed[k] for k in PARAM_KEYS}
        p = {k: p[k] - lr * velocity[k] for k in PARAM_KEYS}
        history.append((float(loss), dict(p), dict(stats)))
    return history
