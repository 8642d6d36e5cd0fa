"""Does this device give each method's update? A few steps of every row of the methods table on the device,
in graph and PyNative mode, against the same steps in float64 by imbsam.reference.

The network on the device is imbsam.reference's, built from the layers training uses (imbsam.models' Conv2d
and BatchNorm2d on the kernels `train.kernels: auto` picks here, MindSpore's Dense), so the kernels, the
compiled step and the running statistics are the ones a paper run moves.
"""

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from imbsam import reference, registry
from imbsam.criteria import create_loss
from imbsam.models import BatchNorm2d, Conv2d, GlobalAvgPool, resolve_kernels, use_onednn_kernels
from imbsam.optim import make_optimizer, make_train_step
from imbsam.params import STEP_MODES, defaults

# Each method's params group as the paper's protocol resolves it (auto: CIFAR-100's values), which `cases` varies.
PAPER = defaults()

# (rtol, atol): the check passes where |device - reference| <= atol + rtol * |reference|, numpy's allclose.
# On the CPU the steps were measured within 1e-5 of the reference; a wrong update (a dropped factor, a
# perturbation of the wrong loss, statistics moved once too often) is off by 1e-2 and more. Accelerators
# reduce in another order and were not measured here: a looser bound, still far from a wrong update.
TOLERANCES = {"CPU": (1e-4, 1e-6), "GPU": (1e-3, 1e-5), "Ascend": (1e-3, 1e-5)}
RHOS = (0.05, 0.5)  # the paper's rho and a large one, at which a wrong perturbation cannot hide
LRS, MOMENTUM, WEIGHT_DECAY = (0.1, 0.1, 0.1), 0.9, 1e-3


class TinyNet(nn.Cell):
    """imbsam.reference's network: 3x3 convolution, BatchNorm + ReLU, global average pool, linear head."""

    def __init__(self, params, kernels="auto"):
        super().__init__()
        self.conv1 = Conv2d(reference.CHANNELS_IN, reference.CHANNELS, 3)
        self.bn1 = BatchNorm2d(reference.CHANNELS, relu=True)
        self.pool = GlobalAvgPool()
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(reference.CHANNELS, reference.NUM_CLASSES)
        for parameter, key in zip(self.parameters_in_reference_order(), reference.PARAM_KEYS):
            parameter.set_data(Tensor(params[key].astype(np.float32)))
        self.kernels = resolve_kernels(kernels)
        if self.kernels == "onednn":
            use_onednn_kernels(self)

    def parameters_in_reference_order(self):
        return self.conv1.weight, self.bn1.gamma, self.bn1.beta, self.fc.weight, self.fc.bias

    def snapshot(self):
        values = (*self.parameters_in_reference_order(), self.bn1.moving_mean, self.bn1.moving_variance)
        return {key: value.asnumpy().astype(np.float64)
                for key, value in zip(reference.PARAM_KEYS + reference.STAT_KEYS, values)}

    def construct(self, x):
        return self.fc(self.flatten(self.pool(self.bn1(self.conv1(x)))))


def device_run(method, batches, options=None, lrs=LRS, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
               decay_bn=True, mode="graph", kernels="auto"):
    """Per step: (mean loss at w, parameters and running statistics after the step), as imbsam.reference.run."""
    network = TinyNet(reference.initial_params(), kernels)
    network.set_train(True)
    optimizer = make_optimizer(network, list(lrs), momentum=momentum, weight_decay=weight_decay, decay_bn=decay_bn)
    step = make_train_step(network, create_loss("ce", reference.NUM_CLASSES, {}), optimizer, method, mode=mode,
                           **(options or {}))
    history = []
    for x, labels in batches:
        loss = step(Tensor(x.astype(np.float32)), Tensor(labels.astype(np.int32)))
        history.append((float(loss.asnumpy()), network.snapshot()))
    return history


def worst_error(actual, expected, rtol, atol, keys=reference.PARAM_KEYS + reference.STAT_KEYS):
    """(the largest |a - e| / (|e| + atol / rtol) over every step, tensor and the loss: allclose holds iff it is
    <= rtol; where it is)."""
    worst, where = 0.0, None
    for step, ((loss, got), (ref_loss, ref_params, ref_stats)) in enumerate(zip(actual, expected), start=1):
        expected_values = {"loss": np.asarray(ref_loss), **ref_params, **ref_stats}
        for key in ("loss", *keys):
            value = np.asarray(loss) if key == "loss" else got[key]
            error = float(np.max(np.abs(value - expected_values[key]) / (np.abs(expected_values[key]) + atol / rtol)))
            if error > worst or where is None:
                worst, where = max(error, worst), f"step {step}, {key}"
    return worst, where


# The schedule the check's three steps belong to: 2 epochs of 1 step, so that a method that changes with the
# epoch (SSE-SAM's head stops being perturbed after 70% of them) does so within them.
SCHEDULE = (2, 1)


def cases(methods=None):
    """(method, variant, step options) for every method: with each rho of RHOS for every radius it has (rho,
    head_rho, ...), with and without `adaptive` for one that has that; options come from the method's params
    group over imbsam.reference's class counts. methods: default every optimizer."""
    for name in registry.names("optimizers") if methods is None else methods:
        model = registry.module("optimizers", name).Params
        fields = model.model_fields
        radii = [field for field in fields if field == "rho" or field.endswith("_rho")]
        for rho in RHOS if radii else (None,):
            for adaptive in (False, True) if "adaptive" in fields else (None,):
                chosen = {**({field: rho for field in radii} if radii else {}),
                          **({"adaptive": adaptive} if adaptive is not None else {})}
                variant = " ".join([f"rho={rho}"] * bool(radii) + ["adaptive"] * bool(adaptive))
                params = model(**{**PAPER[name], **chosen})
                yield name, variant, params.step_options(list(reference.CLASS_COUNTS), SCHEDULE)


def full_precision(target):
    """Keep float32 convolutions, which MindSpore otherwise runs in TF32 (GPU) or HF32 (Ascend): the check is of
    the update, not of the device's reduced-precision arithmetic, which training keeps."""
    if target == "GPU":
        ms.device_context.gpu.op_precision.conv_allow_tf32(False)
    elif target == "Ascend":
        ms.device_context.ascend.op_precision.conv_allow_hf32(False)


def check(target, methods=None, modes=STEP_MODES, progress=print):
    """One result per method, variant (rho, adaptive) and mode: passed (None where the method has no reference),
    the worst error, where, and the tolerance."""
    rtol, atol = TOLERANCES[target]
    full_precision(target)
    batches = reference.make_batches()
    results = []
    for name, variant, options in cases(methods):
        expected = reference.run(name, batches, options, LRS, MOMENTUM, WEIGHT_DECAY) \
            if reference.gradient_of(name) else None
        for mode in modes:
            result = {"method": name, "variant": variant, "mode": mode, "rtol": rtol, "atol": atol}
            if expected is None:
                result.update(passed=None, worst=None, where="no independent reference in imbsam/verify/optimizers/")
            else:
                worst, where = worst_error(device_run(name, batches, options, mode=mode), expected, rtol, atol)
                result.update(passed=worst <= rtol, worst=worst, where=where)
            progress(format_result(result))
            results.append(result)
    return results


def format_result(result):
    label = f"{result['method']} {result['variant']} ({result['mode']})".replace("  ", " ")
    if result["passed"] is None:
        return f"  {label:<28} not checked: {result['where']}"
    verdict = "ok  " if result["passed"] else "FAIL"
    return (f"  {label:<28} {verdict} max relative error {result['worst']:.1e} "
            f"(tolerance {result['rtol']:.0e}; worst at {result['where']})")
