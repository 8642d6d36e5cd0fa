"""`python -m imbsam.check_host`'s checks that need no run of its sections: bad arguments and a device the host
does not have stop at once, the readings only a GPU or Ascend host gives (on recorded outputs), the README's
command. The sections run for real in tests/test_check_host.py."""

import json
import subprocess
import sys
from pathlib import Path

from workspace import REPO, run, show

from imbsam.check_host import host


def test_a_device_the_host_does_not_have_fails_at_once_with_the_fix(tmp_path):
    result = run([sys.executable, "-m", "imbsam.check_host", "--device", "GPU", "--out", str(tmp_path)], REPO)
    assert result.returncode == 1 and result.elapsed < 60, show(result)
    assert "FAIL: the host section stopped: device.target=GPU but no GPU is available: start the container with " \
           "`--gpus all`" in result.stdout
    assert "**FAIL: the host section stopped: device.target=GPU" in (tmp_path / "host-check.md").read_text()
    assert json.loads((tmp_path / "host-check.json").read_text())["passed"] is False


def test_bad_arguments_are_one_line_each():
    for args, named in ((["--sections", "host,nope"], "choose from host, correctness, speed"),
                        (["--archs", "resnet50"], "choose from resnet34, resnet32"), (["--steps", "0"], "0")):
        result = subprocess.run([sys.executable, "-m", "imbsam.check_host", *args], cwd=REPO, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 2 and named in result.stderr.splitlines()[-1], result.stderr


# ---- readings a GPU or Ascend host gives, recorded ----

NVIDIA_SMI_HEADER = """\
Tue Nov 24 09:12:44 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.127.05             Driver Version: 550.127.05     CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""


def test_the_driver_cuda_version_is_read_off_nvidia_smi():
    assert host.parse_cuda_driver_version(NVIDIA_SMI_HEADER) == "12.4"
    assert host.parse_cuda_driver_version("NVIDIA-SMI has failed because it couldn't communicate") is None


def test_ascend_versions_are_read_as_mindspore_reads_them(tmp_path):
    (tmp_path / "driver.info").write_text("Version=24.1.rc3\nascendhal_version=7.35.23\n")
    (tmp_path / "compiler.info").write_text("package_name=Ascend-cann-toolkit\nVersion=9.1.0\n")
    assert host.read_version_info(tmp_path / "driver.info") == "24.1.rc3"
    assert host.read_version_info(tmp_path / "compiler.info") == "9.1.0"
    assert host.read_version_info(tmp_path / "missing.info") is None


def test_the_loaded_plugin_is_read_off_the_memory_map(tmp_path):
    package = tmp_path / "site-packages" / "mindspore"
    plugin = package / "lib" / "plugin"
    maps = "\n".join([
        f"7f01a000-7f01b000 r-xp 00000000 fd:01 101 {plugin}/libmindspore_gpu.so.11.6",
        f"7f01b000-7f01c000 r--p 00001000 fd:01 101 {plugin}/libmindspore_gpu.so.11.6",
        f"7f02a000-7f02b000 r-xp 00000000 fd:01 102 {plugin}/gpu11.6/libnccl.so.2",
        f"7f03a000-7f03b000 r-xp 00000000 fd:01 103 {package}/lib/libmindspore_core.so",
        "7f04a000-7f04b000 rw-p 00000000 00:00 0 ",
        "7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]",
    ])
    assert host.loaded_plugins(maps, str(package)) == ["plugin/gpu11.6/libnccl.so.2", "plugin/libmindspore_gpu.so.11.6"]


def test_the_readme_names_the_command():
    assert "python -m imbsam.check_host" in (REPO / "README.md").read_text()
    assert Path(REPO / ".gitignore").read_text().count("/host-check/") == 1
