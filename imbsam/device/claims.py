"""Which of the host's devices a run takes when several run side by side (docs/scale.md): an exclusive lock on a
free device of the pool, or on the CPU one of N slots and its cores.

Changes where a run trains, never what it computes: no stage depends on this file.
"""

import fcntl
import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path

from imbsam.device.target import DEVICE_NODES, missing_device
from imbsam.errors import InputError

# Which devices runs may take, how many runs share the CPU, where the locks live. None of them is a DVC param:
# which device a run trains on changes no stage's hash.
DEVICES_ENV = "IMBSAM_DEVICES"  # e.g. 0,3,5: MindSpore's device ids; default every visible GPU or NPU
CPU_SLOTS_ENV = "IMBSAM_CPU_SLOTS"  # N: runs share the CPU N at a time, each on its own 1/N of the cores
LOCK_DIR_ENV = "IMBSAM_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/imbsam-locks"
_VISIBLE_ENV = {"GPU": "CUDA_VISIBLE_DEVICES", "Ascend": "ASCEND_RT_VISIBLE_DEVICES"}
_HELD = []  # the open lock files of this process's claims: closed, and so released, only when it ends


@dataclass(frozen=True)
class Slot:
    """A claimed device: an accelerator's device id, or on the CPU one of N slots and its cores."""

    target: str
    index: int
    pool: tuple  # the device ids or slot numbers claimed from
    cores: tuple = ()  # CPU only

    def __str__(self):
        if self.target == "CPU":
            cores = ",".join(map(str, self.cores))
            return f"CPU slot {self.index + 1}/{len(self.pool)} (cores {cores})"
        return f"{self.target} {self.index}"


def claim_target(target):
    """The kind of device `target` trains on, read off the device nodes, without loading MindSpore."""
    if target != "auto":
        return target
    for candidate in ("Ascend", "GPU"):
        if glob.glob(DEVICE_NODES[candidate]):
            return candidate
    return "CPU"


def device_pool(target):
    """The device ids (GPU, Ascend) or slot numbers (CPU) runs on `target` claim from: IMBSAM_DEVICES or every
    visible device; IMBSAM_CPU_SLOTS slots on the CPU (default 1)."""
    if target == "CPU":
        text = os.environ.get(CPU_SLOTS_ENV, "1")
        if not text.strip().isdigit() or int(text) < 1:
            raise InputError(f"{CPU_SLOTS_ENV}={text!r} must be a whole number >= 1: how many runs share the CPU")
        return tuple(range(int(text)))
    # A scheduler (Slurm's gres) or the user may narrow the devices a process sees; MindSpore then numbers the
    # visible ones from 0, while every device node may still be there.
    narrowed = os.environ.get(_VISIBLE_ENV[target], "").strip()
    visible = len(narrowed.split(",")) if narrowed else len(glob.glob(DEVICE_NODES[target]))
    text = os.environ.get(DEVICES_ENV)
    if not text:
        return tuple(range(visible))
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts) or len(set(parts)) != len(parts):
        raise InputError(f"{DEVICES_ENV}={text!r} must list distinct device ids, e.g. 0,3,5")
    ids = tuple(int(part) for part in parts)
    if max(ids) >= visible:
        raise InputError(f"{DEVICES_ENV}={text} names device {max(ids)}, but this host shows {visible} {target} "
                         f"device(s) (ids 0-{visible - 1}): list ids below {visible}")
    return ids


def _lock_dir():
    folder = Path(os.environ.get(LOCK_DIR_ENV, DEFAULT_LOCK_DIR))
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        # Shared by every user's runs: anyone may add a lock file, none may remove another's (sticky).
        folder.chmod(0o1777)
    return folder


def _cores_of(slot, slots):
    """Slot `slot` of `slots`: its share of the cores this process may run on (a core each at least)."""
    cores = sorted(os.sched_getaffinity(0))
    if slots > len(cores):
        return (cores[slot % len(cores)],)
    share = len(cores) / slots
    return tuple(cores[round(slot * share):round((slot + 1) * share)])


def claim(target, say=print, poll_seconds=2.0):
    """Hold a free device of `target`'s pool until this process ends: an exclusive flock on its lock file in
    IMBSAM_LOCK_DIR, which the kernel releases however the process ends (kill -9 included). Waits, saying so
    once, while every device of the pool is held by another run."""
    pool = device_pool(target)
    if not pool:
        raise missing_device(target)
    folder = _lock_dir()
    waiting = False
    while True:
        for index in pool:
            path = folder / f"{target.lower()}-{index}.lock"
            # Read-only suffices for flock, and lets a user take a lock file another user created.
            descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            _HELD.append(descriptor)
            return Slot(target, index, pool, _cores_of(index, len(pool)) if target == "CPU" else ())
        if not waiting:
            say(f"waiting for a free {target}: all of {', '.join(map(str, pool))} are held by other runs "
                f"(lock files in {folder})")
            waiting = True
        time.sleep(poll_seconds)


def claim_for(target):
    """Claim what a run on `target` needs before MindSpore loads (see claim), or None: an accelerator always; the
    CPU only when runs share it (IMBSAM_CPU_SLOTS, which imbsam.matrix sets): otherwise two runs on one
    host (two clones, a DVC queue) train side by side on all cores. A CPU slot's cores become this process's."""
    kind = claim_target(target)
    slot = claim(kind) if kind != "CPU" or CPU_SLOTS_ENV in os.environ else None
    if slot and slot.cores:
        os.sched_setaffinity(0, slot.cores)
        # OpenMP (imbsam's CPU kernels) sizes its team when it loads, from this unless the user set it.
        os.environ.setdefault("OMP_NUM_THREADS", str(len(slot.cores)))
    return slot
