"""Benchmarks, on the library's public functions only: `python -m imbsam.bench` (a train step of every
optimizer against its arithmetic floor: imbsam.bench.step plans the rows and prints the report, imbsam.bench.worker
runs each row's runner from imbsam.bench.runners in a process of its own, on imbsam.bench.workload's labels),
`python -m imbsam.bench.conv` (one convolution layer, imbsam.bench.conv), `python -m imbsam.bench.oracle` (every
optimizer's accuracy against PyTorch float64, imbsam.bench.oracle) and `python -m imbsam.bench.kinks` (whether a
gradient far from float64's is a ReLU on the other side of its kink, imbsam.bench.kinks); the last two and
--compare-torch run the network's PyTorch twin, imbsam.bench.twin. How to run and read them: docs/performance.md.
"""

import argparse
import importlib.util
import sys

TORCH_INSTALL = "pip install torch==2.13.0"


def require_torch(parser, what):
    """Stop with one line naming the install command where PyTorch, a benchmark-only extra, is missing."""
    if importlib.util.find_spec("torch") is None:
        parser.error(f"{what} needs PyTorch, a benchmark-only extra: {TORCH_INSTALL}")


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def subset(choices):
    """argparse type: a comma-separated subset of `choices`, as a tuple in the order given."""
    def parse(text):
        names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
        if not names or any(name not in choices for name in names):
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated subset of {','.join(choices)}")
        return names

    return parse


class _FormerName(argparse.Action):
    """An option's former name: it still works, after one line naming the option that replaced it."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{option_string} is deprecated: use --{self.dest.replace('_', '-')}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_optimizers(parser, choices, help):
    """--optimizers: a comma-separated subset of `choices` (default all of them); --methods, its name before the
    project called them optimizers, still works."""
    parser.add_argument("--optimizers", type=subset(choices), default=choices, help=help)
    parser.add_argument("--methods", type=subset(choices), dest="optimizers", action=_FormerName,
                        help=argparse.SUPPRESS)
