"""SGD / SAM / ImbSAM train steps against an independent float64 NumPy reference.

The reference follows the authors' PyTorch code (docs/protocol.md, "Algorithm") on a tiny
Dense -> BatchNorm1d -> ReLU -> Dense network, with a hand-written backward pass that is itself
checked against finite differences, so a wrong oracle cannot silently bless a wrong step.
Weights, BatchNorm running statistics and the returned losses are compared after every step of a
three-step run, because the perturb-and-restore bugs met so far only showed from the second step on.
"""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from imbsam.errors import InputError

ms.set_context(mode=ms.PYNATIVE_MODE)
try:
    ms.set_device("CPU")
except RuntimeError:
    # Another test module already fixed the device for this process; it can be set only once.
    pass

IN_FEATURES, HIDDEN, NUM_CLASSES, BATCH = 6, 8, 4, 16
TAIL_CLASSES = (2, 3)
TAIL_LOSS_SCALE = 2.0
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-3
BN_EPS, BN_MOMENTUM = 1e-5, 0.9
RTOL, ATOL = 1e-4, 1e-6
PARAM_KEYS = ("w1", "b1", "gamma", "beta", "w2", "b2")
STAT_KEYS = ("moving_mean", "moving_variance")


def initial_params():
    rng = np.random.default_rng(20230601)
    return {
        "w1": rng.normal(0.0, 0.6, (HIDDEN, IN_FEATURES)),
        "b1": rng.normal(0.0, 0.2, HIDDEN),
        # gamma away from 1 and beta away from 0, so a missing or extra decay of either shows.
        "gamma": rng.uniform(0.5, 1.5, HIDDEN),
        "beta": rng.normal(0.0, 0.3, HIDDEN),
        "w2": rng.normal(0.0, 0.6, (NUM_CLASSES, HIDDEN)),
        "b2": rng.normal(0.0, 0.2, NUM_CLASSES),
    }


def make_batches():
    """Three batches: several tail samples, none at all, a few: the no-tail batch is ImbSAM's special case."""
    rng = np.random.default_rng(7)
    label_sets = [
        np.array([0, 1, 2, 3, 2, 0, 3, 1, 2, 0, 1, 3, 0, 1, 0, 2]),
        np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0]),
        np.array([1, 0, 0, 1, 3, 0, 1, 0, 1, 1, 0, 2, 0, 1, 0, 1]),
    ]
    return [(rng.normal(0.0, 1.0, (BATCH, IN_FEATURES)), labels) for labels in label_sets]


# ---------------------------------------------------------------- NumPy reference (float64)


def forward(p, x, labels):
    """Train-mode forward: per-sample cross-entropy and what backward and the running statistics need."""
    h = x @ p["w1"].T + p["b1"]
    mean = h.mean(axis=0)
    var = h.var(axis=0)  # biased: what train-mode BatchNorm normalises with
    inv_std = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (h - mean) * inv_std
    z = p["gamma"] * xhat + p["beta"]
    a = np.maximum(z, 0.0)
    logits = a @ p["w2"].T + p["b2"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    losses = -log_probs[np.arange(len(labels)), labels]
    cache = {
        "x": x,
        "labels": labels,
        "xhat": xhat,
        "inv_std": inv_std,
        "z": z,
        "a": a,
        "probs": np.exp(log_probs),
        "batch_mean": mean,
        "batch_var_unbiased": h.var(axis=0, ddof=1),
    }
    return losses, cache


def backward(p, cache, coef):
    """Gradient of sum_i coef_i * loss_i with respect to every trainable parameter."""
    n = len(coef)
    dlogits = cache["probs"].copy()
    dlogits[np.arange(n), cache["labels"]] -= 1.0
    dlogits *= coef[:, None]
    dz = (dlogits @ p["w2"]) * (cache["z"] > 0)
    xhat = cache["xhat"]
    dxhat = dz * p["gamma"]
    dh = cache["inv_std"] / n * (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return {
        "w1": dh.T @ cache["x"],
        "b1": dh.sum(axis=0),
        "gamma": (dz * xhat).sum(axis=0),
        "beta": dz.sum(axis=0),
        "w2": dlogits.T @ cache["a"],
        "b2": dlogits.sum(axis=0),
    }


def update_running_stats(stats, cache):
    """MindSpore's rule: moving = momentum * moving + (1 - momentum) * batch, the variance unbiased."""
    stats["moving_mean"] = BN_MOMENTUM * stats["moving_mean"] + (1 - BN_MOMENTUM) * cache["batch_mean"]
    stats["moving_variance"] = BN_MOMENTUM * stats["moving_variance"] + (1 - BN_MOMENTUM) * cache["batch_var_unbiased"]


def global_norm(grads):
    return np.sqrt(sum(float((g * g).sum()) for g in grads.values()))


def perturbed(p, grads, rho):
    scale = rho / (global_norm(grads) + 1e-16)
    return {k: p[k] + scale * grads[k] for k in PARAM_KEYS}


def reference_run(
    method,
    batches,
    rho=0.05,
    lrs=None,
    weight_decay=WEIGHT_DECAY,
    decay_bn=True,
    tail_classes=TAIL_CLASSES,
    bn_update_in_perturbed_pass=True,
):
    """Per step: (mean loss at w, parameters after the update, running statistics after the step)."""
    lrs = lrs if lrs is not None else [LR] * len(batches)
    p = initial_params()
    stats = {"moving_mean": np.zeros(HIDDEN), "moving_variance": np.ones(HIDDEN)}
    velocity = None
    history = []
    for lr, (x, labels) in zip(lrs, batches):
        losses, cache = forward(p, x, labels)
        update_running_stats(stats, cache)
        mean_coef = np.full(len(labels), 1.0 / len(labels))
        if method == "sgd":
            grads = backward(p, cache, mean_coef)
        elif method == "sam":
            p_eps = perturbed(p, backward(p, cache, mean_coef), rho)
            _, cache_eps = forward(p_eps, x, labels)
            if bn_update_in_perturbed_pass:
                update_running_stats(stats, cache_eps)
            grads = backward(p_eps, cache_eps, mean_coef)
        else:
            is_tail = np.isin(labels, tail_classes)
            head_coef = np.where(is_tail, 0.0, 1.0) / len(labels)
            tail_coef = np.where(is_tail, TAIL_LOSS_SCALE, 0.0) / len(labels)
            g_head = backward(p, cache, head_coef)
            # With no tail sample g_t = 0, eps = 0 and this is a second forward at w, as in the authors' code.
            p_eps = perturbed(p, backward(p, cache, tail_coef), rho)
            _, cache_eps = forward(p_eps, x, labels)
            if bn_update_in_perturbed_pass:
                update_running_stats(stats, cache_eps)
            g_tail = backward(p_eps, cache_eps, tail_coef)
            grads = {k: g_head[k] + g_tail[k] for k in PARAM_KEYS}
        # PyTorch SGD: d = g + wd * p; v = d on the first step, then v = mu * v + d; p -= lr * v.
        decayed = {
            k: grads[k] + (weight_decay * p[k] if decay_bn or k not in ("gamma", "beta") else 0.0) for k in PARAM_KEYS
        }
        velocity = decayed if velocity is None else {k: MOMENTUM * velocity[k] + decayed[k] for k in PARAM_KEYS}
        p = {k: p[k] - lr * velocity[k] for k in PARAM_KEYS}
        history.append((float(losses.mean()), dict(p), dict(stats)))
    return history


def test_reference_backward_matches_finite_differences():
    p = initial_params()
    x, labels = make_batches()[0]
    coef = np.random.default_rng(3).uniform(0.0, 1.0, BATCH)
    grads = backward(p, forward(p, x, labels)[1], coef)
    step = 1e-6
    for key in PARAM_KEYS:
        numeric = np.zeros_like(p[key])
        for index in np.ndindex(p[key].shape):
            plus = {k: v.copy() for k, v in p.items()}
            minus = {k: v.copy() for k, v in p.items()}
            plus[key][index] += step
            minus[key][index] -= step
            numeric[index] = (coef @ forward(plus, x, labels)[0] - coef @ forward(minus, x, labels)[0]) / (2 * step)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-8, err_msg=key)


def test_reference_running_stats_match_mindspore_batchnorm():
    """The unbiased variance in the running update is MindSpore's choice (PyTorch's too); pin it here."""
    x = make_batches()[0][0].astype(np.float32)
    bn = nn.BatchNorm1d(IN_FEATURES, momentum=BN_MOMENTUM)
    bn.set_train(True)
    bn(Tensor(x))
    h = x.astype(np.float64)
    stats = {"moving_mean": np.zeros(IN_FEATURES), "moving_variance": np.ones(IN_FEATURES)}
    update_running_stats(stats, {"batch_mean": h.mean(axis=0), "batch_var_unbiased": h.var(axis=0, ddof=1)})
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), stats["moving_mean"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(bn.moving_variance.asnumpy(), stats["moving_variance"], rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- MindSpore under test


class TinyMLP(nn.Cell):
    def __init__(self, params):
        super().__init__()
        init = {k: Tensor(v.astype(np.float32)) for k, v in params.items()}
        self.fc1 = nn.Dense(IN_FEATURES, HIDDEN, weight_init=init["w1"], bias_init=init["b1"])
        self.bn = nn.BatchNorm1d(
            HIDDEN, momentum=BN_MOMENTUM, eps=BN_EPS, gamma_init=init["gamma"], beta_init=init["beta"]
        )
        self.relu = nn.ReLU()
        self.fc2 = nn.Dense(HIDDEN, NUM_CLASSES, weight_init=init["w2"], bias_init=init["b2"])

    def construct(self, x):
        return self.fc2(self.relu(self.bn(self.fc1(x))))


def snapshot(net):
    values = {
        "w1": net.fc1.weight,
        "b1": net.fc1.bias,
        "gamma": net.bn.gamma,
        "beta": net.bn.beta,
        "w2": net.fc2.weight,
        "b2": net.fc2.bias,
        "moving_mean": net.bn.moving_mean,
        "moving_variance": net.bn.moving_variance,
    }
    return {k: v.asnumpy().astype(np.float64) for k, v in values.items()}


def mindspore_run(
    method,
    batches,
    rho=0.05,
    lrs=None,
    weight_decay=WEIGHT_DECAY,
    decay_bn=True,
    tail_classes=TAIL_CLASSES,
    bn_update_in_perturbed_pass=True,
    mode="graph",
):
    from imbsam.optim import make_optimizer, make_train_step

    net = TinyMLP(initial_params())
    net.set_train(True)
    optimizer = make_optimizer(
        net, list(lrs) if lrs is not None else LR, momentum=MOMENTUM, weight_decay=weight_decay, decay_bn=decay_bn
    )
    options = {
        "sgd": {},
        "sam": {"rho": rho, "bn_update_in_perturbed_pass": bn_update_in_perturbed_pass},
        "imbsam": {"rho": rho, "tail_classes": tail_classes, "tail_loss_scale": TAIL_LOSS_SCALE,
                   "bn_update_in_perturbed_pass": bn_update_in_perturbed_pass},
    }[method]
    step = make_train_step(net, nn.CrossEntropyLoss(reduction="none"), optimizer, method, mode=mode, **options)
    history = []
    for x, labels in batches:
        loss = step(Tensor(x.astype(np.float32)), Tensor(labels.astype(np.int32)))
        history.append((float(loss.asnumpy()), snapshot(net)))
    return history


def assert_matches(actual, expected, keys, label):
    """Compare every step, naming step, tensor and the worst relative error so a failure says where."""
    for step, ((loss, got), (ref_loss, ref_params, ref_stats)) in enumerate(zip(actual, expected), start=1):
        reference = {**ref_params, **ref_stats}
        np.testing.assert_allclose(loss, ref_loss, rtol=RTOL, atol=ATOL, err_msg=f"{label} step {step} loss")
        for key in keys:
            worst = np.max(np.abs(got[key] - reference[key]) / (np.abs(reference[key]) + ATOL))
            np.testing.assert_allclose(
                got[key],
                reference[key],
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"{label} step {step} {key}: max relative error {worst:.3g}",
            )


@pytest.fixture(params=["pynative", "graph"])
def execution_mode(request):
    """Run a test with the step op by op in a PyNative context, and compiled in a graph-mode context
    (train.mode); tests without it run the library's default, a compiled step in a PyNative context."""
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE)
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize(
    ("method", "rho"), [("sgd", 0.05), ("sam", 0.05), ("sam", 0.5), ("imbsam", 0.05), ("imbsam", 0.5)]
)
def test_step_matches_reference(method, rho, execution_mode):
    batches = make_batches()
    assert_matches(
        mindspore_run(method, batches, rho=rho, mode=execution_mode),
        reference_run(method, batches, rho=rho),
        PARAM_KEYS + STAT_KEYS,
        f"{method} rho={rho} ({execution_mode})",
    )


def test_per_step_learning_rate_list(execution_mode):
    batches = make_batches()
    lrs = [0.1, 0.05, 0.02]
    assert_matches(
        mindspore_run("imbsam", batches, lrs=lrs, mode=execution_mode),
        reference_run("imbsam", batches, lrs=lrs),
        PARAM_KEYS + STAT_KEYS,
        "imbsam per-step lr",
    )


def test_sam_with_zero_rho_equals_sgd_in_weights():
    batches = make_batches()
    assert_matches(mindspore_run("sam", batches, rho=0.0), reference_run("sgd", batches), PARAM_KEYS, "sam rho=0")


# The no-tail-class warning is tested with the warning itself; here it is expected noise.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_imbsam_without_tail_classes_equals_sgd_in_weights():
    # Running statistics are left out: ImbSAM still runs its second forward pass, SGD does not.
    batches = make_batches()
    assert_matches(
        mindspore_run("imbsam", batches, tail_classes=()),
        reference_run("sgd", batches),
        PARAM_KEYS,
        "imbsam no tail classes",
    )


@pytest.mark.parametrize("decay_bn", [True, False])
def test_decay_bn_switch(decay_bn):
    # A large decay makes decaying gamma/beta or not differ by far more than the tolerance.
    batches = make_batches()
    reference = reference_run("sgd", batches, weight_decay=5e-2, decay_bn=decay_bn)
    other = reference_run("sgd", batches, weight_decay=5e-2, decay_bn=not decay_bn)
    assert not np.allclose(reference[-1][1]["gamma"], other[-1][1]["gamma"], rtol=100 * RTOL)
    assert_matches(
        mindspore_run("sgd", batches, weight_decay=5e-2, decay_bn=decay_bn),
        reference,
        PARAM_KEYS + STAT_KEYS,
        f"decay_bn={decay_bn}",
    )


@pytest.mark.parametrize("method", ["sam", "imbsam"])
def test_perturbed_pass_can_leave_running_stats_alone(method, execution_mode):
    batches = make_batches()
    assert_matches(
        mindspore_run(method, batches, rho=0.5, bn_update_in_perturbed_pass=False, mode=execution_mode),
        reference_run(method, batches, rho=0.5, bn_update_in_perturbed_pass=False),
        PARAM_KEYS + STAT_KEYS,
        f"{method} without perturbed BN update",
    )


def test_unknown_method_is_rejected_by_name():
    from imbsam.optim import make_optimizer, make_train_step

    net = TinyMLP(initial_params())
    with pytest.raises((ValueError, InputError)) as caught:
        make_train_step(net, nn.CrossEntropyLoss(reduction="none"), make_optimizer(net, LR), "adam")
    for name in ("adam", "sgd", "sam", "imbsam"):
        assert name in str(caught.value)


@pytest.mark.parametrize("method", ["sam", "imbsam"])
def test_negative_rho_is_rejected(method):
    from imbsam.optim import make_optimizer, make_train_step

    net = TinyMLP(initial_params())
    with pytest.raises((ValueError, InputError)):
        make_train_step(
            net,
            nn.CrossEntropyLoss(reduction="none"),
            make_optimizer(net, LR),
            method,
            rho=-0.1,
            tail_classes=TAIL_CLASSES,
        )


def test_unknown_step_mode_is_rejected_by_name():
    from imbsam.optim import make_optimizer, make_train_step

    net = TinyMLP(initial_params())
    with pytest.raises(InputError, match="jit.*graph, pynative"):
        make_train_step(net, nn.CrossEntropyLoss(reduction="none"), make_optimizer(net, LR), "sgd", mode="jit")
