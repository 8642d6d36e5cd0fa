"""Checks of a built image, run in it with buildah (no Docker engine needed, but root).

scripts/build_image_smoke.sh builds an image and runs these against it; by hand, as root:
    IMBSAM_IMAGE=localhost/imbsam:cpu IMBSAM_BUILDAH_STORAGE="--storage-driver overlay \
      --root /var/lib/containers/storage-overlay --runroot /run/containers/storage-overlay" \
      python -m pytest tests/image
Environment:
    IMBSAM_IMAGE               the image to check; unset, every test here is skipped
    IMBSAM_BUILDAH_STORAGE     buildah's storage options for it (default: buildah's own storage)
    IMBSAM_IMAGE_USER          uid:gid the checks run as, like `docker run --user` (default 1000:1000)
    IMBSAM_IMAGE_KEEP_WORKDIR  1 keeps the workspaces (/var/tmp/imbsam-image-*) for inspection
The image's own IMBSAM_IMAGE_TARGET says which checks apply: test_image.py's to both, the others to one target.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from imagecheck import BUILDAH, REPO, USER, Image

NO_IMAGE = ("no image to check: IMBSAM_IMAGE names a built image (scripts/build_image_smoke.sh builds one and runs "
            "these against it)")


class _WithoutAnImage(pytest.Module):
    def collect(self):
        pytest.skip(NO_IMAGE)


def pytest_pycollect_makemodule(module_path, parent):
    """Without an image, each module here is skipped whole, for one reason, before any fixture runs."""
    if not os.environ.get("IMBSAM_IMAGE"):
        return _WithoutAnImage.from_parent(parent, path=module_path)
    return None


@pytest.fixture(scope="session")
def image():
    name = os.environ["IMBSAM_IMAGE"]
    inspected = subprocess.run([*BUILDAH, "inspect", "--type", "image", name], capture_output=True, text=True,
                               check=False)
    if inspected.returncode != 0:
        pytest.fail(f"IMBSAM_IMAGE={name} is not an image in this storage ({inspected.stderr.strip()}): build it, or "
                    "set IMBSAM_BUILDAH_STORAGE to the storage that holds it")
    return Image(name, json.loads(inspected.stdout)["OCIv1"]["config"])


def _of_target(image, target):
    if image.target != target:
        pytest.skip(f"checks the {target} image; {image.name} is the {image.target} image")
    return image


@pytest.fixture(scope="session")
def cpu_image(image):
    return _of_target(image, "cpu")


@pytest.fixture(scope="session")
def gpu_image(image):
    return _of_target(image, "gpu")


@pytest.fixture(scope="module")
def workspace():
    """(workspace, cache): a fresh clone's files and an empty folder for DVC's cache, both owned by USER."""
    root = Path(tempfile.mkdtemp(prefix="imbsam-image-", dir="/var/tmp"))
    workspace, cache = root / "workspace", root / "cache"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() or source.is_symlink():
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, workspace / name, follow_symlinks=False)
    cache.mkdir()
    uid, gid = (int(part) for part in USER.split(":"))
    for path in (root, *root.rglob("*")):
        os.lchown(path, uid, gid)
    yield workspace, cache
    if os.environ.get("IMBSAM_IMAGE_KEEP_WORKDIR") != "1":
        shutil.rmtree(root)
