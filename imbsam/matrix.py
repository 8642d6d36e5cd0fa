"""Train every stale run of params.yaml's train.optimizers x train.seeds side by side, one run per device, as
DVC experiments in its queue; then gather them into the workspace with `dvc repro`, which restores each
trained run from DVC's run-cache instead of training it again, and renders the usual report.

    python -m imbsam.matrix [--jobs N] [--shard K/M] [--dry-run]

--jobs N      runs at a time (default: one per device of the pool, the GPUs or NPUs that IMBSAM_DEVICES lists
              or that the host shows; 1 on the CPU, whose cores N runs share)
--shard K/M   train only the K-th of M shares of the whole matrix, chosen by a stable hash of each run's name,
              so that M hosts agree on who trains what; then `dvc push --run-cache` from each, and
              `dvc repro --pull` on any renders the one report, training nothing
--dry-run     say what would be trained where, and stop

Each training claims a free device through a lock that the kernel releases when its process ends
(imbsam.device.claims.claim), and checkpoints every epoch outside the experiment's temporary workspace
(IMBSAM_RESUME_DIR, default .resume here): the same command resumes a killed run. `dvc queue status`,
`dvc queue logs NAME` and `dvc exp show` show the runs. Exit status 1 names the runs that failed.
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imbsam import params as schema
from imbsam.device import claims
from imbsam.device.target import preflight
from imbsam.durations import format_duration
from imbsam.errors import InputError
from imbsam.train import RESUME_DIR_ENV, status_file

POLL_SECONDS = 3
REPORT_EVERY_SECONDS = 30
FINISHED = ("Success", "Failed")
# A run's stages, each after the one before: a queued experiment brings the last two (and so the first) up to date,
# so that a run's analysis runs beside the others' too, on the device its training claimed.
RUN_STAGES = ("train", "evaluate", "analyze")


def shard(text):
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise argparse.ArgumentTypeError(f"{text!r}: K/M with 1 <= K <= M, e.g. 1/2")
    return int(match[1]), int(match[2])


def positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1")
    return int(text)


def in_shard(name, part, shares):
    """Whether run `name` is in the part-th (1-based) of `shares` shares: a hash of the name alone, so every
    host assigns it alike, whatever it has already trained."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % shares == part - 1


def matrix(params):
    return [f"{optimizer}-{seed}" for optimizer in params.train.optimizers for seed in params.train.seeds]


def dvc(*args, env=None, capture=True):
    """Run a DVC command; its output captured (in a file: a queue worker it starts keeps its output open
    for as long as it runs, and a pipe would wait for it) or shown."""
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run([sys.executable, "-m", "dvc", *args], stdout=output if capture else None,
                                stderr=subprocess.STDOUT if capture else None, text=True, env=env, check=False)
        output.seek(0)
        result.stdout = output.read() if capture else ""
    if result.returncode != 0:
        detail = result.stdout.strip().splitlines()
        raise InputError(f"`dvc {' '.join(args)}` failed" + (f": {detail[-1]}" if detail else ""))
    return result


def stale(names):
    """The runs whose train@, evaluate@ or analyze@ stage is not up to date in this workspace."""
    changed = json.loads(dvc("status", "--json").stdout or "{}")
    return [name for name in names if any(f"{stage}@{name}" in changed for stage in RUN_STAGES)]


def queue_status():
    """{experiment name: status} of the queue's tasks, read off `dvc queue status`."""
    tasks = {}
    for line in dvc("queue", "status").stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[-1] in ("Queued", "Running", *FINISHED):
            tasks[fields[1]] = fields[-1]
    return tasks


def queue(name):
    """Queue the experiment that brings evaluate@name and analyze@name (and so train@name) up to date; its name."""
    targets = [f"{stage}@{name}" for stage in RUN_STAGES[1:]]
    out = dvc("exp", "run", "--queue", *targets).stdout
    found = re.search(r"Queued experiment '([^']+)'", out)
    if not found:
        raise InputError(f"`dvc exp run --queue {' '.join(targets)}` named no experiment: {out.strip()}")
    return found[1]


def progress_line(runs, tasks, statuses, jobs, epochs):
    """One line: done / running (where, which epoch) / queued / failed, and an estimate of the time left."""
    state = {run: tasks.get(experiment, "Queued") for run, experiment in runs.items()}
    running = [run for run in runs if state[run] == "Running"]
    seen = [s for s in statuses.values() if s.get("epoch_seconds")]
    epoch_seconds = sum(s["epoch_seconds"] for s in seen) / len(seen) if seen else None
    parts = []
    left = 0.0
    for run in running:
        status = statuses.get(run)
        if status:
            doing = "evaluating" if status["finished"] else f"epoch {status['epoch']}/{status['epochs']}"
            parts.append(f"{run} on {status['device']}: {doing}")
            per_epoch = status.get("epoch_seconds") or epoch_seconds or 0
            left += (status["epochs"] - status["epoch"]) * per_epoch
        else:
            parts.append(f"{run}: starting")
    queued = [run for run in runs if state[run] == "Queued"]
    if epoch_seconds:
        left += len(queued) * epochs * epoch_seconds
    counts = {kind: sum(1 for run in runs if state[run] == kind) for kind in ("Success", "Failed")}
    busy = max(1, min(jobs, len(running) + len(queued)))
    eta = f"ETA {format_duration(left / busy)}" if epoch_seconds else "ETA after an epoch"
    return (f"[{time.strftime('%H:%M:%S')}] {counts['Success']}/{len(runs)} done, {len(running)} running"
            + (f" ({'; '.join(parts)})" if parts else "") + f", {len(queued)} queued, {counts['Failed']} failed; "
            + (eta if running or queued else "all finished"))


def read_statuses(resume_dir, runs):
    statuses = {}
    for run in runs:
        path = status_file(resume_dir, run)
        if path.is_file():
            try:
                statuses[run] = json.loads(path.read_text())
            except ValueError:  # written atomically, so never half; an old file of another format
                continue
    return statuses


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m imbsam.matrix", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--jobs", type=positive, help="runs at a time (default: one per device)")
    parser.add_argument("--shard", type=shard, default=(1, 1), help="K/M: train the K-th of M shares")
    parser.add_argument("--dry-run", action="store_true", help="say what would be trained where, and stop")
    args = parser.parse_args(argv)

    if not Path("dvc.yaml").is_file() or not Path(".dvc").is_dir():
        raise InputError("run it at the root of a clone of this project, with DVC initialised (dvc.yaml, .dvc/)")
    params = schema.load("params.yaml")
    preflight(params.device.target)
    target = claims.claim_target(params.device.target)
    pool = claims.device_pool(target) if target != "CPU" else ()
    jobs = args.jobs or max(1, len(pool))
    if pool and jobs > len(pool):
        print(f"--jobs {jobs}: the pool has {len(pool)} {target} devices, so {len(pool)} run at a time")
        jobs = len(pool)
    part, shares = args.shard
    names = [name for name in matrix(params) if in_shard(name, part, shares)]
    where = f"{target} devices {', '.join(map(str, pool))}" if pool else f"the CPU's cores in {jobs} slot(s)"
    print(f"matrix: {len(matrix(params))} runs" + (f", shard {part}/{shares}: {', '.join(names) or 'none'}"
                                                   if shares > 1 else "") + f"; {jobs} at a time on {where}")

    print("bringing download and split up to date")
    if not args.dry_run:
        dvc("repro", "split", capture=False)
    todo = stale(names)
    current = [name for name in names if name not in todo]
    print(f"to train: {', '.join(todo) or 'none'}; up to date: {', '.join(current) or 'none'}")
    if args.dry_run:
        return 0

    resume_dir = Path(os.environ.get(RESUME_DIR_ENV) or ".resume").resolve()
    env = {**os.environ, RESUME_DIR_ENV: str(resume_dir)}
    if target == "CPU":
        env[claims.CPU_SLOTS_ENV] = str(jobs)
    for name in todo:  # a finished status file of an earlier launch would show as this one's progress
        status_file(resume_dir, name).unlink(missing_ok=True)
    runs = {name: queue(name) for name in todo}
    started = time.time()
    failed = []
    if runs:
        print(f"queued as DVC experiments: {', '.join(f'{run} ({exp})' for run, exp in runs.items())}")
        dvc("queue", "start", "-j", str(jobs), env=env)
        try:
            failed = wait(runs, resume_dir, jobs, env, params.train.epochs)
        except KeyboardInterrupt:
            stop(runs)
            print("stopped: run the same command again to resume each run from its last finished epoch")
            return 130
    trained = time.time() - started

    done = [name for name in names if name not in failed]
    print("gathering: dvc repro restores each trained run from the run-cache")
    gather = (["repro"] if shares == 1 and not failed else
              ["repro", *(f"{stage}@{name}" for name in done for stage in RUN_STAGES[1:])])
    gathering = time.time()
    result = dvc(*gather) if done or gather == ["repro"] else None
    if result is not None:
        sys.stdout.write(result.stdout)
        print(f"gathered in {time.time() - gathering:.0f} s")
        retrained = re.findall(r"Running stage '(train@[^']+)'", result.stdout)
        if retrained:
            print(f"warning: the gathering trained {', '.join(retrained)} again: not in the run-cache")
    print(f"trained {len(runs) - len(failed)} run(s) in {format_duration(trained)}"
          + ("; push them for other hosts: dvc push --run-cache" if shares > 1 else ""))
    if failed:
        print("failed: " + "; ".join(f"{run} (its log: dvc queue logs {runs[run]})" for run in failed),
              file=sys.stderr)
        return 1
    return 0


def wait(runs, resume_dir, jobs, env, epochs):
    """Show progress until every queued run has finished; the runs that failed. Workers that stopped with
    runs still queued are started again."""
    last_line, last_time, idle_since = "", 0.0, None
    while True:
        tasks = queue_status()
        line = progress_line(runs, tasks, read_statuses(resume_dir, runs), jobs, epochs)
        body = line.split("] ", 1)[1]
        if body != last_line or time.time() - last_time > REPORT_EVERY_SECONDS:
            print(line, flush=True)
            last_line, last_time = body, time.time()
        states = [tasks.get(experiment) for experiment in runs.values()]
        if all(state in FINISHED for state in states):
            return [run for run, experiment in runs.items() if tasks[experiment] == "Failed"]
        if "Running" not in states:
            idle_since = idle_since or time.time()
            if time.time() - idle_since > 30:
                dvc("queue", "start", "-j", str(jobs), env=env)
                idle_since = None
        else:
            idle_since = None
        time.sleep(POLL_SECONDS)


def stop(runs):
    tasks = queue_status()
    running = [exp for exp in runs.values() if tasks.get(exp) == "Running"]
    queued = [exp for exp in runs.values() if tasks.get(exp) == "Queued"]
    if running:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "kill", *running], check=False)
    if queued:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "remove", *queued], check=False)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
