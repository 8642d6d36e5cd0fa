"""Plumbing shared by the stage scripts: reading params.yaml and reporting bad input.

Not a stage itself. Stages run from the repository root, as `dvc repro` does.
"""

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imbsam.errors import InputError

PARAMS_FILE = Path("params.yaml")


def load_params(path=PARAMS_FILE):
    if not Path(path).is_file():
        raise InputError(f"{path} not found: run the stage from the repository root")
    with open(path) as f:
        return yaml.safe_load(f)


def is_int(value):
    """An integer, not a bool (YAML's true/false are ints to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def param(params, dotted, check=None, choices=None):
    """Return params[dotted key]; InputError naming the key if it is missing or invalid.

    check: a predicate the value must satisfy, with its description, e.g.
    (lambda v: v > 0, "a number > 0"). choices: the allowed values.
    """
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise InputError(f"params.yaml: missing key {dotted}; restore it from the repository's params.yaml")
        node = node[part]
    if choices is not None and node not in choices:
        allowed = ", ".join(map(str, choices))
        raise InputError(f"params.yaml: {dotted}={node!r} is not one of {allowed}")
    if check is not None:
        predicate, description = check
        try:
            ok = predicate(node)
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"params.yaml: {dotted}={node!r} must be {description}")
    return node


def main_guard(main):
    """Run main(); print InputError as a single line and exit 1 instead of a traceback."""
    try:
        main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
