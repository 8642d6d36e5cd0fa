"""Focal-SAM (ICML 2025), as its authors' code runs it: per class c_k = sharpness * (1 - n_k / N) ** gamma; the
gradient of sum (1 - c_y) l_i / B at w plus that of sum c_y l_i / B at w + eps, eps from the latter's gradient at
w with its norm offset by 1e-12. Both gradients at w come from one forward pass; the running statistics move at w
and at w + eps. adaptive: ASAM's eps, rho * w^2 g / (|| |w| g || + 1e-12)."""

import numpy as np
from pydantic import Field

from imbsam.params import Auto, OptimizerParams

LABEL = "Focal-SAM"
SOURCE = "Focal-SAM, ICML 2025 (github scongl/Focal-SAM)"
# Its authors' CIFAR scripts pair it with the logit-adjusted loss; training says so when a run does not.
TUNED_WITH_LOSS = "logit_adjusted"
NORM_FLOOR = 1e-12  # what its code offsets eps's norm by


class Params(OptimizerParams):
    """auto: the values of Focal-SAM's authors' CIFAR scripts."""

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


def make_step(parts, rho=0.3, class_weights=(), adaptive=False):
    rho, floor = parts.radius(rho), parts.radius(NORM_FLOOR)
    class_weights = np.asarray(class_weights, dtype=np.float64)

    def step(images, labels):
        labels_np = parts.on_host(labels)
        focal = class_weights[labels_np] / len(labels_np)
        clean = parts.sample_weights(1.0 / len(labels_np) - focal)
        focal = parts.sample_weights(focal)
        loss, (clean_grads, focal_grads) = parts.gradients(images, labels, clean, focal)
        perturbed, eps = parts.perturbed_gradients(images, labels, focal, focal_grads, rho, floor=floor,
                                                   adaptive=adaptive)
        parts.update(perturbed, clean_grads, perturbation=eps)
        return loss

    return step
