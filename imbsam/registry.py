"""The optimizers, losses and datasets by name: each is the module imbsam/<kind>/<name>.py, found by its file.

Names come from the file listing, without importing anything, so a stage imports (and DVC tracks) only the
modules it computes with; `module` imports one by name. A module whose name starts with "_" is a helper of its
package, not an entry.
"""

import importlib
from pathlib import Path

from imbsam.errors import InputError

KINDS = {"optimizers": "train.optimizers", "losses": "train.loss", "datasets": "data.dataset"}
_ROOT = Path(__file__).resolve().parent


def names(kind):
    """The entries of imbsam/<kind>/, sorted."""
    return tuple(sorted(path.stem for path in (_ROOT / kind).glob("*.py") if not path.stem.startswith("_")))


def module(kind, name):
    """The module of entry `name`; InputError naming the known ones (and the params key) for an unknown name."""
    known = names(kind)
    if name not in known:
        raise InputError(f"{KINDS[kind]}: unknown {kind.removesuffix('s')} {name!r}: choose from {', '.join(known)} "
                         f"(or add imbsam/{kind}/{name}.py)")
    return importlib.import_module(f"imbsam.{kind}.{name}")


def modules(kind):
    """{name: module} of every entry."""
    return {name: module(kind, name) for name in names(kind)}
