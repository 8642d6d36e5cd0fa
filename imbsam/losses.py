"""The losses table: one row per `train.loss`, so that a new loss is a row here, a per-sample loss Cell in
imbsam.criteria and a group in params.yaml.

Each loss is per sample (what the methods' steps weight and sum) and built from the training split's per-class
counts n_k (prior pi_k = n_k / N); z are the logits, y the label:
- ce: -log softmax(z)_y, the paper's.
- logit_adjusted (Menon et al., ICLR 2021): ce of z + tau * log pi.
- balanced_softmax (Ren et al., NeurIPS 2020): ce of z + log n.
- ldam_drw (Cao et al., NeurIPS 2019, as kaidic/LDAM-DRW's code): the network's head is normalised (cosines
  of the unit feature and unit class weights), the true class's cosine lowered by m_y = C / n_y ** (1/4), C
  such that the largest is max_margin, everything times scale; after drw_after epochs each sample weighs
  w_y * B / sum_batch w (PyTorch's weighted mean), w_k = (1 - beta) / (1 - beta ** n_k) normalised to sum to
  the number of classes (deferred re-weighting; before it every w_k is 1).
A row's params group is validated by imbsam.params, like a method's; its Cell is imported only when built.
"""

import importlib
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class LossParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def loss_options(self, class_counts):
        """The keyword arguments of the loss Cell, given the split's per-class counts."""
        return {}


class CEParams(LossParams):
    """Cross-entropy: nothing to set."""


class LogitAdjustedParams(LossParams):
    tau: float = Field(1.0, ge=0, description="the prior's weight: logits + tau * log(n_k / N) (1: Menon et al.'s "
                       "and Focal-SAM's scripts)")

    def loss_options(self, class_counts):
        return {"offsets": (self.tau * np.log(np.asarray(class_counts) / np.sum(class_counts))).tolist()}


class BalancedSoftmaxParams(LossParams):
    """logits + log n_k: nothing to set."""

    def loss_options(self, class_counts):
        return {"offsets": np.log(np.asarray(class_counts, dtype=np.float64)).tolist()}


class LDAMDRWParams(LossParams):
    max_margin: float = Field(0.5, gt=0, description="the largest class margin (the rarest class's), LDAM's 0.5")
    scale: float = Field(30.0, gt=0, description="s, the cosines' factor, LDAM's 30")
    drw_after: int = Field(160, ge=0, description="epochs before re-weighting starts (LDAM-DRW's 160 of 200)")
    beta: float = Field(0.9999, ge=0, lt=1, description="the effective number's beta of the re-weighting")

    def loss_options(self, class_counts):
        counts = np.asarray(class_counts, dtype=np.float64)
        margins = counts ** -0.25
        weights = (1 - self.beta) / (1 - self.beta ** counts)
        return {"margins": (margins * self.max_margin / margins.max()).tolist(), "scale": self.scale,
                "class_weights": (weights / weights.sum() * len(counts)).tolist(), "weights_from_epoch":
                self.drw_after + 1}


@dataclass(frozen=True)
class Loss:
    name: str
    label: str
    params: type
    cell: str  # "module:class"
    normalised_head: bool  # the network's last layer: cosines instead of a linear map
    source: str

    def cell_class(self):
        module, name = self.cell.split(":")
        return getattr(importlib.import_module(module), name)


LOSSES = {loss.name: loss for loss in (
    Loss("ce", "CE", CEParams, "imbsam.criteria:CrossEntropy", False, "cross-entropy, the paper's"),
    Loss("logit_adjusted", "LA", LogitAdjustedParams, "imbsam.criteria:CrossEntropy", False,
         "Menon et al., ICLR 2021"),
    Loss("balanced_softmax", "BS", BalancedSoftmaxParams, "imbsam.criteria:CrossEntropy", False,
         "Ren et al., NeurIPS 2020"),
    Loss("ldam_drw", "LDAM-DRW", LDAMDRWParams, "imbsam.criteria:LDAM", True, "Cao et al., NeurIPS 2019"),
)}
