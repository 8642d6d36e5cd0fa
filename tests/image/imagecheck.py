"""Containers of a built image, through buildah, for the checks in this folder (conftest.py says how to run them)."""

import os
import re
import shlex
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Scripts that run inside the image; containers see them at /checks.
INSIDE = Path(__file__).resolve().parent / "inside"
BUILDAH = ["buildah", *shlex.split(os.environ.get("IMBSAM_BUILDAH_STORAGE", ""))]
USER = os.environ.get("IMBSAM_IMAGE_USER", "1000:1000")
ROOT = "0:0"


def pins(lock):
    """{package: version} of a requirements lock in the repository."""
    pinned = (line.split(";")[0].strip() for line in (REPO / lock).read_text().splitlines())
    return dict(line.split("==") for line in pinned if "==" in line and not line.startswith("#"))


class Container:
    """A working container of an image: each command starts through the image's entrypoint, as `docker run` does."""

    def __init__(self, name, entrypoint, user, volumes, workdir):
        self.name, self.entrypoint, self.user, self.volumes, self.workdir = name, entrypoint, user, volumes, workdir

    def run(self, *command, user=None, check=True):
        """The finished command (text output); with check, a non-zero exit fails the test with its output."""
        args = [*BUILDAH, "run", "--isolation", "chroot", "--user", user or self.user]
        for volume in self.volumes:
            args += ["--volume", volume]
        if self.workdir:
            args += ["--workingdir", self.workdir]
        result = subprocess.run([*args, self.name, "--", *self.entrypoint, *command], capture_output=True,
                                text=True, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"{shlex.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def read(self, path):
        """A file's text, or None where it does not exist."""
        result = self.run("cat", path, check=False)
        return result.stdout if result.returncode == 0 else None


class Image:
    def __init__(self, name, config):
        self.name = name
        self.env = dict(entry.split("=", 1) for entry in config.get("Env") or [])
        self.target = self.env.get("IMBSAM_IMAGE_TARGET")
        self.entrypoint = config.get("Entrypoint") or []

    @contextmanager
    def container(self, user=USER, volumes=(), workdir=None):
        """A new working container, removed afterwards whatever happens."""
        name = subprocess.run([*BUILDAH, "from", "--pull-never", self.name], capture_output=True, text=True,
                              check=True).stdout.strip()
        try:
            yield Container(name, self.entrypoint, user, volumes, workdir)
        finally:
            subprocess.run([*BUILDAH, "rm", name], capture_output=True, check=False)


def init_workspace(container):
    """Make the mounted workspace a git repository with one commit, and write a synthetic CIFAR-100 archive in the
    container: (its path, its md5), for data.url and data.md5."""
    container.run("git", "init", "-q")
    container.run("git", "add", "-A")
    container.run("git", "commit", "-qm", "the workspace as the image checks found it")
    archive = "/tmp/synthetic-cifar-100-python.tar.gz"
    md5 = container.run("python", "-m", "imbsam.synthetic", archive, "--train-per-class", "20",
                        "--test-per-class", "5").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", md5), f"imbsam.synthetic printed {md5!r}, not an md5"
    return archive, md5
