"""The papers' claims as data: one module per paper (imbsam/claims/<paper>.py: its TITLE and CLAIMS), each claim
with its source and the setting its authors ran; imbsam.claims_report judges them against the runs.

Three kinds:
- Value: an optimizer's balanced group accuracy as published, within a tolerance.
- Difference: one optimizer's group accuracy minus another's, in the direction the paper argues (greater, less,
  or "not_above": not more than `margin` points above).
- Mechanism: a curvature or generalization-gap figure of the mechanism stage (imbsam.mechanism), seed by seed:
  `quantity` of `optimizer`'s `group` minus the same of `baseline` (another optimizer's same group) or, with no
  baseline, of the optimizer's own `other_groups` (the strongest of them in the claim's direction); direction
  greater, less or "not_less" (not below). Its `text` may name the baseline as {baseline}.
"""

from dataclasses import dataclass, field

from imbsam import registry
from imbsam.bootstrap import GROUPS

DIFFERENCE_DIRECTIONS = ("greater", "less", "not_above")
MECHANISM_DIRECTIONS = ("greater", "less", "not_less")


@dataclass(frozen=True)
class Setting:
    """Where a source's numbers come from. keys: {dotted params.yaml key: the value the source ran with}, checked
    against the runs' params; None means the whole of the ImbSAM paper's protocol (imbsam.params.paper_protocol).
    evaluation: the (eval.selection, eval.flip_tta) its accuracies were measured with."""

    description: str
    keys: dict | None = None
    evaluation: tuple = ("best", True)


PAPER_PROTOCOL = Setting("CIFAR-100-LT, imbalance factor 100, ResNet-34, cross-entropy, 200 epochs, the ImbSAM "
                         "authors' hyper-parameters; best test epoch, flip TTA")


def _check_direction(claim, allowed):
    if claim.direction not in allowed:
        raise ValueError(f"{claim.id}: direction {claim.direction!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Value:
    paper: str
    source: str
    setting: Setting
    optimizer: str
    group: str
    published: float
    tolerance: float = 1.0
    kind = "value"

    @property
    def id(self):
        return f"{self.paper}:{self.optimizer}:{self.group}"

    @property
    def optimizers(self):
        return (self.optimizer,)


@dataclass(frozen=True)
class Difference:
    paper: str
    source: str
    setting: Setting
    optimizer: str
    baseline: str
    group: str
    published: float
    direction: str
    margin: float = 0.0
    kind = "difference"

    def __post_init__(self):
        _check_direction(self, DIFFERENCE_DIRECTIONS)

    @property
    def id(self):
        return f"{self.paper}:{self.optimizer}-{self.baseline}:{self.group}"

    @property
    def optimizers(self):
        return (self.optimizer, self.baseline)


@dataclass(frozen=True)
class Mechanism:
    paper: str
    source: str
    setting: Setting
    name: str
    text: str
    quantity: str
    optimizer: str
    group: str
    direction: str
    baseline: str | None = None
    other_groups: tuple = field(default=())
    published = None
    kind = "mechanism"

    def __post_init__(self):
        _check_direction(self, MECHANISM_DIRECTIONS)
        if (self.baseline is None) == (not self.other_groups):
            raise ValueError(f"{self.id}: compare with a baseline optimizer or with other groups, not both or none")

    @property
    def id(self):
        return f"{self.paper}:{self.name}"

    @property
    def optimizers(self):
        return (self.optimizer,) if self.baseline is None else (self.optimizer, self.baseline)


def values(paper, source, setting, table, optimizers):
    """A Value claim per optimizer and group of a published table ({optimizer: {group: %}})."""
    return tuple(Value(paper, source, setting, optimizer, group, table[optimizer][group])
                 for optimizer in optimizers for group in GROUPS)


def difference(paper, source, setting, table, optimizer, baseline, group, direction, margin=0.0):
    """The Difference claim of table[optimizer][group] - table[baseline][group], as the table gives it."""
    return Difference(paper, source, setting, optimizer, baseline, group,
                      round(table[optimizer][group] - table[baseline][group], 1), direction, margin)


def all_claims():
    """Every paper's claims, the ImbSAM paper's first."""
    papers = sorted(registry.names("claims"), key=lambda name: (name != "imbsam", name))
    return tuple(claim for paper in papers for claim in registry.module("claims", paper).CLAIMS)
