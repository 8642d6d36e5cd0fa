"""The package installs (pyproject.toml's build system): its wheel holds the library, subpackages and the C sources
its kernels compile, works from any folder, and an installed copy never shadows the imbsam of the workspace a
stage runs in."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from workspace import REPO, ok, run, show

from imbsam import registry

# What the build reads; copied out, so that building leaves no build/ or egg-info in the checkout.
BUILD_INPUTS = ("pyproject.toml", "requirements.in")
PROBE = """import json, pathlib, imbsam, imbsam.kernels, imbsam.params, imbsam.registry
print(json.dumps({"file": imbsam.__file__,
                  "names": {kind: imbsam.registry.names(kind) for kind in imbsam.registry.KINDS},
                  "sources": sorted(p.name for p in pathlib.Path(imbsam.kernels.__file__).parent.glob("*.c"))}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel of this checkout, installed into a folder of its own (not this environment)."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "imbsam", source / "imbsam", ignore=shutil.ignore_patterns("__pycache__"))
    ok(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "wheels"), str(source)], base))
    wheel, = (base / "wheels").glob("*.whl")
    ok(run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(base / "site"), str(wheel)],
           base))
    return base / "site"


def test_the_wheel_holds_the_library_and_works_from_any_folder(installed, tmp_path):
    assert {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")} == {"imbsam"}
    result = ok(run([sys.executable, "-c", PROBE], tmp_path, env={"PYTHONPATH": str(installed)}))
    found = json.loads(result.stdout)
    assert Path(found["file"]).is_relative_to(installed), found["file"]
    assert found["names"] == {kind: list(registry.names(kind)) for kind in registry.KINDS}
    assert found["sources"] == sorted(p.name for p in (REPO / "imbsam" / "kernels").glob("*.c"))
    python_files = {str(p.relative_to(REPO)) for p in (REPO / "imbsam").rglob("*.py")}
    assert {str(p.relative_to(installed)) for p in (installed / "imbsam").rglob("*.py")} == python_files


def test_a_stage_imports_its_workspace_imbsam_not_an_installed_one(installed, tmp_path):
    site, workspace = tmp_path / "site", tmp_path / "workspace"
    shutil.copytree(installed, site)
    (site / "imbsam" / "__init__.py").write_text('raise ImportError("the installed imbsam was imported")\n')
    for name in ("imbsam", "stages"):
        shutil.copytree(REPO / name, workspace / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", workspace / "params.yaml")
    result = run([sys.executable, "-m", "stages.split"], workspace, env={"PYTHONPATH": str(site)})
    assert result.returncode == 1 and "installed imbsam" not in result.stderr, show(result)
    assert "not found; run `dvc repro download` first" in result.stderr, show(result)
