"""The methods table: one row per optimizer, so that a new one is a row here, a step function in
imbsam.optim and a group in params.yaml.

A row names the method (its `train.optimizers` entry and its params.yaml group), its label in reports, its
params group (the keys, defaults, checks and meanings of that group, which imbsam.params validates) and its
step function (imported only when a step is built, so validating params.yaml loads no MindSpore). Every stage
depends on this file, so what only the benchmark needs (each method's arithmetic floor) lives in imbsam.bench.
"""

import importlib
import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# A value that follows data.dataset (imbsam.datasets' DEFAULTS), resolved by imbsam.params before a step sees it.
Auto = Literal["auto"]


class MethodParams(BaseModel):
    """A method's params.yaml group; its fields are its step function's keyword arguments unless
    `step_options` says otherwise."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def step_options(self, class_counts, schedule=None):
        """The keyword arguments of the step function, given the training split's per-class counts and the run's
        (epochs, steps per epoch), None where no run is planned (a benchmark)."""
        return self.resolved()

    def resolved(self):
        """The group as a dict, every `auto` already given its dataset's value (imbsam.params does that)."""
        values = self.model_dump()
        left = [name for name, value in values.items() if value == "auto"]
        if left:
            raise ValueError(f"{', '.join(left)} still auto: take the group from imbsam.params (validate, defaults)")
        return values


class SGDParams(MethodParams):
    """Plain SGD: nothing beyond train.*."""


class SAMParams(MethodParams):
    rho: float = Field(0.05, ge=0, description="the perturbation's radius")


class ImbSAMParams(MethodParams):
    rho: float = Field(0.05, ge=0, description="the tail perturbation's radius")
    eta: int | Auto = Field("auto", ge=0, description="tail classes: training count < eta (auto: the few "
                            "threshold, 20 on CIFAR-100: its 30 few classes at IF 100; 200 on CIFAR-10)")
    tail_loss_scale: float = Field(2.0, gt=0, description="the tail loss's factor, 2 in the authors' code")
    bn_update_in_perturbed_pass: bool = Field(
        True, description="BatchNorm statistics move in the forward at w + eps too, as in the authors' code")

    def step_options(self, class_counts, schedule=None):
        options = self.resolved()
        eta = options.pop("eta")
        return {**options, "tail_classes": tail_classes_for(class_counts, eta)}


class FocalSAMParams(MethodParams):
    """auto: the values of Focal-SAM's authors' CIFAR scripts, which pair it with the logit-adjusted loss."""

    rho: float | Auto = Field("auto", ge=0, description="the perturbation's radius (auto: 0.3 on CIFAR-100, 0.2 on "
                              "CIFAR-10)")
    gamma: float | Auto = Field("auto", ge=0, description="c_k = sharpness * (1 - n_k / N) ** gamma: how fast c falls "
                                "with n_k (auto: 3.2 on CIFAR-100, 3.0 on CIFAR-10)")
    sharpness: float | Auto = Field("auto", ge=0, le=1, description="c_k's scale (the paper's lambda): the weight of "
                                    "the sharpness term (auto: 0.8 on CIFAR-100, 0.5 on CIFAR-10)")
    adaptive: bool = Field(False, description="ASAM's scale-invariant eps, off in every script of the authors")

    def step_options(self, class_counts, schedule=None):
        group, total = self.resolved(), sum(class_counts)
        weights = [group["sharpness"] * (1 - count / total) ** group["gamma"] for count in class_counts]
        return {"rho": group["rho"], "class_weights": weights, "adaptive": self.adaptive}


class SSESAMParams(MethodParams):
    """SSE-SAM's values in its authors' README command (CIFAR-100-LT IF 100, ResNet-34, cross-entropy)."""

    head_rho: float = Field(0.05, ge=0, description="the head perturbation's radius")
    tail_rho: float = Field(0.1, ge=0, description="the tail perturbation's radius")
    eta: int | Auto = Field("auto", ge=0, description="tail classes: training count < eta (auto: 100 on CIFAR-100, "
                            "65 classes at IF 100; 1000 on CIFAR-10)")
    head_off_after: float = Field(0.7, ge=0, le=1, description="the share of the epochs after which the head's "
                                  "perturbation stops (its gamma; 0 or 1: never)")

    def step_options(self, class_counts, schedule=None):
        """The head's eps is off from the first epoch e (0-based) with e >= epochs * head_off_after, as the
        authors' per-epoch counter switches it; as a step index, which the optimizer's step counter (kept in
        checkpoints) is compared with."""
        group, off_from = self.resolved(), None
        if schedule and 0 < group["head_off_after"] < 1:
            epochs, steps_per_epoch = schedule
            off_from = math.ceil(epochs * group["head_off_after"]) * steps_per_epoch
        return {"head_rho": group["head_rho"], "tail_rho": group["tail_rho"],
                "tail_classes": tail_classes_for(class_counts, group["eta"]), "head_off_from_step": off_from}


def tail_classes_for(class_counts, eta):
    """ImbSAM's tail: the classes with fewer than eta training images."""
    return [c for c, n in enumerate(class_counts) if n < eta]


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    params: type
    step: str  # "module:function"
    source: str
    tuned_with_loss: str | None = None  # the train.loss its authors' defaults were chosen with, if not ce

    def step_function(self):
        module, function = self.step.split(":")
        return getattr(importlib.import_module(module), function)


METHODS = {method.name: method for method in (
    Method("sgd", "SGD", SGDParams, "imbsam.optim:sgd", "SGD with momentum"),
    Method("sam", "SAM", SAMParams, "imbsam.optim:sam", "Foret et al., ICLR 2021, as run by the ImbSAM authors' code"),
    Method("imbsam", "ImbSAM", ImbSAMParams, "imbsam.optim:imbsam", "Zhou et al., ICCV 2023"),
    Method("focal_sam", "Focal-SAM", FocalSAMParams, "imbsam.optim:focal_sam",
           "Focal-SAM, ICML 2025 (github scongl/Focal-SAM)", tuned_with_loss="logit_adjusted"),
    Method("sse_sam", "SSE-SAM", SSESAMParams, "imbsam.optim:sse_sam", "SSE-SAM, AAAI 2025 (github Zemdalk/SSE-SAM)"),
)}
