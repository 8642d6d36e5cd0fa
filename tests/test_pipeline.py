"""The whole pipeline under real `dvc repro`, git and MindSpore, on a tiny synthetic archive.

One throwaway git + DVC repository per module: the first (expensive) repro runs once and the
tests below build on it in file order; each leaves the repository committed and up to date.
Smoke settings: resnet32, 1 epoch of 2 steps of 32 images, two seeds, sgd / sam / imbsam.
"""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from workspace import commit as _commit
from workspace import dvc as _dvc
from workspace import git as _git
from workspace import ok as _ok
from workspace import project_copy
from workspace import ran_stages as _ran_stages
from workspace import set_params as _set_params
from workspace import show as _show

OPTIMIZERS = ("sgd", "sam", "imbsam")
LABELS = {"sgd": "SGD", "sam": "SAM", "imbsam": "ImbSAM"}
GROUPS = ("many", "medium", "few", "all")
SEEDS = (0, 1)
RUNS = [f"{optimizer}-{seed}" for optimizer in OPTIMIZERS for seed in SEEDS]
IMBSAM_RUNS = [run for run in RUNS if run.startswith("imbsam-")]
SMOKE = {
    "model.arch": "resnet32",
    "train.optimizers": list(OPTIMIZERS),
    "train.seeds": list(SEEDS),  # two: the claims' intervals resample seeds too
    "train.epochs": 1,
    "train.max_steps_per_epoch": 2,
    "train.batch_size": 32,
    "train.schedule": "step_cosine",  # the authors' schedule would train a 1-epoch run at learning rate 0
    "analysis.curvature": True,  # workspace.ANALYSIS_SMOKE's few images and products
}
# A bad param must be rejected before MindSpore trains anything; a 1-epoch smoke train takes about as long.
FAIL_FAST_SECONDS = 60
# The download stage always runs, first (dvc.yaml: always_changed): it validates the whole of params.yaml. So
# `dvc status` lists it however up to date the rest is, and every repro runs it.
ALWAYS_CHANGED = {"download": ["always changed"]}


def _changed_stages(root):
    result = _ok(_dvc(root, "status", "--json"))
    return json.loads(result.stdout), result


def _files_written_since(folder, since):
    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file() and p.stat().st_mtime >= since)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, synthetic_archive):
    """Committed repository after a successful first `dvc repro`; its output as `repo.first_repro`."""
    archive, md5 = synthetic_archive(train_per_class=20, test_per_class=5)
    root = project_copy(tmp_path_factory.mktemp("pipeline") / "repo", archive, md5, SMOKE)

    first = _ok(_dvc(root, "repro"))
    _commit(root, "first repro")
    return root, first


def test_first_repro_runs_every_stage_and_writes_the_report(repo):
    root, first = repo
    expected = {"download", "split", *(f"{stage}@{run}" for stage in ("train", "evaluate", "analyze") for run in RUNS),
                "report"}
    assert set(_ran_stages(first)) == expected, _show(first)

    report = (root / "reports" / "report.md").read_text()
    assert "WARNING: these numbers are not comparable with the paper's" in report, report
    assert "synthetic stand-in archive" in report, report
    for optimizer in OPTIMIZERS:
        label = LABELS[optimizer]
        assert re.search(rf"^\| {label} +\|", report, re.MULTILINE), f"no {label} row:\n{report}"
    for name in ("per_class.png", "curves.png", "mechanism.png", "density.png"):
        assert (root / "reports" / name).stat().st_size > 0
    for run in RUNS:
        assert {p.name for p in (root / "runs" / run / "model").iterdir()} == {"last.ckpt", "best.ckpt"}


def test_every_run_is_analysed_and_the_report_shows_its_mechanism(repo):
    root, _ = repo
    report = (root / "reports" / "report.md").read_text()
    mechanism = report[report.index("## Mechanism"):report.index("## Figures")]
    for optimizer in OPTIMIZERS:
        assert re.search(rf"^\| {LABELS[optimizer]} \| few \| -?[0-9]", mechanism, re.MULTILINE), mechanism
    for run in RUNS:
        record = json.loads((root / "analysis" / f"{run}.json").read_text())
        assert record["checkpoint"] == "last" and record["epoch"] == 1 and record["weight_norm"] > 0
        few = record["groups"]["few"]
        assert few["samples"] == 8 and few["hessian_vector_products"] == 1 * 3 + 2
        assert few["lambda_max"] >= few["lambda_min"] and few["trace_stderr"] >= 0
        assert few["gap"] == pytest.approx(few["train_acc"] - few["test_acc"])
        assert len(few["nodes"]) == len(few["weights"]) == 1 and len(few["nodes"][0]) == 3
    shown = json.loads(_ok(_dvc(root, "metrics", "show", "--json")).stdout)[""]["data"]
    assert set(shown["reports/mechanism.json"]["data"]) == set(OPTIMIZERS)
    assert shown["reports/mechanism.json"]["data"]["imbsam"]["few"]["lambda_max"] == pytest.approx(np.mean(
        [json.loads((root / "analysis" / f"{run}.json").read_text())["groups"]["few"]["lambda_max"]
         for run in IMBSAM_RUNS]))


def test_metrics_json_and_dvc_metrics_and_plots(repo):
    root, _ = repo
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(metrics) == set(OPTIMIZERS), metrics
    for groups in metrics.values():
        assert set(groups) == set(GROUPS), metrics
        assert isinstance(groups["all"], (int, float)) and 0 <= groups["all"] <= 100, metrics
        # Whether "many" (> 100 training images) is empty depends on the split: here it always is.
        assert all(v is None or (isinstance(v, (int, float)) and 0 <= v <= 100) for v in groups.values()), metrics

    shown = _ok(_dvc(root, "metrics", "show", "--json"))
    files = json.loads(shown.stdout)[""]["data"]
    # DVC leaves out null values (an empty group).
    non_null = {optimizer: {k: v for k, v in groups.items() if v is not None} for optimizer, groups in metrics.items()}
    assert files["reports/metrics.json"]["data"] == non_null, _show(shown)

    plots = _ok(_dvc(root, "plots", "show", "--json"))
    plotted = json.dumps(json.loads(plots.stdout))
    for run in RUNS:
        assert f"runs/{run}/live/plots/metrics" in plotted, _show(plots)


def _independent_interval(root, optimizers, group_classes, variant, rng, resamples=2000):
    """The 95% interval of an optimizer's mean group accuracy over seeds (or of the difference of two optimizers'),
    written out afresh from the stored predictions: per replicate, each class's test images drawn with
    replacement by index, the seeds drawn with replacement, the same draws for both optimizers."""
    arrays = {(optimizer, seed): np.load(root / "evals" / f"{optimizer}-{seed}.predictions.npz")
              for optimizer in optimizers for seed in SEEDS}
    labels = arrays[(optimizers[0], SEEDS[0])]["labels"]
    members = [np.flatnonzero(labels == cls) for cls in group_classes]
    members = [m for m in members if m.size]
    replicates = []
    for _ in range(resamples):
        drawn = [rng.choice(m, m.size) for m in members]
        seeds = rng.choice(SEEDS, len(SEEDS))
        values = []
        for optimizer in optimizers:
            correct = [[(arrays[(optimizer, seed)][variant][d] == labels[d]).mean() for d in drawn] for seed in seeds]
            values.append(100 * np.mean(correct))
        replicates.append(values[0] - values[1] if len(values) == 2 else values[0])
    return np.percentile(replicates, [2.5, 97.5])


def test_the_report_opens_with_the_claims_each_with_an_interval_and_a_verdict(repo):
    from imbsam.claims import all_claims
    from imbsam.claims_report import VERDICTS

    root, _ = repo
    report = (root / "reports" / "report.md").read_text()
    assert report.index("## Did it reproduce?") < report.index("## Results"), report
    assert "2 seeds per optimizer" in report and "the seed part of each interval is crude" in report
    claims = json.loads((root / "reports" / "claims.json").read_text())
    assert list(claims) == [claim.id for claim in all_claims()]
    for claim_id, claim in claims.items():
        assert claim["verdict"] in VERDICTS and claim["kind"] in ("value", "difference", "mechanism"), claim_id
        if claim["kind"] == "value":
            # Synthetic data, capped steps, another network: never a verdict on the paper's numbers.
            assert claim["verdict"] in ("not comparable", "not run"), claim_id
        if claim["ours"] is not None:
            assert claim["low"] - 1e-9 <= claim["ours"] <= claim["high"] + 1e-9, claim_id
    # Every optimizer here (SGD, SAM, ImbSAM) and the curvature on: the ImbSAM paper's claims all ran but those of
    # the many group, which this small split leaves empty (no class has more than 100 training images).
    ran = {c.id: claims[c.id]["verdict"] != "not run" for c in all_claims() if c.paper == "imbsam"}
    assert ran == {c.id: c.group != "many" for c in all_claims() if c.paper == "imbsam"}, claims
    shown = json.loads(_ok(_dvc(root, "metrics", "show", "--json")).stdout)[""]["data"]
    assert shown["reports/claims.json"]["data"]["imbsam:imbsam-sgd:all"]["verdict"] == \
        claims["imbsam:imbsam-sgd:all"]["verdict"]


@pytest.mark.parametrize(("claim_id", "optimizers", "group"), [
    ("imbsam:imbsam:all", ("imbsam",), "all"), ("imbsam:imbsam-sgd:all", ("imbsam", "sgd"), "all")])
def test_claim_intervals_match_an_independent_bootstrap_of_the_stored_predictions(repo, claim_id, optimizers, group):
    """Within Monte Carlo error: two bootstraps of 2000 replicates each put a 2.5% percentile within a few
    percent of the interval's width of each other; 15% of it plus 0.5 points is far outside that."""
    root, _ = repo
    claim = json.loads((root / "reports" / "claims.json").read_text())[claim_id]
    summary = json.loads((root / "data" / "split" / "summary.json").read_text())
    classes = range(summary["num_classes"]) if group == "all" else summary["groups"][group]
    low, high = _independent_interval(root, optimizers, classes, "best_tta", np.random.default_rng(11))
    tolerance = 0.15 * (high - low) + 0.5
    assert abs(claim["low"] - low) < tolerance and abs(claim["high"] - high) < tolerance, (claim, low, high)


def test_repro_again_runs_nothing_but_the_params_check(repo):
    root, _ = repo
    again = _ok(_dvc(root, "repro"))
    assert _ran_stages(again) == ["download"], _show(again)
    assert "Stage 'split' didn't change, skipping" in again.stdout, _show(again)
    status, result = _changed_stages(root)
    assert status == ALWAYS_CHANGED, _show(result)


@pytest.fixture(scope="module")
def rho_changed(repo):
    """imbsam.rho 0.05 -> 0.1: `dvc status` and `dvc params diff` before, then `dvc repro`; committed after."""
    root, _ = repo
    _set_params(root, {"imbsam.rho": 0.1})
    status, status_result = _changed_stages(root)
    params_diff = _ok(_dvc(root, "params", "diff", "--json"))
    rerun = _ok(_dvc(root, "repro"))
    after, _ = _changed_stages(root)
    _commit(root, "imbsam.rho=0.1")
    return {"status": status, "status_result": status_result, "params_diff": params_diff, "repro": rerun,
            "status_after": after}


def test_changing_imbsam_rho_marks_only_its_run_and_the_report(rho_changed):
    # DVC compares each stage with dvc.lock on its own: evaluate@imbsam-0 only changes once train@imbsam-0 has
    # re-run, so `dvc status` cannot list it yet; the repro below shows that it re-runs.
    status = rho_changed["status"]
    assert set(status) == {*ALWAYS_CHANGED, *(f"train@{run}" for run in IMBSAM_RUNS), "report"}, \
        _show(rho_changed["status_result"])
    assert status["download"] == ALWAYS_CHANGED["download"], _show(rho_changed["status_result"])
    for stage in set(status) - set(ALWAYS_CHANGED):
        changed = [entry for entry in status[stage] if "changed deps" in entry]
        assert changed and "params.yaml" in json.dumps(changed), _show(rho_changed["status_result"])

    diff = rho_changed["params_diff"]
    changed = {key: (change["old"], change["new"]) for key, change in json.loads(diff.stdout)["params.yaml"].items()}
    assert changed == {"imbsam.rho": (0.05, 0.1)}, _show(diff)


def test_changing_imbsam_rho_reruns_only_imbsam_and_the_report(rho_changed):
    rerun = rho_changed["repro"]
    assert set(_ran_stages(rerun)) == {"download", "report", *(f"{stage}@{run}" for run in IMBSAM_RUNS
                                                               for stage in ("train", "evaluate", "analyze"))}, \
        _show(rerun)
    assert rho_changed["status_after"] == ALWAYS_CHANGED


def test_changing_an_analysis_key_reanalyses_every_run_and_retrains_none(repo):
    root, _ = repo
    _set_params(root, {"analysis.rho": 0.1})
    status, result = _changed_stages(root)
    assert set(status) == {*ALWAYS_CHANGED, *(f"analyze@{run}" for run in RUNS), "report"}, _show(result)
    rerun = _ok(_dvc(root, "repro"))
    assert set(_ran_stages(rerun)) == {"download", *(f"analyze@{run}" for run in RUNS), "report"}, _show(rerun)
    record = json.loads((root / "analysis" / "sgd-0.json").read_text())
    assert record["settings"]["rho"] == 0.1
    _commit(root, "analysis.rho=0.1")


def test_push_clone_pull_restores_report_and_checkpoints(repo, tmp_path_factory):
    root, _ = repo
    storage = tmp_path_factory.mktemp("dvc-storage")
    _ok(_dvc(root, "remote", "add", "-d", "local", str(storage)))
    _ok(_dvc(root, "push"))
    _commit(root, "local DVC remote")

    clone = tmp_path_factory.mktemp("clone") / "repo"
    _git(clone.parent, "clone", "-q", str(root), str(clone))
    assert not (clone / "reports" / "report.md").exists()
    _ok(_dvc(clone, "pull"))

    assert (clone / "reports" / "report.md").read_bytes() == (root / "reports" / "report.md").read_bytes()
    for run in RUNS:
        for checkpoint in ("last.ckpt", "best.ckpt"):
            path = Path("runs") / run / "model" / checkpoint
            assert (clone / path).read_bytes() == (root / path).read_bytes(), path
    status, result = _changed_stages(clone)
    assert status == ALWAYS_CHANGED, _show(result)


@pytest.mark.parametrize(
    ("changes", "target", "message"),
    [
        # The download stage, which always runs first, checks the whole of params.yaml: before DVC looks for
        # train@adam-0's params group or its module (adam.py in the optimizers package).
        pytest.param({"train.optimizers": [*OPTIMIZERS, "adam"]}, None,
                     "train.optimizers[3]='adam' is invalid: input should be 'focal_sam', 'imbsam', 'sam', 'sgd' "
                     "or 'sse_sam'",
                     id="unknown-optimizer"),
        pytest.param({"train.optimizers": [*OPTIMIZERS, "imbsm"], "train.lr": 0.02}, None,
                     "train.optimizers[3]='imbsm' is invalid: input should be 'focal_sam', 'imbsam', 'sam', 'sgd' "
                     "or 'sse_sam'",
                     id="misspelt-optimizer"),
        # A group with no optimizer or loss module is an unknown section of params.yaml.
        pytest.param({"train.optimizers": [*OPTIMIZERS, "adam"], "adam": {}}, "train@adam-0",
                     "unknown key adam: a typo? the sections are data, split, model, train, eval, device, analysis "
                     "and one group per optimizer and loss", id="unknown-optimizer-with-group"),
        pytest.param({"train.seeds": [-1]}, None, "train.seeds=[-1] is invalid: seeds must be integers >= 0",
                     id="negative-seed"),
        pytest.param({"train.seeds": [0, 1.5]}, None, "train.seeds[1]=1.5 is invalid: input should be a valid integer",
                     id="fractional-seed"),
        pytest.param({"train.epochs": 0}, "train@sgd-0",
                     "train.epochs=0 is invalid: input should be greater than or equal to 1", id="zero-epochs"),
        pytest.param({"train.lr": -0.1}, None, "train.lr=-0.1 is invalid: input should be greater than 0",
                     id="negative-lr"),
        # An analysis key: refused before any training, though only analyze@ reads it.
        pytest.param({"analysis.lanczos_steps": 1, "train.lr": 0.02}, None,
                     "analysis.lanczos_steps=1 is invalid: input should be greater than or equal to 2",
                     id="one-lanczos-step"),
        # A report-only key, yet the first stage that runs (download) stops before anything trains.
        pytest.param({"eval.selection": "median", "train.lr": 0.02}, None,
                     "eval.selection='median' is invalid: input should be 'best' or 'last'",
                     id="unknown-selection"),
    ],
)
def test_bad_params_fail_fast_naming_the_key(repo, changes, target, message):
    root, _ = repo
    _set_params(root, changes)
    started = time.time()
    try:
        result = _dvc(root, "repro", *([target] if target else []))
        assert result.returncode != 0, _show(result)
        assert message in result.stdout + result.stderr, _show(result)
        assert result.elapsed < FAIL_FAST_SECONDS, _show(result)
        assert len(_ran_stages(result)) <= 1, f"only the failing stage may run:{_show(result)}"
        assert _files_written_since(root / "runs", started) == [], _show(result)
        assert not [p for p in (root / "runs").iterdir() if p.name not in RUNS], _show(result)
    finally:
        # DVC deletes a stage's outputs before running it: git restores params.yaml and the uncached outputs,
        # `dvc checkout` the cached ones.
        _git(root, "checkout", "--", ".")
        _ok(_dvc(root, "checkout"))
    assert _git(root, "status", "--porcelain").stdout == ""
