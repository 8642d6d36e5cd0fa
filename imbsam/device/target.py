"""Which device a process trains on (CPU / GPU / Ascend / auto) and in which execution mode, and the checks that
can be made of a host before any work (`preflight`).

Call `setup()` once per process, before MindSpore does any tensor work: MindSpore accepts one
`set_device` per process, and imbsam.kernels.environment's CPU settings must be in the environment
before `import mindspore` (setup() puts them there first).
"""

import ctypes
import dataclasses
import glob
import os
import platform
import subprocess
import sys
import warnings
from dataclasses import dataclass

from imbsam.errors import InputError
from imbsam.kernels.environment import ONEDNN_ISA_ENV, prepare_environment
from imbsam.params import MODES, TARGETS

# Which device an image was built for (set by the Dockerfile): an accelerator
# image that finds no accelerator must say so instead of training on the CPU.
IMAGE_TARGET_ENV = "IMBSAM_IMAGE_TARGET"

# Which GPUs the gpu image's build runs on, by compute capability, read off its binaries with cuobjdump
# (docs/docker.md, "Which GPUs"): MindSpore 2.10's kernels carry native code for sm_60 to sm_80 (which
# every 8.x GPU runs) and PTX for compute_60 and compute_86; cuBLAS 11.11 and cuDNN 8.9.6 native code up
# to sm_90, and cuDNN none for Blackwell. (lowest capability, how it runs or None, why)
GPU_SUPPORT = (
    ((0, 0), None, ("MindSpore 2.10's GPU kernels start at compute capability 6.0 (Pascal), and PTX cannot be "
                   "compiled for an older GPU")),
    ((6, 0), "native", ""),
    ((9, 0), "through PTX JIT", ("MindSpore's kernels have no Hopper code: the driver compiles their PTX on first "
                                "use, once per driver version with a volume at CUDA_CACHE_PATH")),
    ((10, 0), None, "cuDNN 8.9, the newest for CUDA 11, has no Blackwell code"),
)
# CUDA 11.8's driver. CUDA 11 libraries also run on drivers from 450.80.02, through minor-version
# compatibility, but those cannot compile the PTX that newer toolkits wrote.
MIN_DRIVER, MIN_COMPAT_DRIVER = (520, 61, 5), (450, 80, 2)
NVIDIA_SMI = ("nvidia-smi", "--query-gpu=index,name,compute_cap,driver_version", "--format=csv,noheader")
_INSTEAD = "use a GPU of compute capability 6.0 to 9.0 (Pascal to Hopper), or train on the CPU: -S device.target=CPU"

_HINTS = {
    "GPU": "start the container with `--gpus all` (NVIDIA Container Toolkit); outside the image, install the "
           "driver and requirements-gpu.lock's CUDA libraries (docs/docker.md)",
    "Ascend": "start the container with --device=/dev/davinci0 --device=/dev/davinci_manager "
              "--device=/dev/devmm_svm --device=/dev/hisi_hdc and the /usr/local/Ascend/driver mounts "
              "(see docs/docker.md), or source CANN's set_env.sh",
}


# The device nodes a GPU or an NPU shows up as, on the host and in a container started with its flags.
DEVICE_NODES = {"GPU": "/dev/nvidia[0-9]*", "Ascend": "/dev/davinci[0-9]*"}

@dataclass(frozen=True)
class GPU:
    index: str
    name: str
    capability: tuple  # (major, minor); None where the driver cannot tell (before R510)
    driver: str

    @property
    def driver_version(self):
        return _numbers(self.driver)

    def __str__(self):
        capability = "unknown" if self.capability is None else ".".join(map(str, self.capability))
        return f"GPU {self.index}, {self.name} (compute capability {capability}, driver {self.driver})"


def _numbers(text):
    return tuple(int(part) for part in text.strip().split("."))


def parse_nvidia_smi(text):
    """The GPUs of `nvidia-smi --query-gpu=index,name,compute_cap,driver_version --format=csv,noheader`
    (or the same without compute_cap, which drivers before R510 do not know)."""
    gpus = []
    for line in text.strip().splitlines():
        fields = [field.strip() for field in line.split(",")]
        index, name, driver = fields[0], fields[1], fields[-1]
        capability = _numbers(fields[2]) if len(fields) == 4 else None
        gpus.append(GPU(index, name, capability, driver))
    return gpus


def gpu_support(capability):
    """(how this build runs on a GPU of that compute capability, or None; why)."""
    verdict, why = None, ""
    for lowest, how, reason in GPU_SUPPORT:
        if capability >= lowest:
            verdict, why = how, reason
    return verdict, why


def check_gpus(gpus):
    """InputError naming the first GPU this build cannot run on and what to use instead; a warning for each
    it runs on only in part (through PTX JIT, or on an old driver); one note per GPU."""
    notes = []
    for gpu in gpus:
        if gpu.driver_version < MIN_COMPAT_DRIVER:
            raise InputError(f"{gpu}: CUDA 11 needs driver 450.80.02 or newer (520.61.05 for all of this image): "
                             "upgrade the driver, or train on the CPU: -S device.target=CPU")
        if gpu.capability is None:
            how, note = None, ("its driver predates R510 and neither it nor its library reported the compute "
                               "capability: if this build cannot run on it, CUDA fails at the first step")
        else:
            how, why = gpu_support(gpu.capability)
            if how is None:
                raise InputError(f"{gpu}: this CUDA 11 build of MindSpore cannot run on it ({why}); {_INSTEAD}")
            note = f"runs {how}" + (f" ({why})" if why else "")
        if gpu.driver_version < MIN_DRIVER:
            note += ("; its driver is older than CUDA 11.8's 520.61.05: it runs through CUDA's minor-version "
                     "compatibility, where kernels compiled from PTX fail (upgrade the driver)")
        if how != "native" or gpu.driver_version < MIN_DRIVER:
            warnings.warn(f"{gpu}: {note}", stacklevel=2)
        notes.append(f"{gpu}: {note}")
    return notes


# cuDeviceGetAttribute's CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR and _MINOR (cuda.h).
_CU_CAPABILITY_MAJOR, _CU_CAPABILITY_MINOR = 75, 76


def driver_capabilities():
    """{GPU name: (major, minor)} from the driver's own library, libcuda.so.1, which every driver since CUDA's
    first knows, for those whose nvidia-smi cannot tell; {} where it does not load or answer."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return {}
    count = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return {}
    found = {}
    for ordinal in range(count.value):
        device, major, minor, name = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.create_string_buffer(256)
        if not (cuda.cuDeviceGet(ctypes.byref(device), ordinal) or cuda.cuDeviceGetName(name, 256, device)
                or cuda.cuDeviceGetAttribute(ctypes.byref(major), _CU_CAPABILITY_MAJOR, device)
                or cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CU_CAPABILITY_MINOR, device)):
            found[name.value.decode(errors="replace")] = (major.value, minor.value)
    return found


def fill_capabilities(gpus, capabilities):
    """The GPUs with each unknown compute capability taken from {name: capability} (driver_capabilities): CUDA
    numbers devices in its own order, and GPUs of one name share their capability."""
    return [gpu if gpu.capability is not None or gpu.name not in capabilities
            else dataclasses.replace(gpu, capability=capabilities[gpu.name]) for gpu in gpus]


def query_gpus():
    """The visible GPUs as nvidia-smi lists them, with the capability a driver before R510 does not print taken
    from the driver's library; None without nvidia-smi (outside the gpu image, no driver utilities)."""
    try:
        result = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:  # a driver before R510 knows no compute_cap
            result = subprocess.run((NVIDIA_SMI[0], "--query-gpu=index,name,driver_version", NVIDIA_SMI[2]),
                                    capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or not result.stdout.strip():
        return None
    gpus = parse_nvidia_smi(result.stdout)
    return fill_capabilities(gpus, driver_capabilities()) if any(gpu.capability is None for gpu in gpus) else gpus


def _image_target():
    return {"gpu": "GPU", "ascend": "Ascend"}.get(os.environ.get(IMAGE_TARGET_ENV, "").lower())


def missing_device(target):
    image = _image_target()
    if image and target == "auto":
        return InputError(f"this is the {image} image but no {image} is visible: {_HINTS[image]}; "
                          "or set device.target=CPU to train on the CPU deliberately")
    return InputError(f"device.target={target} but no {target} is available: {_HINTS[target]}; "
                      "or set device.target=auto")


def preflight(target="auto"):
    """The checks that need no MindSpore and cost well under a second, for the first thing a stage does:
    an accelerator image, or device.target, that asks for a device the host does not show stops, and so
    does a GPU this build cannot run on (nvidia-smi). Returns the GPU notes (empty off a GPU)."""
    if target not in TARGETS:
        raise InputError(f"device.target={target!r} is not one of {', '.join(TARGETS)}")
    wanted = target if target != "auto" else _image_target()
    if wanted in DEVICE_NODES and not glob.glob(DEVICE_NODES[wanted]):
        raise missing_device(target)
    if target in ("auto", "GPU") and glob.glob(DEVICE_NODES["GPU"]):
        gpus = query_gpus()
        return check_gpus(gpus) if gpus else []
    return []


def _available(ms, target):
    if target == "CPU":
        return True
    if not glob.glob(DEVICE_NODES[target]):
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
    if target == "auto":
        for candidate in ("Ascend", "GPU"):
            if _available(ms, candidate):
                return candidate
        if _image_target():
            raise missing_device(target)
        return "CPU"
    if not _available(ms, target):
        raise missing_device(target)
    return target


def resolve_mode(mode):
    """`auto` is graph mode on every device: the train step's pieces run compiled, and on the CPU it
    measured faster than op by op for all three methods (`python -m imbsam.bench`,
    docs/performance.md). `pynative` runs steps and evaluation op by op, for debugging. Both modes give the
    same update (tests/unit/test_optim_equivalence.py, tests/test_graph_mode.py)."""
    if mode not in MODES:
        raise InputError(f"train.mode={mode!r} is not one of {', '.join(MODES)}")
    return "graph" if mode == "auto" else mode


def setup(target="auto", mode="auto", deterministic=False, slot=None):
    """Select the device and execution mode; return a description for run metadata.

    slot: the device claimed for this run (imbsam.device.claims.claim_for), which it then runs on; None for the
    default device, as benchmarks and the host check run."""
    gpu_notes = preflight(target)
    prepare_environment(target)
    import mindspore as ms

    resolved = resolve_target(target, ms)
    resolved_mode = resolve_mode(mode)
    ms.set_device(resolved, slot.index if slot and resolved != "CPU" else None)
    ms.set_context(mode=ms.GRAPH_MODE if resolved_mode == "graph" else ms.PYNATIVE_MODE)
    if slot and slot.cores:
        ms.set_context(runtime_num_threads=len(slot.cores))
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
        "threads": len(slot.cores) if slot and slot.cores else os.cpu_count(),
        "onednn_max_cpu_isa": os.environ.get(ONEDNN_ISA_ENV) if resolved == "CPU" else None,
        "launch_blocking": resolved == "CPU",
        "gpus": gpu_notes if resolved == "GPU" else [],
        "slot": str(slot) if slot and slot.target == resolved else None,
    }
