"""The ImbSAM paper's claims (Zhou et al., ICCV 2023, arXiv 2308.07815): its CIFAR-100-LT table, the argument the
table makes, and the mechanism it argues from."""

from imbsam.claims import PAPER_PROTOCOL, Mechanism, difference, values
from imbsam.published import PUBLISHED

PAPER = "imbsam"
TITLE = "ImbSAM (Zhou et al., ICCV 2023)"
TABLE_SOURCE = "ImbSAM paper, CIFAR-100-LT table (as the authors' PyTorch README gives it)"
FIGURE_SOURCE = ("ImbSAM, the tail classes' overfitting as the bottleneck (abstract) and the head / tail loss "
                 "landscapes of its repository's opening figure")
TABLE = next(table for table in PUBLISHED if table.title == "Paper (PyTorch)").results


def _difference(optimizer, baseline, group, direction, margin=0.0):
    return difference(PAPER, TABLE_SOURCE, PAPER_PROTOCOL, TABLE, optimizer, baseline, group, direction, margin)


def _mechanism(name, text, quantity, optimizer, group, direction, **comparison):
    return Mechanism(PAPER, FIGURE_SOURCE, PAPER_PROTOCOL, name, text, quantity, optimizer, group, direction,
                     **comparison)


CLAIMS = (
    *values(PAPER, TABLE_SOURCE, PAPER_PROTOCOL, TABLE, ("sgd", "sam", "imbsam")),
    _difference("imbsam", "sgd", "all", "greater"),
    _difference("imbsam", "sam", "all", "greater"),
    _difference("imbsam", "sgd", "few", "greater"),
    _difference("imbsam", "sam", "few", "greater"),
    _difference("imbsam", "sgd", "medium", "greater"),
    _difference("sam", "sgd", "many", "greater"),
    # SAM's few is 1.1 below SGD's in the table: the claim is that SAM does not help the tail, not that it hurts it.
    _difference("sam", "sgd", "few", "not_above", margin=1.0),
    _difference("imbsam", "sgd", "many", "less"),
    _mechanism("sgd-few-gap-largest", "Under SGD the few group's generalization gap is the largest of the three",
               "gap", "sgd", "few", "greater", other_groups=("many", "medium")),
    _mechanism("imbsam-narrows-few-gap", "ImbSAM narrows the few group's generalization gap (against SGD)",
               "gap", "imbsam", "few", "less", baseline="sgd"),
    _mechanism("sam-flattens-many", "SAM lowers the many group's curvature λ_max (against SGD)",
               "lambda_max", "sam", "many", "less", baseline="sgd"),
    _mechanism("sam-not-few", "SAM does not lower the few group's curvature λ_max (against SGD)",
               "lambda_max", "sam", "few", "not_less", baseline="sgd"),
    _mechanism("imbsam-flattens-few", "ImbSAM lowers the few group's curvature λ_max (against SGD)",
               "lambda_max", "imbsam", "few", "less", baseline="sgd"),
)
