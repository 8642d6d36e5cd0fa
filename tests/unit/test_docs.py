"""The documents and the code cite only files that exist in the repository, and nothing outside it."""

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# A repository path as the docs and comments cite it: a top-level folder, then a file or folder name.
CITED = re.compile(r"(?<![\w/.=-])((?:docs|imbsam|stages|tests|scripts|docker|reports)/[\w./-]*\w)")


def _pipeline_outputs():
    """What `dvc repro` writes: the outputs and metrics dvc.yaml declares."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {next(iter(out)) if isinstance(out, dict) else out
            for stage in stages.values() for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])}


def _tracked():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    return [REPO / name for name in listed if (REPO / name).is_file()]


def _texts():
    for path in _tracked():
        if path.suffix in (".md", ".py", ".c", ".sh", ".yaml", ".toml") or path.name in ("Dockerfile", "run"):
            yield path, path.read_text(errors="replace")


def test_every_cited_file_exists():
    # reports/sweep.md: written by `python -m imbsam.sweep`, not by a stage.
    missing, outputs = set(), _pipeline_outputs() | {"reports/.gitignore", "reports/sweep.md"}
    for path, text in _texts():
        for cited in CITED.findall(text):
            if cited in outputs:
                continue
            if not (REPO / cited).exists() and not (REPO / cited.rstrip(".")).exists():
                missing.add(f"{path.relative_to(REPO)} cites {cited}")
    assert not missing, sorted(missing)


def test_nothing_cites_notes_outside_the_repository():
    for path, text in _texts():
        if path.name == "test_docs.py":
            continue
        assert "../shared" not in text and "notes/" not in text, path


def test_the_readme_keeps_two_set_up_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^pip install -r requirements[-\w]*\.lock && .+$", readme, re.MULTILINE)
    assert commands == ["pip install -r requirements.lock && dvc repro",
                        "pip install -r requirements-dev.lock && python -m pytest -q"]
    assert commands[1] in (REPO / ".ci" / "run").read_text()
