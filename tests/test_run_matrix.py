"""python -m imbsam.matrix on the CPU with real DVC queues and git: runs side by side on their own slots, gathered
from the run-cache without training, shards on two clones joined through a folder remote, and a run killed
with SIGKILL that resumes from its last finished epoch."""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from workspace import ENV, commit, dvc, git, ok, project_copy, ran_stages, run, set_params, show

from imbsam import matrix

SMALL = {"model.arch": "resnet32", "train.epochs": 1, "train.max_steps_per_epoch": 2, "train.batch_size": 16,
         "train.schedule": "step_cosine"}


def run_matrix(root, *args, locks):
    return run([sys.executable, "-m", "imbsam.matrix", *args], root, env={"IMBSAM_LOCK_DIR": str(locks)})


def train_record(root, name):
    return json.loads((root / "runs" / name / "train.json").read_text())


def report_rows(root):
    report = (root / "reports" / "report.md").read_text()
    return set(re.findall(r"^\| ((?:sgd|sam|imbsam)-\d+) +\|", report, re.MULTILINE))


def test_two_slots_train_side_by_side_and_the_gathering_trains_nothing(tmp_path, synthetic_archive):
    root = project_copy(tmp_path / "repo", *synthetic_archive(), {**SMALL, "train.optimizers": ["sgd", "sam"],
                                                                  "train.seeds": [0]})
    result = run_matrix(root, "--jobs", "2", locks=tmp_path / "locks")
    assert result.returncode == 0, show(result)
    assert "to train: sgd-0, sam-0" in result.stdout and re.search(r"2 running \(sgd-0 on CPU slot", result.stdout)

    runs = {name: train_record(root, name) for name in ("sgd-0", "sam-0")}
    assert {run["device"]["slot"] for run in runs.values()} == {"CPU slot 1/2 (cores 0)", "CPU slot 2/2 (cores 1)"}
    # The two trainings overlap in time: each started before the other finished.
    assert max(r["started_at"] for r in runs.values()) < min(r["finished_at"] for r in runs.values()), runs
    gathering = result.stdout.split("gathering:", 1)[1]
    assert "Stage 'train@sgd-0' is cached - skipping run" in gathering
    assert "Stage 'evaluate@sam-0' is cached - skipping run" in gathering
    assert "Stage 'analyze@sgd-0' is cached - skipping run" in gathering
    assert "Running stage 'train@" not in gathering and "Running stage 'analyze@" not in gathering
    assert "Running stage 'report'" in gathering

    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    for name, optimizer in (("sgd-0", "sgd"), ("sam-0", "sam")):
        evaluated = json.loads((root / "evals" / f"{name}.json").read_text())
        assert metrics[optimizer]["all"] == pytest.approx(evaluated["variants"]["best"]["flip_tta"]["all"])
    assert report_rows(root) == {"sgd-0", "sam-0"}
    assert "CPU slot 1/2 (cores 0) (graph, 1 threads" in (root / "reports" / "report.md").read_text()
    queue = ok(dvc(root, "queue", "status")).stdout
    assert queue.count("Success") == 2, queue

    # A param changed and changed back: the earlier run comes back from the run-cache, not from training.
    set_params(root, {"train.lr": 0.02})
    assert "train@sgd-0" in ran_stages(ok(dvc(root, "repro", "train@sgd-0")))
    set_params(root, {"train.lr": 0.01})
    back = ok(dvc(root, "repro"))
    assert not [stage for stage in ran_stages(back) if stage.startswith("train@")], show(back)
    assert "Stage 'train@sgd-0' is cached - skipping run" in back.stdout


def test_shards_on_two_clones_meet_in_one_report_through_a_folder_remote(tmp_path, synthetic_archive):
    shard_of = matrix.in_shard
    seeds = [next(s for s in range(100) if shard_of(f"sgd-{s}", part, 2)) for part in (1, 2)]
    origin = project_copy(tmp_path / "a", *synthetic_archive(),
                          {**SMALL, "train.optimizers": ["sgd"], "train.seeds": seeds})
    ok(dvc(origin, "remote", "add", "-d", "shared", str(tmp_path / "remote")))
    commit(origin, "a folder remote")
    clones = {"b": tmp_path / "b", "c": tmp_path / "c"}
    for path in clones.values():
        git(tmp_path, "clone", "-q", str(origin), str(path))

    for part, root in ((1, origin), (2, clones["b"])):
        result = run_matrix(root, "--shard", f"{part}/2", locks=tmp_path / f"locks-{part}")
        assert result.returncode == 0, show(result)
        assert f"to train: sgd-{seeds[part - 1]};" in result.stdout
        assert f"sgd-{seeds[2 - part]}" not in result.stdout.split("to train:", 1)[1].split("\n", 1)[0]
        assert "dvc push --run-cache" in result.stdout
        ok(dvc(root, "push", "--run-cache"))

    third = clones["c"]
    gathered = ok(dvc(third, "repro", "--pull"))  # the run-cache entries and their outputs, from the remote
    assert not [s for s in ran_stages(gathered) if s.startswith(("train@", "evaluate@", "analyze@"))], show(gathered)
    assert report_rows(third) == {f"sgd-{seed}" for seed in seeds}


def claimable(path, seconds=10):
    """Whether the lock can be taken within `seconds`: SIGKILL ends a process soon, not at once."""
    deadline = time.monotonic() + seconds
    with open(path) as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.1)


def test_a_killed_run_frees_its_slot_and_resumes_while_the_other_is_untouched(tmp_path, synthetic_archive):
    root = project_copy(tmp_path / "repo", *synthetic_archive(), {
        **SMALL, "train.optimizers": ["sgd", "sam"], "train.seeds": [0], "train.epochs": 3,
        "train.max_steps_per_epoch": 6})
    locks = tmp_path / "locks"
    launch = subprocess.Popen([sys.executable, "-m", "imbsam.matrix", "--jobs", "2"], cwd=root,
                              env={**ENV, "IMBSAM_LOCK_DIR": str(locks)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    status_path = root / ".resume" / "status" / "sam-0.json"
    deadline = time.monotonic() + 600
    status = {}
    while time.monotonic() < deadline and launch.poll() is None:
        if status_path.is_file():
            status = json.loads(status_path.read_text())
            if status["epoch"] >= 1 and not status["finished"]:
                break
        time.sleep(0.1)
    assert status.get("epoch", 0) >= 1, (status, launch.poll())
    os.kill(status["pid"], signal.SIGKILL)
    slot = int(re.match(r"CPU slot (\d)/2", status["device"])[1]) - 1
    assert claimable(locks / f"cpu-{slot}.lock"), "the killed run's slot is still held"
    output = launch.communicate(timeout=600)[0]
    assert launch.returncode == 1, output
    assert re.search(r"failed: sam-0 \(its log: dvc queue logs [\w-]+\)", output), output
    untouched = (root / "runs" / "sgd-0" / "train.json").read_bytes()
    assert json.loads(untouched)["epochs_completed"] == 3

    again = run_matrix(root, "--jobs", "2", locks=locks)
    assert again.returncode == 0, show(again)
    assert "to train: sam-0; up to date: sgd-0" in again.stdout
    resumed = train_record(root, "sam-0")
    assert resumed["resumed_after_epoch"] >= 1 and resumed["epochs_completed"] == 3
    assert len(resumed["history"]) == 3
    assert (root / "runs" / "sgd-0" / "train.json").read_bytes() == untouched
    assert report_rows(root) == {"sgd-0", "sam-0"}


def test_bad_arguments_and_the_plan(tmp_path, synthetic_archive):
    root = project_copy(tmp_path / "repo", *synthetic_archive(), {**SMALL, "train.seeds": [0, 1]})
    for args, message in ((["--shard", "3/2"], "K/M with 1 <= K <= M"), (["--jobs", "0"], "a whole number >= 1")):
        result = run_matrix(root, *args, locks=tmp_path)
        assert result.returncode == 2 and message in result.stderr.splitlines()[-1], show(result)
    plan = run_matrix(root, "--dry-run", "--jobs", "2", locks=tmp_path)
    assert plan.returncode == 0, show(plan)
    assert "matrix: 6 runs; 2 at a time on the CPU's cores in 2 slot(s)" in plan.stdout
    assert "to train: sgd-0, sgd-1, sam-0, sam-1, imbsam-0, imbsam-1;" in plan.stdout
    assert not (root / "data").exists() and ok(dvc(root, "queue", "status")).stdout.count("Queued") == 0
    set_params(root, {"train.optimizers": ["sgd", "adam"]})
    bad = run_matrix(root, locks=tmp_path)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "train.optimizers[1]='adam'" in bad.stderr
