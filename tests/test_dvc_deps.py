"""dvc.yaml's dependencies follow the computation: each stage depends on exactly the project modules its command
really imports (recorded in a real `dvc repro`, modules found by name included), less the exempt ones, which run
in a stage without being able to change its results. So an edit that cannot change a run retrains nothing, an
edit to the shared step machinery retrains every run, and a new optimizer or loss is one module and one group.

One throwaway git + DVC repository for the module: the first repro runs once, the tests build on it in file order.
"""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workspace import ANALYSIS_SMOKE, REPO, commit, dvc, git, ok, project_copy, ran_stages, run, set_params, show

# Modules a stage runs that cannot change its results: which device a run takes (locks, CPU slots).
EXEMPT = ("imbsam/device/claims.py",)
# What starts runs side by side (python -m imbsam.matrix): no stage imports it; it picks devices, not results.
LAUNCHERS = ("imbsam/matrix.py",)
SMOKE = {"model.arch": "resnet32", "train.optimizers": ["sgd"], "train.seeds": [0], "train.epochs": 1,
         "train.max_steps_per_epoch": 2, "train.batch_size": 32, "train.schedule": "step_cosine"}
# Every Python process of the repro writes, as it ends, its command line and the project modules it imported.
AUDIT = '''import atexit, json, os, sys


def _record():
    files = sorted({getattr(module, "__file__", None) or "" for module in list(sys.modules.values())})
    path = os.path.join(os.environ["IMBSAM_IMPORT_AUDIT"], f"{os.getpid()}.json")
    with open(path, "w") as out:
        json.dump({"argv": sys.argv, "files": [f for f in files if f]}, out)


atexit.register(_record)
'''
# Modules that download, claim devices, render the report, benchmark, check the host or hold the checks.
NOT_A_RUN = ("imbsam/data/download.py", "imbsam/device/claims.py", "imbsam/report.py", "imbsam/published.py",
             "imbsam/claims_report.py", "imbsam/bootstrap.py", "imbsam/claims/imbsam.py",
             "imbsam/sweep.py", "imbsam/bench/step.py", "imbsam/bench/oracle.py", "imbsam/check_host/__init__.py",
             "imbsam/check_host/speed.py", "imbsam/reference.py", "imbsam/verify/optimizers/sgd.py",
             "imbsam/synthetic.py", "imbsam/optimizers/sam.py", "imbsam/losses/ldam_drw.py",
             "imbsam/mechanism_report.py", *LAUNCHERS)


def _status(root):
    result = ok(dvc(root, "status", "--json"))
    return json.loads(result.stdout)


def _runs(status):
    return sorted(stage for stage in status if stage.startswith(("train@", "evaluate@", "analyze@")))


def _stage_of(argv):
    """The dvc.yaml stage a recorded command line is, or None for another process (DVC's own)."""
    script = Path(argv[0])
    if script.parent.name != "stages" or script.stem.startswith("_"):
        return None
    if "--optimizer" in argv:
        return f"{script.stem}@{argv[argv.index('--optimizer') + 1]}-{argv[argv.index('--seed') + 1]}"
    return script.stem


def _project_file(root, path):
    path = Path(path).resolve()
    if path.is_relative_to(root) and path.relative_to(root).parts[0] in ("imbsam", "stages"):
        return str(path.relative_to(root))
    return None


def _locked_deps(root, stage):
    """The project modules among a stage's dependencies as dvc.lock resolved them, folders expanded."""
    deps = yaml.safe_load((root / "dvc.lock").read_text())["stages"][stage]["deps"]
    files = set()
    for dep in (root / entry["path"] for entry in deps):
        if dep.is_dir():
            files |= {str(f.relative_to(root)) for f in dep.rglob("*.py") if "__pycache__" not in f.parts}
        elif dep.suffix == ".py":
            files.add(str(dep.relative_to(root)))
    return files


@pytest.fixture(scope="module")
def repo(tmp_path_factory, synthetic_archive):
    """A committed repository after a first `dvc repro` of sgd, with what every stage's process imported."""
    archive, md5 = synthetic_archive(train_per_class=20, test_per_class=5)
    base = tmp_path_factory.mktemp("deps")
    root = project_copy(base / "repo", archive, md5, SMOKE).resolve()
    (base / "audit").mkdir()
    (base / "hook").mkdir()
    (base / "hook" / "sitecustomize.py").write_text(AUDIT)
    env = {"PYTHONPATH": str(base / "hook"), "IMBSAM_IMPORT_AUDIT": str(base / "audit")}
    ok(run([sys.executable, "-m", "dvc", "repro"], root, env=env))
    commit(root, "first repro")
    imported = {}
    for record in (json.loads(path.read_text()) for path in (base / "audit").glob("*.json")):
        stage = _stage_of(record["argv"])
        if stage:
            files = [root / record["argv"][0], *record["files"]]
            imported[stage] = {f for f in (_project_file(root, p) for p in files) if f}
    return root, imported


def test_every_stage_of_the_repro_was_recorded(repo):
    _, imported = repo
    assert set(imported) == {"download", "split", "train@sgd-0", "evaluate@sgd-0", "analyze@sgd-0", "report"}, \
        sorted(imported)


@pytest.mark.parametrize("stage", ["download", "split", "train@sgd-0", "evaluate@sgd-0", "analyze@sgd-0", "report"])
def test_a_stage_depends_on_exactly_what_its_command_imports(repo, stage):
    root, imported = repo
    used = imported[stage] - set(EXEMPT)
    deps = _locked_deps(root, stage)
    assert not used - deps, f"{stage} imports but does not depend on {sorted(used - deps)}"
    assert not deps - used, f"{stage} depends on {sorted(deps - used)}, which its command does not import"


def test_a_run_depends_on_its_own_optimizer_and_loss_only(repo):
    _, imported = repo
    train = imported["train@sgd-0"]
    assert {"imbsam/optimizers/sgd.py", "imbsam/losses/ce.py", "imbsam/optim.py"} <= train
    assert not {f for f in train if f.startswith(("imbsam/optimizers/", "imbsam/losses/"))
                and not f.endswith(("/__init__.py", "/sgd.py", "/ce.py"))}
    assert not {f for f in train if f.startswith(("imbsam/verify/", "imbsam/bench/", "imbsam/check_host/"))}


def test_an_exempt_module_is_imported_by_no_module_that_computes():
    exempt = {path.removesuffix(".py").replace("/", ".") for path in EXEMPT}
    importers = []
    for path in (REPO / "imbsam").rglob("*.py"):
        if str(path.relative_to(REPO)) in LAUNCHERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                     if isinstance(node, ast.ImportFrom) and node.module else [])
            if exempt & set(names):
                importers.append(str(path.relative_to(REPO)))
    assert not importers, f"{importers} import an exempt module: it would then change results"


def test_an_edit_that_cannot_change_a_run_leaves_every_run_up_to_date(repo):
    root, _ = repo
    for path in NOT_A_RUN:
        with open(root / path, "a") as module:
            module.write("# an edit that cannot change a trained run\n")
    try:
        status = _status(root)
        assert not _runs(status), status
    finally:
        git(root, "checkout", "--", "imbsam")


def test_an_edit_to_the_shared_step_machinery_retrains_every_run(repo):
    root, _ = repo
    with open(root / "imbsam" / "optim.py", "a") as module:
        module.write("# an edit to every optimizer's step\n")
    try:
        assert "train@sgd-0" in _status(root)
    finally:
        git(root, "checkout", "--", "imbsam")
    assert not _runs(_status(root))


def test_an_edit_to_the_curvature_reanalyses_without_retraining(repo):
    root, _ = repo
    with open(root / "imbsam" / "analysis.py", "a") as module:
        module.write("# an edit to how curvature is measured\n")
    try:
        assert _runs(_status(root)) == ["analyze@sgd-0"]
    finally:
        git(root, "checkout", "--", "imbsam")


def test_an_unknown_optimizer_stops_with_the_schemas_line_though_download_and_split_are_cached(repo):
    root, _ = repo
    set_params(root, {"train.optimizers": ["sgd", "sgdd"]})
    try:
        result = dvc(root, "repro")
        assert result.returncode != 0, show(result)
        assert ran_stages(result) == ["download"], show(result)
        assert "train.optimizers[1]='sgdd' is invalid" in result.stderr and "'sgd'" in result.stderr, show(result)
    finally:
        git(root, "checkout", "--", "params.yaml")


def test_a_new_optimizer_is_one_module_and_one_group(repo):
    """The README's recipe: copy sgd.py, change its LABEL line, add its group and its name; nothing else."""
    root, _ = repo
    module = (root / "imbsam" / "optimizers" / "sgd.py").read_text()
    assert module.count('LABEL = "SGD"\n') == 1
    (root / "imbsam" / "optimizers" / "sgd_copy.py").write_text(module.replace('LABEL = "SGD"', 'LABEL = "SGD copy"'))
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params + "sgd_copy: {}\n")
    set_params(root, {"train.optimizers": ["sgd", "sgd_copy"]})

    result = ok(dvc(root, "repro"))
    assert sorted(ran_stages(result)) == ["analyze@sgd_copy-0", "download", "evaluate@sgd_copy-0", "report",
                                          "train@sgd_copy-0"], show(result)
    report = (root / "reports" / "report.md").read_text()
    assert "| SGD copy " in report, report
    assert set(json.loads((root / "reports" / "metrics.json").read_text())) == {"sgd", "sgd_copy"}
    bench = ok(run([sys.executable, "-m", "imbsam.bench", "--arch", "resnet32", "--optimizers", "sgd_copy", "--steps",
                    "2", "--warmup", "1", "--rounds", "1", "--modes", "graph"], root))
    assert any(line.startswith("sgd_copy ") for line in bench.stdout.splitlines()), bench.stdout
    commit(root, "sgd_copy")


def test_a_new_loss_is_one_module_and_one_group(repo):
    root, _ = repo
    module = (root / "imbsam" / "losses" / "ce.py").read_text()
    (root / "imbsam" / "losses" / "ce_copy.py").write_text(module.replace('LABEL = "CE"', 'LABEL = "CE copy"'))
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params + "ce_copy: {}\n")
    set_params(root, {"train.loss": "ce_copy"})

    result = ok(dvc(root, "repro"))
    assert {"train@sgd-0", "train@sgd_copy-0"} <= set(ran_stages(result)), show(result)
    trained = json.loads((root / "runs" / "sgd-0" / "train.json").read_text())
    assert trained["loss"] == "ce_copy" and trained["history"][0]["train/loss"] > 0
    assert "`train.loss` = 'ce_copy'" in (root / "reports" / "report.md").read_text()


# The last commits before the optimizers, losses and datasets moved into modules of their own, before the
# stages ran as modules (`python -m stages.<name>`, not `python stages/<name>.py`), and before the report judged
# the papers' claims (evaluate@ keeps per-image predictions since).
EARLIER_VERSIONS = {"before the move": "4ab5532", "before python -m stages": "40e6a9c",
                    "before the claims": "d888f6f"}
# The README's upgrade command commits the stages an earlier version ran whose results stay valid; the repro then
# runs evaluate@ once more (for its predictions), analyze@ where the version had none, and the report.
UPGRADE_COMMITS = ("download", "split", "train")


@pytest.mark.parametrize("version", EARLIER_VERSIONS)
def test_runs_trained_with_an_earlier_version_are_kept_after_the_upgrade(version, tmp_path, synthetic_archive):
    """The README's upgrade note: a workspace trained with an earlier version, upgraded, `dvc commit -f`, then
    `dvc status` shows nothing to train and `dvc repro` trains nothing."""
    if git(REPO, "rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip(f"a shallow clone has no commit from {version}")
    archive, md5 = synthetic_archive(train_per_class=20, test_per_class=5)
    old = tmp_path / "old"
    old.mkdir()
    tar = subprocess.run(["git", "archive", EARLIER_VERSIONS[version], "imbsam", "stages", "dvc.yaml", "params.yaml",
                          ".gitignore", "pyproject.toml"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=tar, check=True)
    root = project_copy(tmp_path / "repo", archive, md5, SMOKE, source=old, folders=("imbsam", "stages"))
    ok(dvc(root, "repro"))
    commit(root, f"trained {version}")

    for name in ("imbsam", "stages"):
        shutil.rmtree(root / name)
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    # What `git pull` brings to params.yaml: the sections of stages that did not exist then.
    set_params(root, {f"analysis.{key}": value
                      for key, value in yaml.safe_load((REPO / "params.yaml").read_text())["analysis"].items()})
    set_params(root, ANALYSIS_SMOKE)
    assert _runs(_status(root)), "the upgrade must change the runs' dependency hashes or commands"
    ok(dvc(root, "commit", "-f", *UPGRADE_COMMITS))
    rerun = ["evaluate@sgd-0"] if version == "before the claims" else ["evaluate@sgd-0", "analyze@sgd-0"]
    status = _status(root)
    assert sorted(status) == sorted(["download", *rerun, "report"]), status
    result = ok(dvc(root, "repro"))
    assert sorted(ran_stages(result)) == sorted(["download", *rerun, "report"]), show(result)
    assert not any(stage.startswith("train@") for stage in ran_stages(result))
    assert list(_status(root)) == ["download"]
