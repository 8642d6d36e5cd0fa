"""The checks of the optimizers, apart from what trains: imbsam/verify/optimizers/<name>.py holds optimizer
<name>'s float64 reference (imbsam.reference runs it), the arithmetic floor of its step for the benchmark
(imbsam.bench) and its PyTorch twin (imbsam.bench.oracle), each found by the optimizer's name. No stage imports
this package, so editing a check retrains nothing; an optimizer without a module here is reported as unchecked.
"""

import importlib
import importlib.util


def checks(optimizer):
    """The checks module of `optimizer`, or None where it has none."""
    name = f"imbsam.verify.optimizers.{optimizer}"
    return importlib.import_module(name) if importlib.util.find_spec(name) else None
