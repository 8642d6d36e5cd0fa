"""What every image must have, checked in it as a --user uid with no account in the image: the entrypoint's
environment, the interpreter, git, DVC and MindSpore at their pins, and no build leftovers."""

import re

import pytest
from imagecheck import ROOT, USER, pins


@pytest.fixture(scope="module")
def container(image):
    with image.container() as container:
        yield container


def test_the_entrypoint_gives_a_user_without_an_account_a_working_environment(image, container):
    env = dict(entry.split("=", 1) for entry in container.run("env", "-0").stdout.split("\0") if entry)
    assert image.target in ("cpu", "gpu") and env["IMBSAM_IMAGE_TARGET"] == image.target
    assert [container.run("id", flag).stdout.strip() for flag in ("-u", "-g")] == USER.split(":")
    assert env["HOME"] == "/tmp" and env["USER"] and env["LOGNAME"] == env["USER"]
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert {name: env.get(name) for name in ("IMBSAM_DVC_CACHE_DIR", "DVC_NO_ANALYTICS", "MPLBACKEND",
                                             "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK",
                                             "LANG")} == {
        "IMBSAM_DVC_CACHE_DIR": "/cache", "DVC_NO_ANALYTICS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1",
        "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "LANG": "C.UTF-8"}


def test_python_git_and_dvc_run(container):
    version = re.fullmatch(r"Python 3\.11\.(\d+)\n", container.run("python", "--version").stdout)
    assert version and int(version.group(1)) >= 4, "imbsam.data needs tarfile's extraction filters (3.11.4)"
    assert container.run("git", "--version").stdout.startswith("git version ")
    assert container.run("dvc", "--version").stdout.strip() == pins("requirements.lock")["dvc"]


def test_mindspore_run_check_passes_on_the_cpu(container):
    # run_check() reports a failure in its output, not in its exit status.
    out = container.run("python", "-c", "import mindspore as ms; ms.set_device('CPU'); ms.run_check()").stdout
    assert f"MindSpore version:  {pins('requirements.lock')['mindspore']}\n" in out
    assert "MindSpore has been installed on platform [CPU] successfully!" in out, out


def test_the_build_leaves_no_pip_cache_and_no_wheels(container):
    assert ".cache" not in container.run("ls", "-A", "/root", user=ROOT).stdout.split()
    assert container.run("find", "/opt/venv", "-name", "*.whl", user=ROOT).stdout == ""
