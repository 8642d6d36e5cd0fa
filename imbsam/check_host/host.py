"""What a host is: CPU, accelerator, driver, CUDA or CANN, MindSpore and the plugin it loaded.

Every reading is of hardware and software versions only; paths are given relative to the MindSpore
package, and `scrub` takes the user's home, name and the host name out of any text that is kept.
"""

import contextlib
import getpass
import glob
import io
import os
import platform
import re
import socket
import subprocess
from importlib import metadata

from imbsam.device.target import IMAGE_TARGET_ENV, gpu_support, query_gpus

# The CUDA 11 libraries the gpu image installs from PyPI (requirements-gpu.lock).
CUDA_PACKAGES = ("nvidia-cuda-runtime-cu11", "nvidia-cudnn-cu11", "nvidia-cublas-cu11", "nvidia-cufft-cu11",
                 "nvidia-curand-cu11", "nvidia-cusolver-cu11", "nvidia-cusparse-cu11", "nvidia-cuda-nvrtc-cu11")
ASCEND_DRIVER_VERSION = "/usr/local/Ascend/driver/version.info"
_ISA_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "avx2", "fma", "asimd", "sve")


def scrub(text):
    """text without the home directory, user name or host name in it."""
    for secret, placeholder in ((os.path.expanduser("~"), "~"), (_user(), "<user>"), (socket.gethostname(), "<host>")):
        if secret and len(secret) > 2 and secret not in ("/", "root"):
            text = text.replace(secret, placeholder)
    return text


def _user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def cpu():
    """Model, logical cores, the instruction-set extensions that decide kernel speed, and memory."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    memory = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as info:
        memory = round(int(info.readline().split()[1]) / 2**20, 1)
    return {"model": model, "cores": os.cpu_count(), "isa": [flag for flag in _ISA_FLAGS if flag in flags],
            "memory_gib": memory}


def parse_cuda_driver_version(nvidia_smi_output):
    """The newest CUDA the driver supports, from plain `nvidia-smi`'s header ("CUDA Version: 12.4")."""
    found = re.search(r"CUDA Version:\s*([0-9.]+)", nvidia_smi_output)
    return found.group(1) if found else None


def read_version_info(path):
    """The `Version=` line of an Ascend version.info file (driver, CANN compiler), as MindSpore reads it."""
    with contextlib.suppress(OSError), open(path) as info:
        for line in info:
            if line.startswith("Version="):
                return line.strip().split("=", 1)[1]
    return None


def _package_versions(names):
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def gpus():
    """The GPUs nvidia-smi lists, each with how this build runs on it; None without nvidia-smi."""
    found = query_gpus()
    if found is None:
        return None
    described = []
    for gpu in found:
        how, why = gpu_support(gpu.capability) if gpu.capability is not None else (None, "capability unknown")
        described.append({"index": gpu.index, "name": gpu.name, "driver": gpu.driver,
                          "compute_capability": None if gpu.capability is None else ".".join(map(str, gpu.capability)),
                          "runs": how or "no", "why": why})
    return described


def cuda():
    """The CUDA the driver supports and the CUDA libraries installed beside MindSpore."""
    driver_cuda = None
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        result = subprocess.run(("nvidia-smi",), capture_output=True, text=True, timeout=60, check=False)
        driver_cuda = parse_cuda_driver_version(result.stdout)
    return {"driver_supports": driver_cuda, "libraries": _package_versions(CUDA_PACKAGES),
            "cuda_home": bool(os.environ.get("CUDA_HOME"))}


def ascend():
    """The Ascend driver's and CANN's versions (CANN's set_env.sh sets ASCEND_HOME_PATH) and the NPU nodes."""
    home = os.environ.get("ASCEND_HOME_PATH")
    return {"driver": read_version_info(ASCEND_DRIVER_VERSION),
            "cann": read_version_info(os.path.join(home, "compiler", "version.info")) if home else None,
            "devices": len(glob.glob("/dev/davinci[0-9]*"))}


def loaded_plugins(maps_text, mindspore_dir):
    """MindSpore's device plugin libraries in a process's memory map (/proc/PID/maps), relative to the
    package: which plugin MindSpore actually loaded."""
    lib_dir = os.path.join(os.path.realpath(mindspore_dir), "lib")
    found = set()
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(os.path.join(lib_dir, "plugin", "")):
            found.add(os.path.relpath(fields[5], lib_dir))
    return sorted(found)


def mindspore_facts(ms, target):
    """After imbsam.device.setup: the plugin libraries loaded, the device's own description and
    mindspore.run_check()'s verdict, which it prints but does not return."""
    maps = ""
    with contextlib.suppress(OSError), open("/proc/self/maps") as memory_map:
        maps = memory_map.read()
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        ms.run_check()
    properties = None
    if target != "CPU":
        with contextlib.suppress(Exception):
            properties = str(ms.hal.get_device_properties(0, target))
    return {"plugins": loaded_plugins(maps, os.path.dirname(ms.__file__)),
            "device_properties": properties,
            "run_check": {"passed": "successfully" in output.getvalue(), "output": scrub(output.getvalue().strip())}}


def describe():
    """The readings that need no MindSpore."""
    return {"cpu": cpu(), "os": platform.platform(), "python": platform.python_version(),
            "image": os.environ.get(IMAGE_TARGET_ENV) or None,
            "mindspore": _package_versions(("mindspore",)).get("mindspore"),
            "gpus": gpus(), "cuda": cuda() if glob.glob("/dev/nvidia[0-9]*") else None,
            "ascend": ascend() if glob.glob("/dev/davinci[0-9]*") or os.environ.get("ASCEND_HOME_PATH") else None}
