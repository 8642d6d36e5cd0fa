"""SAM (Foret et al., ICLR 2021), as the ImbSAM authors' code runs it: the gradient of the mean loss at w + eps,
eps = rho g / (||g|| + 1e-16), g the mean loss's gradient at w."""

from pydantic import Field

from imbsam.params import OptimizerParams

LABEL = "SAM"
SOURCE = "Foret et al., ICLR 2021, as run by the ImbSAM authors' code"


class Params(OptimizerParams):
    rho: float = Field(0.05, ge=0, description="the perturbation's radius")


def make_step(parts, rho=0.05, bn_update_in_perturbed_pass=True):
    """bn_update_in_perturbed_pass=False keeps the BatchNorm running statistics from moving in the forward pass at
    w + eps, where the authors' code moves them."""
    rho = parts.radius(rho)

    def step(images, labels):
        weights = parts.uniform(labels)
        loss, (grads,) = parts.gradients(images, labels, weights)
        perturbed, eps = parts.perturbed_gradients(images, labels, weights, grads, rho, bn_update_in_perturbed_pass)
        parts.update(perturbed, perturbation=eps)
        return loss

    return step
