"""The gpu image, checked where there is no GPU: everything short of running a kernel. Its CUDA libraries resolve
and MindSpore finds them, and started without a GPU the pipeline and the host check stop naming --gpus all."""

import json
import re

import pytest
from imagecheck import INSIDE, init_workspace, pins


@pytest.fixture(scope="module")
def container(gpu_image):
    with gpu_image.container(volumes=[f"{INSIDE}:/checks:ro"]) as container:
        yield container


@pytest.fixture(scope="module")
def plugin(container):
    return json.loads(container.run("python", "/checks/plugin_libraries.py").stdout)


def test_every_library_of_the_gpu_plugin_resolves_but_the_drivers(plugin):
    folders = {library.split("/")[0] for library in plugin["unresolved"]}
    assert {"libmindspore_gpu.so.11.6", "gpu", "gpu11.6"} <= folders, sorted(plugin["unresolved"])
    missing = {soname for sonames in plugin["unresolved"].values() for soname in sonames}
    assert missing == {"libcuda.so.1"}, "only the driver (libcuda.so.1, from the host) may be missing"


def test_mindspore_imports_without_trying_the_gpu_plugin(container):
    # The entrypoint unsets CUDA_HOME without a GPU: the plugin loader then does not log that it cannot load.
    imported = container.run("python", "-c", "import mindspore; print(mindspore.__version__)")
    assert imported.stdout.strip() == pins("requirements.lock")["mindspore"]
    assert "libmindspore_gpu" not in imported.stderr, imported.stderr


def test_mindspores_gpu_environment_check_finds_cuda_11_6_and_the_plugins_libraries(container, plugin):
    checked = container.run("python", "/checks/gpu_env_check.py", plugin["plugin"])
    found = json.loads(checked.stdout)
    assert found["cuda"].startswith("11.6."), found
    assert f"{plugin['plugin']}/gpu11.6" in found["ld_library_path"], found
    assert not re.search("WARNING|ERROR|Cannot find cuda", checked.stderr), checked.stderr


def test_the_nvcc_stand_in_answers_the_version_query_and_nothing_else(container):
    runtime = pins("requirements-gpu.lock")["nvidia-cuda-runtime-cu11"]
    answer = container.run("/opt/cuda/bin/nvcc", "--version").stdout
    assert f"Cuda compilation tools, release {runtime.rsplit('.', 1)[0]}, V{runtime}\n" in answer, answer
    refused = container.run("/opt/cuda/bin/nvcc", "-c", "kernel.cu", check=False)
    assert refused.returncode == 1 and "this image has no CUDA compiler" in refused.stderr


def test_with_cuda_home_the_plugin_loader_picks_the_11_6_build_and_stops_only_at_the_driver(container):
    # As with a GPU, where the entrypoint keeps CUDA_HOME: the loader picks its build off nvcc's answer.
    loaded = container.run("env", "CUDA_HOME=/opt/cuda", "python", "-c", "import mindspore")
    failures = [line for line in (loaded.stdout + loaded.stderr).splitlines() if " failed" in line]
    assert failures and all("libmindspore_gpu.so.11.6 failed. libcuda.so.1: cannot open shared object file" in line
                            for line in failures), failures


@pytest.fixture(scope="module")
def without_a_gpu(gpu_image, workspace):
    """The pipeline and the host check started in the gpu image without a GPU, as a --user uid."""
    workspace, _ = workspace
    archive = workspace / "data" / "archive" / "cifar-100-python.tar.gz"
    with gpu_image.container(volumes=[f"{workspace}:/workspace"], workdir="/workspace") as container:
        url, md5 = init_workspace(container)
        data = ["-S", f"data.url={url}", "-S", f"data.md5={md5}"]
        repro = container.run("dvc", "exp", "run", *data, check=False)
        downloaded_first = archive.exists()
        on_the_cpu = container.run("dvc", "exp", "run", "download", *data, "-S", "device.target=CPU", check=False)
        host_check = container.run("python", "-m", "imbsam.check_host", "--out", "/tmp/host-check", check=False)
        bundle = container.read("/tmp/host-check/host-check.json")
    return {"repro": repro, "downloaded_first": downloaded_first, "on_the_cpu": on_the_cpu,
            "archive": archive.stat().st_size if archive.exists() else 0, "host_check": host_check,
            "bundle": json.loads(bundle) if bundle else None}


def test_dvc_repro_without_a_gpu_stops_before_the_download_naming_gpus_all(without_a_gpu):
    repro = without_a_gpu["repro"]
    assert repro.returncode != 0 and "--gpus all" in repro.stdout + repro.stderr, repro.stdout + repro.stderr
    assert not without_a_gpu["downloaded_first"]


def test_device_target_cpu_downloads_without_a_gpu(without_a_gpu):
    on_the_cpu = without_a_gpu["on_the_cpu"]
    assert on_the_cpu.returncode == 0, on_the_cpu.stdout + on_the_cpu.stderr
    assert without_a_gpu["archive"] > 0


def test_the_host_check_without_a_gpu_fails_naming_gpus_all(without_a_gpu):
    host_check, bundle = without_a_gpu["host_check"], without_a_gpu["bundle"]
    assert host_check.returncode == 1, host_check.stdout + host_check.stderr
    assert re.search(r"^FAIL: the host section stopped: .*--gpus all", host_check.stdout, re.MULTILINE), (
        host_check.stdout)
    assert bundle["passed"] is False and bundle["error"]["section"] == "host"
    assert "--gpus all" in bundle["error"]["message"]
