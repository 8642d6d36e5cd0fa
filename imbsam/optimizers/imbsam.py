"""ImbSAM (Zhou et al., ICCV 2023): SAM's perturbation for the tail classes' loss only, plain gradients for the
head's. One step on a batch of B samples, tail classes T (training count < eta), per-sample loss l_i:

    L_h = sum_{i not in T} l_i / B            L_t = tail_loss_scale * sum_{i in T} l_i / B
    g_h = grad L_h(w)        eps = rho * g_t / (||g_t|| + 1e-16) with g_t = grad L_t(w)
    g_t' = grad L_t(w + eps)  (forward on the whole batch at w + eps)
    w <- base_optimizer(w, g_h + g_t')

g_h and g_t share one forward pass; the running statistics move at w and at w + eps, as in the authors' code.
"""

import warnings

import numpy as np
from pydantic import Field

from imbsam.params import Auto, OptimizerParams

LABEL = "ImbSAM"
SOURCE = "Zhou et al., ICCV 2023"


class Params(OptimizerParams):
    rho: float = Field(0.05, ge=0, description="the tail perturbation's radius")
    eta: int | Auto = Field("auto", ge=0, description="tail classes: training count < eta (auto: the few "
                            "threshold, 20 on CIFAR-100: its 30 few classes at IF 100; 200 on CIFAR-10)")
    tail_loss_scale: float = Field(2.0, gt=0, description="the tail loss's factor, 2 in the authors' code")
    bn_update_in_perturbed_pass: bool = Field(
        True, description="BatchNorm statistics move in the forward at w + eps too, as in the authors' code")

    def step_options(self, class_counts, schedule=None):
        options = self.resolved()
        eta = options.pop("eta")
        return {**options, "tail_classes": [c for c, n in enumerate(class_counts) if n < eta]}


def make_step(parts, rho=0.05, tail_classes=(), tail_loss_scale=2.0, bn_update_in_perturbed_pass=True):
    rho = parts.radius(rho)
    tail_classes = np.asarray(sorted(tail_classes), dtype=np.int64)
    if not len(tail_classes):
        warnings.warn("ImbSAM with no tail classes (raise imbsam.eta): every step equals SGD", stacklevel=3)

    def step(images, labels):
        # Which samples are tail is a host-side decision on labels the host just produced.
        labels_np = parts.on_host(labels)
        is_tail = np.isin(labels_np, tail_classes)
        head = parts.sample_weights(np.where(is_tail, 0.0, 1.0 / len(labels_np)))
        if not is_tail.any():
            # eps = 0 and g_t' = 0, so the update is SGD on L_h. The authors' code still runs a forward at
            # w + 0, moving the running statistics a second time with this batch: replayed, not run.
            if bn_update_in_perturbed_pass:
                parts.stats("save")
            loss, (head_grads,) = parts.gradients(images, labels, head)
            parts.update(head_grads)
            if bn_update_in_perturbed_pass:
                parts.stats("replay")
            return loss
        tail = parts.sample_weights(np.where(is_tail, tail_loss_scale / len(labels_np), 0.0))
        loss, (head_grads, tail_grads) = parts.gradients(images, labels, head, tail)
        perturbed_tail, eps = parts.perturbed_gradients(images, labels, tail, tail_grads, rho,
                                                        bn_update_in_perturbed_pass)
        parts.update(perturbed_tail, head_grads, perturbation=eps)
        return loss

    return step
