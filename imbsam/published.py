"""Published results, each with its setting and source: what the report and the sweep report set ours beside.

Balanced accuracy (%) by class group, best epoch on the test set, horizontal-flip TTA, as each source's code
evaluates. A setting is (dataset, imbalance factor, loss); a row's optimizer is a name of imbsam/optimizers/.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    title: str
    source: str
    dataset: str
    imbalance_factor: int
    loss: str
    results: dict  # optimizer -> {many, medium, few, all}

    def setting(self):
        return (self.dataset, self.imbalance_factor, self.loss)


def _groups(many, medium, few, all_):
    return {"many": many, "medium": medium, "few": few, "all": all_}


PUBLISHED = (
    Published("Paper (PyTorch)", "official PyTorch README of ImbSAM (the numbers of the ICCV 2023 paper)",
              "cifar100", 100, "ce",
              {"sgd": _groups(77.8, 46.6, 13.5, 47.6), "sam": _groups(79.7, 49.3, 12.4, 48.9),
               "imbsam": _groups(75.9, 53.5, 19.4, 51.1)}),
    Published("Authors' MindSpore", "official MindSpore README of ImbSAM", "cifar100", 100, "ce",
              {"sgd": _groups(65.2, 32.9, 7.3, 36.5), "sam": _groups(67.5, 34.6, 7.6, 38.0),
               "imbsam": _groups(63.2, 43.4, 11.4, 40.7)}),
    Published("SSE-SAM's re-runs", "README of SSE-SAM (github Zemdalk/SSE-SAM), its own runs on the ImbSAM "
              "authors' code base; its ImbSAM row is SSE-SAM's implementation of ImbSAM, not the ImbSAM authors' "
              "numbers", "cifar100", 100, "ce",
              {"sgd": _groups(74.3, 43.1, 11.6, 44.6), "sam": _groups(75.3, 45.6, 12.9, 46.2),
               "imbsam": _groups(72.3, 50.4, 16.6, 47.9), "sse_sam": _groups(71.7, 54.5, 17.1, 49.3)}),
)


def imbalance_factor(imb_factor):
    """split.imb_factor 0.01 -> 100."""
    return round(1 / imb_factor)


def for_setting(dataset, factor, loss):
    """The published tables of this setting (factor: the imbalance factor, 100 for split.imb_factor 0.01)."""
    return [table for table in PUBLISHED if table.setting() == (dataset, factor, loss)]
