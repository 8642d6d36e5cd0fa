"""The cpu image runs the pipeline as `docker run --user` would: `dvc exp run` on a synthetic archive in a mounted
clone with DVC's cache in a volume at /cache, then the host check; afterwards root (`docker run` without --user) finds
the clone usable and the run up to date."""

import json
import re

import pytest
from imagecheck import ROOT, USER, init_workspace

# The mechanism stage at its cheapest: a few images and Hessian-vector products per group.
ANALYSIS_SMOKE = ("analysis.samples_per_group=8", "analysis.lanczos_steps=3", "analysis.lanczos_runs=1",
                  "analysis.hutchinson_samples=2", "analysis.batch_size=8")


@pytest.fixture(scope="module")
def pipeline(cpu_image, workspace):
    workspace, cache = workspace
    volumes = [f"{workspace}:/workspace", f"{cache}:/cache"]
    report = workspace / "reports" / "report.md"
    with cpu_image.container(volumes=volumes, workdir="/workspace") as container:
        url, md5 = init_workspace(container)
        cache_dir = container.run("dvc", "cache", "dir").stdout.strip()
        repro = container.run("dvc", "exp", "run", "-S", f"data.url={url}", "-S", f"data.md5={md5}",
                              "-S", "model.arch=resnet32", "-S", "train.epochs=1", "-S", "train.max_steps_per_epoch=2",
                              "-S", "train.seeds=[0]", "-S", "train.schedule=step_cosine",
                              *(arg for key_value in ANALYSIS_SMOKE for arg in ("-S", key_value)), check=False)
        # Every section, on the cheap network only; it leaves the workspace as it was.
        host_check = container.run("python", "-m", "imbsam.check_host", "--archs", "resnet32", "--steps", "1",
                                   "--out", "/tmp/host-check", check=False)
        host_report = container.read("/tmp/host-check/host-check.md")
        bundle = container.read("/tmp/host-check/host-check.json")
    owner = f"{report.stat().st_uid}:{report.stat().st_gid}" if report.exists() else None
    root_owned = sorted(str(path.relative_to(workspace)) for path in workspace.rglob("*") if path.lstat().st_uid == 0)
    cached = [path for path in cache.rglob("*") if path.is_file()]
    with cpu_image.container(user=ROOT, volumes=volumes, workdir="/workspace") as container:
        git_status = container.run("git", "status", "--short", check=False)
        dvc_status = container.run("dvc", "status", "--json", check=False)
    return {"cache_dir": cache_dir, "repro": repro, "report": report.read_text() if report.exists() else "",
            "owner": owner, "root_owned": root_owned, "cached": cached, "host_check": host_check,
            "host_report": host_report, "bundle": json.loads(bundle) if bundle else None, "git_status": git_status,
            "dvc_status": dvc_status}


def test_the_volume_at_cache_is_dvcs_cache(pipeline):
    assert pipeline["cache_dir"] == "/cache"


def test_dvc_exp_run_writes_the_report_as_the_user(pipeline):
    repro = pipeline["repro"]
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert pipeline["report"].strip(), "reports/report.md was not written"
    # The mechanism stage's second derivatives run in the image too.
    assert "## Mechanism" in pipeline["report"] and "Not analysed yet" not in pipeline["report"]
    # The claims' bootstrap over the evaluate stage's per-image predictions, first in the report.
    assert pipeline["report"].index("## Did it reproduce?") < pipeline["report"].index("## Results")
    assert pipeline["owner"] == USER


def test_the_run_fills_the_cache_volume_and_leaves_no_root_owned_file(pipeline):
    assert pipeline["cached"], "the DVC cache volume stayed empty"
    assert pipeline["root_owned"] == []


def test_the_host_check_passes_every_section(pipeline):
    host_check, bundle = pipeline["host_check"], pipeline["bundle"]
    assert host_check.returncode == 0, host_check.stdout + host_check.stderr
    assert bundle["passed"] is True and {"correctness", "speed"} <= set(bundle), bundle.get("verdict")
    assert re.search(r"^\*\*PASS: .* give the authors. update", pipeline["host_report"], re.MULTILINE), (
        pipeline["host_report"])


def test_root_finds_the_users_clone_usable_and_the_run_up_to_date(pipeline):
    # git accepts a clone another uid owns (safe.directory); DVC: only download, which runs first in every repro
    # to validate params.yaml, is always changed.
    git_status, dvc_status = pipeline["git_status"], pipeline["dvc_status"]
    assert git_status.returncode == 0, git_status.stderr
    assert dvc_status.returncode == 0, dvc_status.stderr
    assert json.loads(dvc_status.stdout) == {"download": ["always changed"]}
