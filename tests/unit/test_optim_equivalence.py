"""Every optimizer's train step against imbsam.reference, an independent float64 NumPy implementation.

The reference follows the authors' PyTorch code (docs/protocol.md, "Algorithm") on a tiny 3x3 convolution ->
BatchNorm -> ReLU -> average pool -> linear network, with a hand-written backward pass that is checked here
against finite differences, so a wrong oracle cannot silently bless a wrong step. Weights, BatchNorm running
statistics and the returned losses are compared after every step of a three-step run, because the
perturb-and-restore bugs met so far only showed from the second step on. `python -m imbsam.check_host` runs
the same comparison on a user's device.
"""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from imbsam import reference, registry
from imbsam.errors import InputError
from imbsam.reference import PARAM_KEYS, STAT_KEYS, backward, forward, initial_params, make_batches

ms.set_context(mode=ms.PYNATIVE_MODE)
try:
    ms.set_device("CPU")
except RuntimeError:
    # Another test module already fixed the device for this process; it can be set only once.
    pass

from imbsam.check_host.correctness import TinyNet, device_run, worst_error
from imbsam.params import defaults

TAIL_CLASSES = (2, 3)
RTOL, ATOL = 1e-4, 1e-6
LRS = (0.1, 0.1, 0.1)


# The (rho, adaptive) variants each optimizer's step is checked at; one named nowhere here, at its paper defaults.
VARIANTS = {"sgd": [(0.05, False)], "sam": [(0.05, False), (0.5, False)], "imbsam": [(0.05, False), (0.5, False)],
            "focal_sam": [(0.05, False), (0.5, False), (0.05, True), (0.5, True)],
            "sse_sam": [(0.05, False), (0.5, False)]}

# Focal-SAM's c_k = 0.8 (1 - n_k / N) ** 3.2 over reference.CLASS_COUNTS (40, 25, 10, 5), N = 80.
FOCAL_WEIGHTS = [0.8 * (1 - n / 80) ** 3.2 for n in reference.CLASS_COUNTS]


def options(method, rho=0.05, tail_classes=TAIL_CLASSES, bn_update_in_perturbed_pass=True, adaptive=False):
    """The step options of each method, as its params group's step_options gives them; an optimizer not named here
    takes its group's paper defaults over reference.CLASS_COUNTS."""
    if method not in VARIANTS:
        group = registry.module("optimizers", method).Params(**defaults()[method])
        return group.step_options(list(reference.CLASS_COUNTS), (len(LRS), 1))
    return {
        "sgd": {},
        "sam": {"rho": rho, "bn_update_in_perturbed_pass": bn_update_in_perturbed_pass},
        "imbsam": {"rho": rho, "tail_classes": tail_classes, "tail_loss_scale": 2.0,
                   "bn_update_in_perturbed_pass": bn_update_in_perturbed_pass},
        "focal_sam": {"rho": rho, "class_weights": FOCAL_WEIGHTS, "adaptive": adaptive},
        # The head's perturbation stops at the third step, as after 70% of 2 epochs of 1 step.
        "sse_sam": {"head_rho": rho, "tail_rho": 2 * rho, "tail_classes": tail_classes, "head_off_from_step": 2},
    }[method]


def test_focal_sam_weights_are_its_params_groups():
    group = registry.module("optimizers", "focal_sam").Params(**defaults()["focal_sam"])
    got = group.step_options(list(reference.CLASS_COUNTS))
    np.testing.assert_allclose(got["class_weights"], FOCAL_WEIGHTS, rtol=1e-12)
    assert got["rho"] == 0.3 and got["adaptive"] is False


def test_reference_backward_matches_finite_differences():
    p = initial_params()
    x, labels = make_batches()[0]
    coef = np.random.default_rng(3).uniform(0.0, 1.0, len(labels))
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


def test_reference_forward_and_running_stats_match_mindspore():
    """The layers' forward and the unbiased variance in the running update (MindSpore's choice, PyTorch's too)."""
    x, labels = make_batches()[0]
    net = TinyNet(initial_params(), kernels="mindspore")
    net.set_train(True)
    logits = net(Tensor(x.astype(np.float32))).asnumpy()
    _, cache = forward(initial_params(), x, labels)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, cache["probs"], rtol=RTOL, atol=ATOL)
    stats = reference.initial_stats()
    reference.update_running_stats(stats, cache)
    got = net.snapshot()
    for key in STAT_KEYS:
        np.testing.assert_allclose(got[key], stats[key], rtol=RTOL, atol=ATOL, err_msg=key)


def mindspore_run(method, batches, rho=0.05, lrs=LRS, weight_decay=1e-3, decay_bn=True, tail_classes=TAIL_CLASSES,
                  bn_update_in_perturbed_pass=True, mode="graph"):
    return device_run(method, batches, options(method, rho, tail_classes, bn_update_in_perturbed_pass), lrs,
                      weight_decay=weight_decay, decay_bn=decay_bn, mode=mode)


def reference_run(method, batches, rho=0.05, lrs=LRS, weight_decay=1e-3, decay_bn=True, tail_classes=TAIL_CLASSES,
                  bn_update_in_perturbed_pass=True):
    return reference.run(method, batches, options(method, rho, tail_classes, bn_update_in_perturbed_pass), lrs,
                         weight_decay=weight_decay, decay_bn=decay_bn)


def assert_matches(actual, expected, keys, label):
    """Every step, tensor and loss within tolerance, naming the worst place when not."""
    worst, where = worst_error(actual, expected, RTOL, ATOL, keys)
    assert worst <= RTOL, f"{label}: max relative error {worst:.3g} at {where}"


@pytest.fixture(params=["pynative", "graph"])
def execution_mode(request):
    """Run a test with the step op by op in a PyNative context, and compiled in a graph-mode context
    (train.mode); tests without it run the library's default, a compiled step in a PyNative context."""
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE)
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize(
    ("method", "rho", "adaptive"),
    [(name, rho, adaptive) for name in registry.names("optimizers")
     for rho, adaptive in VARIANTS.get(name, [(None, False)])],
)
def test_step_matches_reference(method, rho, adaptive, execution_mode):
    if reference.gradient_of(method) is None:
        pytest.skip(f"{method} has no reference in imbsam/verify/optimizers/")
    batches = make_batches()
    chosen = options(method, rho, adaptive=adaptive)
    assert_matches(
        device_run(method, batches, chosen, LRS, mode=execution_mode),
        reference.run(method, batches, chosen, LRS),
        PARAM_KEYS + STAT_KEYS,
        f"{method} rho={rho}{' adaptive' if adaptive else ''} ({execution_mode})",
    )


def test_focal_sam_with_no_weight_is_sgd_and_adaptive_eps_differs():
    """c = 0 leaves only the clean gradient at w; an adaptive eps moves the weights elsewhere than SAM's."""
    batches = make_batches()
    none = {"rho": 0.5, "class_weights": [0.0] * 4, "adaptive": False}
    assert_matches(device_run("focal_sam", batches, none, LRS), reference.run("sgd", batches, {}, LRS), PARAM_KEYS,
                   "focal_sam c=0")
    plain, scaled = (reference.run("focal_sam", batches, options("focal_sam", 0.5, adaptive=a), LRS) for a in (0, 1))
    assert not np.allclose(plain[-1][1]["conv"], scaled[-1][1]["conv"], rtol=100 * RTOL)


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
    expected = reference_run("sgd", batches, weight_decay=5e-2, decay_bn=decay_bn)
    other = reference_run("sgd", batches, weight_decay=5e-2, decay_bn=not decay_bn)
    assert not np.allclose(expected[-1][1]["gamma"], other[-1][1]["gamma"], rtol=100 * RTOL)
    assert_matches(
        mindspore_run("sgd", batches, weight_decay=5e-2, decay_bn=decay_bn),
        expected,
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

    net = TinyNet(initial_params())
    with pytest.raises((ValueError, InputError)) as caught:
        make_train_step(net, nn.CrossEntropyLoss(reduction="none"), make_optimizer(net, 0.1), "adam")
    for name in ("adam", "sgd", "sam", "imbsam"):
        assert name in str(caught.value)


@pytest.mark.parametrize("method", ["sam", "imbsam"])
def test_negative_rho_is_rejected(method):
    from imbsam.optim import make_optimizer, make_train_step

    net = TinyNet(initial_params())
    with pytest.raises((ValueError, InputError)):
        make_train_step(
            net,
            nn.CrossEntropyLoss(reduction="none"),
            make_optimizer(net, 0.1),
            method,
            rho=-0.1,
            tail_classes=TAIL_CLASSES,
        )


def test_unknown_step_mode_is_rejected_by_name():
    from imbsam.optim import make_optimizer, make_train_step

    net = TinyNet(initial_params())
    with pytest.raises(InputError, match="jit.*graph, pynative"):
        make_train_step(net, nn.CrossEntropyLoss(reduction="none"), make_optimizer(net, 0.1), "sgd", mode="jit")


def test_sse_sam_options_from_its_group_and_its_head_cut():
    """The head's eps stops at the first epoch at or past 70% of them, as a step index; with no run planned, not."""
    params = registry.module("optimizers", "sse_sam").Params
    group = params(**defaults()["sse_sam"])
    got = group.step_options(list(reference.CLASS_COUNTS), (200, 170))
    assert got == {"head_rho": 0.05, "tail_rho": 0.1, "tail_classes": [0, 1, 2, 3], "head_off_from_step": 140 * 170}
    assert group.step_options([500, 50], (3, 10))["head_off_from_step"] == 30  # ceil(2.1) = 3 epochs
    assert group.step_options([500, 50])["head_off_from_step"] is None
    never = params(eta=100, head_off_after=0.0)
    assert never.step_options([5], (10, 1))["head_off_from_step"] is None
    batches = make_batches()
    cut, uncut = ({**options("sse_sam", 0.5), "head_off_from_step": step} for step in (2, None))
    assert_matches(device_run("sse_sam", batches, uncut, LRS), reference.run("sse_sam", batches, uncut, LRS),
                   PARAM_KEYS + STAT_KEYS, "sse_sam without the head cut")
    assert not np.allclose(reference.run("sse_sam", batches, cut, LRS)[-1][1]["conv"],
                           reference.run("sse_sam", batches, uncut, LRS)[-1][1]["conv"], rtol=100 * RTOL)
