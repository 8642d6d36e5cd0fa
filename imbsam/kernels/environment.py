"""The CPU settings that must be in the environment before MindSpore loads, and the user's own values.

imbsam sets them for MindSpore and its own kernels, never over a value the user chose, and remembers
the user's so that another library in the same process tree (PyTorch, in the benchmarks) runs as the
user runs it.
"""

import os

ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# What prepare_environment() sets on the CPU unless the user did (see there).
CPU_DEFAULTS = {ONEDNN_ISA_ENV: "AVX2", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}
# NAME=value pairs prepare_environment() set, so that a child process (a benchmark worker, a DVC stage
# started from a test) does not take the values it inherits for the user's.
SET_BY_IMBSAM_ENV = "IMBSAM_SET_ENVIRONMENT"
_set_by_imbsam = set(os.environ.get(SET_BY_IMBSAM_ENV, "").split(",")) - {""}
# The user's values (None: unset), read before prepare_environment() adds ours. Ours serve MindSpore and
# imbsam.kernels.onednn: PyTorch, in the benchmarks, must run as the user runs it.
USER_ENVIRONMENT = {name: None if f"{name}={os.environ.get(name)}" in _set_by_imbsam else os.environ.get(name)
                    for name in CPU_DEFAULTS}

def prepare_environment(target="auto"):
    """Set what must be in the environment before MindSpore is imported: call it first.

    - ONEDNN_MAX_CPU_ISA=AVX2: on AVX-512 CPUs MindSpore's bundled oneDNN falls back to a scalar
      reference convolution; capping the ISA at AVX2 selects its GEMM path (about 45x faster here).
      imbsam.kernels.onednn's own copy of oneDNN lifts the cap for itself.
    - OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=10000: GNU OpenMP, which MindSpore loads, reads them once.
      By default imbsam.kernels.onednn's idle OpenMP workers spin after each convolution (300,000 rounds), on the
      cores MindSpore's next kernels need: ResNet-32's graph-mode SGD step took 453 ms instead of 334
      without spinning, and about 245 ms instead of 264 with this short spin before sleeping.

    A value the user set is respected.
    """
    if target in ("auto", "CPU"):
        for name, value in CPU_DEFAULTS.items():
            if name not in os.environ:
                os.environ[name] = value
                _set_by_imbsam.add(f"{name}={value}")
        os.environ[SET_BY_IMBSAM_ENV] = ",".join(sorted(_set_by_imbsam))


def restore_user_environment(values=None):
    """Put the variables of CPU_DEFAULTS back to the user's `values` (default USER_ENVIRONMENT; None
    unsets), for another library: PyTorch in the benchmarks.

    Each copy of oneDNN reads its cap once, at its first primitive: MindSpore's keeps the AVX2 cap if it
    ran a convolution before this call. OpenMP reads its policy when it loads.
    """
    for name, value in (USER_ENVIRONMENT if values is None else values).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
