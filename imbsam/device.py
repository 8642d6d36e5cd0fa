"""Which device a process trains on (CPU / GPU / Ascend / auto) and in which execution mode.

Call `setup()` once per process, before MindSpore does any tensor work: MindSpore accepts one
`set_device` per process, and imbsam.kernels.environment's CPU settings must be in the environment
before `import mindspore` (setup() puts them there first).
"""

import glob
import os
import platform
import sys

from imbsam.errors import InputError
from imbsam.kernels.environment import ONEDNN_ISA_ENV, prepare_environment

TARGETS = ("auto", "CPU", "GPU", "Ascend")
MODES = ("auto", "pynative", "graph")
# What a train step runs in (imbsam.optim.make_train_step); train.mode adds auto.
STEP_MODES = ("graph", "pynative")

# Which device an image was built for (set by the Dockerfile): an accelerator
# image that finds no accelerator must say so instead of training on the CPU.
IMAGE_TARGET_ENV = "IMBSAM_IMAGE_TARGET"

_HINTS = {
    "GPU": "start the container with `--gpus all` (NVIDIA container toolkit) or install the MindSpore GPU "
           "plugin's CUDA 11.6 + cuDNN 8 libraries",
    "Ascend": "start the container with --device=/dev/davinci0 --device=/dev/davinci_manager "
              "--device=/dev/devmm_svm --device=/dev/hisi_hdc and the /usr/local/Ascend/driver mounts "
              "(see docs/docker.md), or source CANN's set_env.sh",
}


# The device nodes a GPU or an NPU shows up as, on the host and in a container started with its flags.
_DEVICE_NODES = {"GPU": "/dev/nvidia[0-9]*", "Ascend": "/dev/davinci[0-9]*"}


def _available(ms, target):
    if target == "CPU":
        return True
    if not glob.glob(_DEVICE_NODES[target]):
        # Without a device node there is no such device. Probing anyway only makes MindSpore log, at WARNING,
        # every plugin it could not load ("Load dynamic library: libmindspore_ops_ascend.so failed ...").
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
    measured faster than op by op for all three methods (`python -m imbsam.bench`,
    docs/performance.md). `pynative` runs steps and evaluation op by op, for debugging. Both modes give the
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
        # faster on 2 cores and left graph mode unchanged (docs/performance.md).
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
