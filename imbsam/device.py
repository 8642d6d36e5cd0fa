"""Device selection (CPU / GPU / Ascend / auto), execution mode, and the CPU's oneDNN and launch settings.

Call `setup()` once per process, before MindSpore does any tensor work: MindSpore
accepts one `set_device` per process, and the oneDNN setting must be in the
environment before `import mindspore`.
"""

import glob
import os
import platform
import sys

from imbsam.errors import InputError

TARGETS = ("auto", "CPU", "GPU", "Ascend")
MODES = ("auto", "pynative", "graph")
KERNELS = ("auto", "onednn", "mindspore")

# Which device an image was built for (set by the Dockerfile): an accelerator
# image that finds no accelerator must say so instead of training on the CPU.
IMAGE_TARGET_ENV = "IMBSAM_IMAGE_TARGET"

ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# What prepare_environment() sets on the CPU unless the user did (see there).
CPU_DEFAULTS = {ONEDNN_ISA_ENV: "AVX2", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}
# NAME=value pairs prepare_environment() set, so that a child process (a benchmark worker, a DVC stage
# started from a test) does not take the values it inherits for the user's.
SET_BY_IMBSAM_ENV = "IMBSAM_SET_ENVIRONMENT"
_set_by_imbsam = set(os.environ.get(SET_BY_IMBSAM_ENV, "").split(",")) - {""}
# The user's values (None: unset), read before prepare_environment() adds ours. Ours serve MindSpore and
# imbsam.onednn: PyTorch, in the benchmarks, must run as the user runs it.
USER_ENVIRONMENT = {name: None if f"{name}={os.environ.get(name)}" in _set_by_imbsam else os.environ.get(name)
                    for name in CPU_DEFAULTS}

_HINTS = {
    "GPU": "start the container with `--gpus all` (NVIDIA container toolkit) or install the MindSpore GPU "
           "plugin's CUDA 11.6 + cuDNN 8 libraries",
    "Ascend": "start the container with --device=/dev/davinci0 --device=/dev/davinci_manager "
              "--device=/dev/devmm_svm --device=/dev/hisi_hdc and the /usr/local/Ascend/driver mounts "
              "(see README), or source CANN's set_env.sh",
}


def prepare_environment(target="auto"):
    """Set what must be in the environment before MindSpore is imported: call it first.

    - ONEDNN_MAX_CPU_ISA=AVX2: on AVX-512 CPUs MindSpore's bundled oneDNN falls back to a scalar
      reference convolution; capping the ISA at AVX2 selects its GEMM path (about 45x faster here).
      imbsam.onednn's own copy of oneDNN lifts the cap for itself.
    - OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=10000: GNU OpenMP, which MindSpore loads, reads them once.
      By default imbsam.onednn's idle OpenMP workers spin after each convolution (300,000 rounds), on the
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


def _available(ms, target):
    if target == "CPU":
        return True
    if target == "Ascend" and not glob.glob("/dev/davinci[0-9]*"):
        # Without an NPU device node, probing only makes MindSpore log plugin load failures.
        return False
    try:
        return bool(ms.hal.is_available(target))
    except (RuntimeError, ValueError, AttributeError):
        return False


def resolve_target(target, ms):
    if target not in TARGETS:
        raise InputError(f"device.target={target!r} is not one of {', '.join(TARGETS)}")
    image = {"gpu": "GPU", "ascend": "Ascend"}.get(os.environ.get(IMAGE_TARGET_ENV, "").lower())
    if target == "auto":
        for candidate in ("Ascend", "GPU"):
            if _available(ms, candidate):
                return candidate
        if image:
            raise InputError(f"this is the {image} image but no {image} is visible: {_HINTS[image]}; "
                             "or set device.target=CPU to train on the CPU deliberately")
        return "CPU"
    if not _available(ms, target):
        raise InputError(f"device.target={target} but no {target} is available: {_HINTS[target]}; "
                         "or set device.target=auto")
    return target


def resolve_mode(mode):
    """`auto` is graph mode on every device: the train step's pieces run compiled, and on the CPU it
    measured faster than op by op for all three methods (`python -m imbsam.bench`, README
    "Performance"). `pynative` runs steps and evaluation op by op, for debugging. Both modes give the
    same update (tests/test_optim_equivalence.py, tests/test_graph_mode.py)."""
    if mode not in MODES:
        raise InputError(f"train.mode={mode!r} is not one of {', '.join(MODES)}")
    return "graph" if mode == "auto" else mode


def setup(target="auto", mode="auto", deterministic=False):
    """Select the device and execution mode; return a description for run metadata."""
    if target not in TARGETS:
        raise InputError(f"device.target={target!r} is not one of {', '.join(TARGETS)}")
    prepare_environment(target)
    import mindspore as ms

    resolved = resolve_target(target, ms)
    resolved_mode = resolve_mode(mode)
    ms.set_device(resolved)
    ms.set_context(mode=ms.GRAPH_MODE if resolved_mode == "graph" else ms.PYNATIVE_MODE)
    if resolved == "CPU":
        # The CPU "device" is the host's own cores: asynchronous launch only adds a dispatch thread that
        # competes with the kernels for them. Synchronous launch made PyNative ResNet-32 steps 1.3-1.6x
        # faster on 2 cores and left graph mode unchanged (README, Performance).
        ms.runtime.launch_blocking()
    if deterministic:
        ms.set_deterministic(True)
    return {
        "target": resolved,
        "requested": target,
        "mode": resolved_mode,
        "mindspore": ms.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "threads": os.cpu_count(),
        "onednn_max_cpu_isa": os.environ.get(ONEDNN_ISA_ENV) if resolved == "CPU" else None,
        "launch_blocking": resolved == "CPU",
    }
