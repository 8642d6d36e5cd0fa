"""SSE-SAM (AAAI 2025), as its authors' code runs it: separate SAM steps for the head and the tail losses, each
summed over its samples / B, each with its own rho: a forward at w and one at w + eps_h for the head, then a
forward at w and one at w + eps_t for the tail (four forwards, each moving the running statistics), and the base
optimizer on the sum of the two gradients at the perturbed weights. From step head_off_from_step on, the head's
rho is 0."""

import math

import numpy as np
from pydantic import Field

from imbsam.params import Auto, OptimizerParams

LABEL = "SSE-SAM"
SOURCE = "SSE-SAM, AAAI 2025 (github Zemdalk/SSE-SAM)"


class Params(OptimizerParams):
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
                "tail_classes": [c for c, n in enumerate(class_counts) if n < group["eta"]],
                "head_off_from_step": off_from}


def make_step(parts, head_rho=0.05, tail_rho=0.1, tail_classes=(), head_off_from_step=None):
    head_rho, tail_rho, no_rho = parts.radius(head_rho), parts.radius(tail_rho), parts.radius(0.0)
    tail_classes = np.asarray(sorted(tail_classes), dtype=np.int64)

    def step(images, labels):
        labels_np = parts.on_host(labels)
        is_tail = np.isin(labels_np, tail_classes)
        head = parts.sample_weights(np.where(is_tail, 0.0, 1.0 / len(labels_np)))
        tail = parts.sample_weights(np.where(is_tail, 1.0 / len(labels_np), 0.0))
        head_off = head_off_from_step is not None and parts.steps_done() >= head_off_from_step
        loss, (head_grads,) = parts.gradients(images, labels, head)
        head_at_eps, eps = parts.perturbed_gradients(images, labels, head, head_grads, no_rho if head_off else head_rho)
        parts.undo(eps)
        _, (tail_grads,) = parts.gradients(images, labels, tail)
        tail_at_eps, eps = parts.perturbed_gradients(images, labels, tail, tail_grads, tail_rho)
        parts.update(tail_at_eps, head_at_eps, perturbation=eps)
        return loss

    return step
