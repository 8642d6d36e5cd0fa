"""A throwaway git + DVC copy of the project for tests that run the real pipeline, and the commands they
run in it."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# The mechanism stage at its cheapest in every test workspace: the generalization gap only, so that a repro's
# analyze@ stages add seconds; a workspace that tests the curvature sets analysis.curvature back, at a few images
# and products per group.
ANALYSIS_SMOKE = {"analysis.curvature": False, "analysis.samples_per_group": 8, "analysis.lanczos_steps": 3,
                  "analysis.lanczos_runs": 1, "analysis.hutchinson_samples": 2, "analysis.batch_size": 8}
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}


def run(args, cwd, timeout=900, env=None):
    """args run in cwd, with the tests' environment and `env` on top."""
    started = time.monotonic()
    result = subprocess.run(args, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True, check=False,
                            timeout=timeout)
    result.elapsed = time.monotonic() - started
    return result


def show(result):
    """The whole of a command's outcome, for assertion messages."""
    return (f"\n$ {' '.join(map(str, result.args))}  (exit {result.returncode}, {result.elapsed:.1f} s)\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")


def ok(result):
    assert result.returncode == 0, show(result)
    return result


def git(cwd, *args):
    return ok(run(["git", *args], cwd))


def dvc(cwd, *args):
    return run([sys.executable, "-m", "dvc", *args], cwd)


def commit(root, message):
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)


def set_params(root, changes):
    """changes: {dotted key: value}."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for dotted, value in changes.items():
        *groups, name = dotted.split(".")
        node = params
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(result):
    return re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr)


def project_copy(root, archive, md5, changes, source=REPO, folders=("stages", "imbsam", "scripts")):
    """The project's pipeline and library (from `source`, default this checkout) in a new git + DVC repository at
    root, reading `archive`, with params.yaml `changes`; committed."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", "pyproject.toml"):
        shutil.copy(source / name, root / name)
    for name in folders:
        shutil.copytree(source / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "init", "-q")
    for key, value in (("user.name", "Pipeline Test"), ("user.email", "test@example.com"),
                       ("commit.gpgsign", "false")):
        git(root, "config", key, value)
    ok(dvc(root, "init", "-q"))
    # A version from before the mechanism stage has no analysis section to set.
    smoke = ANALYSIS_SMOKE if "analysis" in yaml.safe_load((root / "params.yaml").read_text()) else {}
    set_params(root, {"data.url": str(archive), "data.md5": md5, **smoke, **changes})
    commit(root, "project copy")
    return root
