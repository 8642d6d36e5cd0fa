"""Device selection on a machine with a CPU only (what CI has)."""

import glob
import os
import subprocess
import sys

import mindspore as ms
import pytest

from imbsam.device import claims
from imbsam.device import target as device_target
from imbsam.device.target import (
    IMAGE_TARGET_ENV,
    check_gpus,
    driver_capabilities,
    fill_capabilities,
    parse_nvidia_smi,
    preflight,
    resolve_mode,
    resolve_target,
)
from imbsam.errors import InputError
from imbsam.kernels.environment import restore_user_environment


def test_auto_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.delenv(IMAGE_TARGET_ENV, raising=False)
    assert resolve_target("auto", ms) == "CPU"
    assert resolve_target("CPU", ms) == "CPU"


@pytest.mark.parametrize("target, hint", [("GPU", "--gpus all"), ("Ascend", "/dev/davinci")])
def test_a_missing_accelerator_is_a_clear_error(target, hint):
    with pytest.raises(InputError, match=hint):
        resolve_target(target, ms)


@pytest.mark.parametrize("image, hint", [("gpu", "--gpus all"), ("ascend", "davinci_manager")])
def test_an_accelerator_image_without_its_device_refuses_to_fall_back(monkeypatch, image, hint):
    monkeypatch.setenv(IMAGE_TARGET_ENV, image)
    with pytest.raises(InputError, match=hint):
        resolve_target("auto", ms)


def test_unknown_target_and_mode_are_rejected():
    with pytest.raises(InputError, match="device.target"):
        resolve_target("TPU", ms)
    with pytest.raises(InputError, match="train.mode"):
        resolve_mode("jit")


def test_auto_mode_is_graph_on_every_device():
    assert resolve_mode("auto") == "graph"


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_an_explicit_mode_overrides_auto(mode):
    assert resolve_mode(mode) == mode


def _imported_in_child(env):
    """(ONEDNN_MAX_CPU_ISA, the user's ONEDNN_MAX_CPU_ISA, the user's OMP_WAIT_POLICY) as a fresh Python
    process sees them after importing imbsam, with environment `env`."""
    code = ("import imbsam.kernels.environment as d, os; u = d.USER_ENVIRONMENT; "
            "print(os.environ['ONEDNN_MAX_CPU_ISA'], u['ONEDNN_MAX_CPU_ISA'], u['OMP_WAIT_POLICY'])")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.parametrize("preset, expected", [(None, "AVX2"), ("AVX512_CORE", "AVX512_CORE")])
def test_importing_imbsam_caps_onednn_unless_the_user_chose_and_remembers_the_users_choice(preset, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "IMBSAM_SET_ENVIRONMENT")}
    if preset:
        env["ONEDNN_MAX_CPU_ISA"] = preset
    assert _imported_in_child(env)[:2] == [expected, str(preset)]


@pytest.mark.parametrize("child_sets, expected", [(None, None), ("AVX512_CORE", "AVX512_CORE")])
def test_a_child_process_does_not_take_imbsams_defaults_for_the_users(child_sets, expected):
    env = dict(os.environ)  # this process imported imbsam: its defaults and their marker are in here
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and "ONEDNN_MAX_CPU_ISA=AVX2" in env["IMBSAM_SET_ENVIRONMENT"]
    if child_sets:
        env["ONEDNN_MAX_CPU_ISA"] = child_sets
    assert _imported_in_child(env)[1:] == [str(expected), "None"]


@pytest.mark.parametrize("users", [None, "AVX512_CORE"])
def test_another_library_gets_the_users_environment_back(monkeypatch, users):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    restore_user_environment({"ONEDNN_MAX_CPU_ISA": users, "OMP_WAIT_POLICY": None})
    assert os.environ.get("ONEDNN_MAX_CPU_ISA") == users
    assert "OMP_WAIT_POLICY" not in os.environ


def test_choosing_the_device_on_a_cpu_host_prints_no_plugin_noise():
    """MindSpore logs every accelerator plugin it cannot load when asked whether a device is available; on
    a host without the device node nothing asks."""
    code = "from imbsam.device.target import setup; print(setup('auto')['target'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "CPU"
    assert "Load dynamic library" not in result.stderr and "not available" not in result.stderr, result.stderr


# nvidia-smi --query-gpu=index,name,compute_cap,driver_version --format=csv,noheader, as GPUs of each
# generation answer it (names and driver branches as those GPUs report them); a driver before R510 knows no
# compute_cap, and query_gpus asks it for index,name,driver_version instead.
RECORDED = {
    "kepler": "0, Tesla K80, 470.256.02\n1, Tesla K80, 470.256.02",
    "maxwell": "0, Tesla M40 24GB, 5.2, 535.183.01",
    "pascal": "0, Tesla P100-PCIE-16GB, 6.0, 535.183.01",
    "volta": "0, Tesla V100-SXM2-32GB, 7.0, 550.54.15\n1, Tesla V100-SXM2-32GB, 7.0, 550.54.15",
    "turing-old-driver": "0, Tesla T4, 470.199.02",
    "ampere": "0, NVIDIA A100-SXM4-80GB, 8.0, 550.90.07",
    "ada": "0, NVIDIA GeForce RTX 4090, 8.9, 560.35.03",
    "hopper": "0, NVIDIA H100 80GB HBM3, 9.0, 550.127.05",
    "blackwell": "0, NVIDIA B200, 10.0, 570.124.06",
    "blackwell-consumer": "0, NVIDIA GeForce RTX 5090, 12.0, 575.57.08",
    "too-old-driver": "0, Tesla V100-PCIE-16GB, 418.67",
}


@pytest.mark.parametrize("recorded", ["pascal", "volta", "ampere", "ada"])
def test_gpus_this_build_runs_natively_pass_quietly(recorded, recwarn):
    notes = check_gpus(parse_nvidia_smi(RECORDED[recorded]))
    assert notes and all("runs native" in note for note in notes)
    assert not recwarn.list


def test_a_hopper_gpu_runs_through_ptx_jit_and_says_so():
    with pytest.warns(UserWarning, match=r"H100 80GB HBM3 \(compute capability 9.0, driver 550.127.05\): runs "
                                         r"through PTX JIT"):
        check_gpus(parse_nvidia_smi(RECORDED["hopper"]))


# What driver_capabilities reads from libcuda.so.1 on those GPUs: cuDeviceGetName and the capability attributes.
DRIVER_LIBRARY = {"kepler": {"Tesla K80": (3, 7)}, "turing-old-driver": {"Tesla T4": (7, 5)}}


def _recorded(name):
    return fill_capabilities(parse_nvidia_smi(RECORDED[name]), DRIVER_LIBRARY.get(name, {}))


@pytest.mark.parametrize(("recorded", "why"), [
    ("kepler", "start at compute capability 6.0"),
    ("maxwell", "start at compute capability 6.0"),
    ("blackwell", "no Blackwell code"),
    ("blackwell-consumer", "no Blackwell code"),
])
def test_a_gpu_this_build_cannot_run_stops_naming_it_and_what_to_use(recorded, why):
    gpu = _recorded(recorded)[0]
    with pytest.raises(InputError) as error:
        check_gpus([gpu])
    message = str(error.value)
    assert message.startswith(f"GPU 0, {gpu.name} (compute capability {'.'.join(map(str, gpu.capability))}, ")
    assert why in message and "Pascal to Hopper" in message and "device.target=CPU" in message


def test_old_drivers_warn_or_stop():
    with pytest.warns(UserWarning, match="older than CUDA 11.8's 520.61.05"):
        check_gpus(_recorded("turing-old-driver"))
    with pytest.raises(InputError, match="CUDA 11 needs driver 450.80.02 or newer"):
        check_gpus(parse_nvidia_smi(RECORDED["too-old-driver"]))
    # Before R510 nvidia-smi knows no compute_cap: the capability is unknown, the driver says enough.
    (gpu,) = parse_nvidia_smi("0, Tesla V100-SXM2-16GB, 470.57.02")
    assert gpu.capability is None and gpu.driver_version == (470, 57, 2)
    with pytest.warns(UserWarning, match="neither it nor its library reported the compute capability"):
        check_gpus([gpu])


@pytest.mark.skipif(bool(glob.glob("/dev/nvidia[0-9]*")), reason="a GPU host: its answers are its own")
def test_without_a_gpu_the_driver_library_reports_nothing():
    assert driver_capabilities() == {}


def _fake_host(monkeypatch, tmp_path, nodes=(), smi=None):
    """A host with these device nodes (files named like them) and an nvidia-smi that prints `smi`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        (tmp_path / node).touch()
    monkeypatch.setattr(device_target, "DEVICE_NODES", {"GPU": str(tmp_path / "nvidia[0-9]*"),
                                                         "Ascend": str(tmp_path / "davinci[0-9]*")})
    if smi is not None:
        script = tmp_path / "bin" / "nvidia-smi"
        script.parent.mkdir()
        script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{smi}\nEOF\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")


@pytest.mark.parametrize(("image", "hint"), [("gpu", "--gpus all"), ("ascend", "davinci_manager")])
def test_preflight_stops_an_accelerator_image_without_its_device(monkeypatch, tmp_path, image, hint):
    _fake_host(monkeypatch, tmp_path)
    monkeypatch.setenv(IMAGE_TARGET_ENV, image)
    with pytest.raises(InputError, match=hint) as error:
        preflight("auto")
    assert "device.target=CPU" in str(error.value)
    assert preflight("CPU") == []


def test_preflight_reads_the_gpus_nvidia_smi_lists(monkeypatch, tmp_path):
    _fake_host(monkeypatch, tmp_path, nodes=["nvidia0"], smi=RECORDED["blackwell"])
    monkeypatch.setenv(IMAGE_TARGET_ENV, "gpu")
    with pytest.raises(InputError, match="NVIDIA B200"):
        preflight("auto")
    _fake_host(monkeypatch, tmp_path / "v", nodes=["nvidia0", "nvidia1"], smi=RECORDED["volta"])
    notes = preflight("GPU")
    assert len(notes) == 2 and notes[1].startswith("GPU 1, Tesla V100-SXM2-32GB")


# ---- claims: which device a run takes ----

CLAIMANT = """
import sys, time
from imbsam.device import claims
slot = claims.claim("CPU", say=lambda line: print(line, flush=True), poll_seconds=0.1)
print("claimed", slot.index, slot.cores, flush=True)
time.sleep(600)
"""


def claimant(tmp_path, slots=2):
    env = {**os.environ, claims.CPU_SLOTS_ENV: str(slots), claims.LOCK_DIR_ENV: str(tmp_path)}
    return subprocess.Popen([sys.executable, "-c", CLAIMANT], env=env, stdout=subprocess.PIPE, text=True)


def test_runs_claim_distinct_slots_wait_for_a_free_one_and_get_a_killed_ones(tmp_path):
    started = []
    try:
        for _ in range(3):
            started.append(claimant(tmp_path))
        lines = [process.stdout.readline() for process in started]
        claimed = sorted(line.split()[1] for line in lines if line.startswith("claimed"))
        assert claimed == ["0", "1"], lines
        waiting, said = next((process, line) for process, line in zip(started, lines) if not line.startswith("claimed"))
        assert said.startswith("waiting for a free CPU: all of 0, 1 are held by other runs"), said
        holder = next(process for process, line in zip(started, lines) if line.split()[:2] == ["claimed", "0"])
        holder.kill()  # SIGKILL: the kernel releases its lock
        assert waiting.stdout.readline().split()[:2] == ["claimed", "0"]
    finally:
        for process in started:
            process.kill()
            process.wait()


def test_cpu_slots_split_the_cores():
    cores = sorted(os.sched_getaffinity(0))
    shares = [claims._cores_of(slot, 2) for slot in range(2)]
    assert sorted(sum(shares, ())) == cores and all(shares)
    assert claims._cores_of(3, len(cores) + 2) == (cores[3 % len(cores)],)  # more slots than cores: one each


def test_the_pool_is_the_listed_or_the_visible_devices(monkeypatch):
    monkeypatch.setattr(claims.glob, "glob", lambda pattern: [f"/dev/nvidia{i}" for i in range(4)])
    monkeypatch.delenv(claims.DEVICES_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert claims.device_pool("GPU") == (0, 1, 2, 3)
    monkeypatch.setenv(claims.DEVICES_ENV, "0,3")
    assert claims.device_pool("GPU") == (0, 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,6")  # a scheduler's two GPUs, numbered 0 and 1 by MindSpore
    with pytest.raises(InputError, match=r"IMBSAM_DEVICES=0,3 names device 3, but this host shows 2 GPU"):
        claims.device_pool("GPU")
    for bad in ("0,0", "a", "1;2"):
        monkeypatch.setenv(claims.DEVICES_ENV, bad)
        with pytest.raises(InputError, match="must list distinct device ids"):
            claims.device_pool("GPU")
    monkeypatch.setenv(claims.CPU_SLOTS_ENV, "0")
    with pytest.raises(InputError, match="IMBSAM_CPU_SLOTS='0' must be a whole number >= 1"):
        claims.device_pool("CPU")
