"""Device selection on a machine with a CPU only (what CI has)."""

import os
import subprocess
import sys

import mindspore as ms
import pytest

from imbsam.device import IMAGE_TARGET_ENV, resolve_mode, resolve_target
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
    code = "from imbsam.device import setup; print(setup('auto')['target'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "CPU"
    assert "Load dynamic library" not in result.stderr and "not available" not in result.stderr, result.stderr
