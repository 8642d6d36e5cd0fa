"""SSE-SAM's claims (AAAI 2025, arXiv 2412.13715, github Zemdalk/SSE-SAM): its README's CIFAR-100-LT row and the
saddle-point argument of its abstract.

Its README's SGD, SAM and ImbSAM rows are its own re-runs, and its ImbSAM is its own variant (imbsam.published):
they make no claim about our ImbSAM, so only SSE-SAM's row and its gains over SGD and SAM are claims here. Its
README command is the ImbSAM authors' protocol with SSE-SAM's own values (params.yaml's sse_sam group), and its
code keeps the best test checkpoint and flip TTA, so its setting is the paper's protocol.
"""

from imbsam.claims import PAPER_PROTOCOL, Mechanism, difference, values
from imbsam.published import PUBLISHED

PAPER = "sse_sam"
TITLE = "SSE-SAM (AAAI 2025)"
TABLE_SOURCE = "SSE-SAM's README, Results on CIFAR100-LT (IF=100)"
ABSTRACT_SOURCE = "SSE-SAM's abstract: SAM escapes saddle points of the overall loss but not of the tail classes'"
TABLE = next(table for table in PUBLISHED if table.title == "SSE-SAM's re-runs").results


def _difference(baseline, group):
    return difference(PAPER, TABLE_SOURCE, PAPER_PROTOCOL, TABLE, "sse_sam", baseline, group, "greater")


CLAIMS = (
    *values(PAPER, TABLE_SOURCE, PAPER_PROTOCOL, TABLE, ("sse_sam",)),
    _difference("sgd", "all"),
    _difference("sam", "all"),
    _difference("sam", "few"),
    _difference("sam", "medium"),
    Mechanism(PAPER, ABSTRACT_SOURCE, PAPER_PROTOCOL, "sam-tail-saddle",
              "Under SAM the few group's most negative curvature λ_min lies below the many group's",
              "lambda_min", "sam", "few", "less", other_groups=("many",)),
    Mechanism(PAPER, ABSTRACT_SOURCE, PAPER_PROTOCOL, "sse-sam-escapes-tail-saddle",
              "SSE-SAM raises the few group's λ_min above SAM's (less negative curvature in the tail)",
              "lambda_min", "sse_sam", "few", "greater", baseline="sam"),
)
