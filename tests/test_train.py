"""Training runs of ResNet-32 on synthetic splits: learning, the schedule's rates, interruption and resume, the
note on a loss. The loop's parts that need no run (batches, augmentation, bad input) are in
tests/unit/test_train.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imbsam.params import override, params_model
from imbsam.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent


def config_for(optimizer, seed, **changes):
    """The TrainConfig of params.yaml's defaults with {dotted key: value} changes, as `dvc exp run -S` makes."""
    return TrainConfig.from_params(override(params_model()(), changes), optimizer, seed)


def test_short_run_learns_far_above_chance(synthetic_split, tmp_path):
    """resnet32 on the synthetic archive, 100 classes: chance is 1%; a broken gradient stays near it."""
    from imbsam.data.loading import load_split
    from imbsam.train import train

    split = load_split(synthetic_split(50, 10))
    config = config_for("sgd", 0, **{"model.arch": "resnet32", "train.epochs": 1, "train.lr": 0.05,
                                     "train.max_steps_per_epoch": 60, "train.schedule": "step_cosine"})
    result = train(config, split, tmp_path / "out", tmp_path / "resume", progress=False, log=lambda *_: None)
    assert result["history"][-1]["test/all"] > 15.0, result["history"]
    assert (tmp_path / "out" / "model" / "last.ckpt").is_file()
    # What stays is the run's status file, which says it finished.
    assert [p.name for p in (tmp_path / "resume").iterdir()] == ["status"], "the resume checkpoint is removed"
    assert json.loads((tmp_path / "resume" / "status" / "sgd-0.json").read_text())["finished"] is True


RUNNER = """
import json, sys
from imbsam.data.loading import load_split
from imbsam.params import override, params_model
from imbsam.train import TrainConfig, train
run = json.loads(sys.argv[1])
config = TrainConfig.from_params(override(params_model()(), run["changes"]), run["optimizer"], run["seed"])
train(config, load_split(sys.argv[2]), sys.argv[3], sys.argv[4], progress=False)
"""


def _run(config, split, out, resume, wait=True):
    command = [sys.executable, "-c", RUNNER, json.dumps(config), str(split), str(out), str(resume)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
        return output
    return process


def _weights(checkpoint):
    import mindspore as ms

    return {name: p.asnumpy() for name, p in ms.load_checkpoint(str(checkpoint)).items()}


def _wait_for_epoch(resume, epoch, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for state in resume.glob("*/state.json"):
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of epoch {epoch} within {timeout} s")


# Each schedule once; LDAM-DRW's re-weighting starts in the epoch after the interruption, so a resumed run that
# did not set it from the epoch would end elsewhere, and so does SSE-SAM's switch-off of the head's perturbation
# (from step 8 of 12: ceil(3 * 0.5) epochs of 4 steps), which counts the steps the checkpoint restores.
@pytest.mark.parametrize(("signum", "optimizer", "changes"), [
    (signal.SIGKILL, "imbsam", {"train.schedule": "step_cosine", "imbsam.eta": 20}),
    (signal.SIGTERM, "imbsam", {"train.schedule": "epoch_cosine_at_start", "train.loss": "ldam_drw",
                                "ldam_drw.drw_after": 1, "imbsam.eta": 20}),
    (signal.SIGKILL, "sse_sam", {"train.schedule": "step_cosine", "sse_sam.eta": 10, "sse_sam.head_off_after": 0.5}),
])
def test_interrupted_run_resumes_to_the_same_weights(synthetic_split, tmp_path, signum, optimizer, changes):
    split = synthetic_split(20, 5, 0.1)
    config = {"optimizer": optimizer, "seed": 1,
              "changes": {"model.arch": "resnet32", "train.epochs": 3, "train.batch_size": 32,
                          "train.max_steps_per_epoch": 4, **changes}}
    _run(config, split, tmp_path / "straight", tmp_path / "resume-straight")

    process = _run(config, split, tmp_path / "resumed", tmp_path / "resume", wait=False)
    _wait_for_epoch(tmp_path / "resume", 1, process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    if signum == signal.SIGTERM:
        assert "run the same command again to resume" in output, output
    assert not (tmp_path / "resumed" / "train.json").exists()

    output = _run(config, split, tmp_path / "resumed", tmp_path / "resume")
    assert f"resuming {optimizer} seed 1 after epoch" in output, output
    straight = json.loads((tmp_path / "straight" / "train.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "train.json").read_text())
    assert resumed["epochs_completed"] == 3
    assert [h["test/all"] for h in resumed["history"]] == [h["test/all"] for h in straight["history"]]
    expected = _weights(tmp_path / "straight" / "model" / "last.ckpt")
    actual = _weights(tmp_path / "resumed" / "model" / "last.ckpt")
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


@pytest.mark.parametrize("schedule", ["epoch_cosine_at_start", "step_cosine"])
def test_each_epoch_trains_at_its_schedules_rate_and_says_which_are_at_zero(synthetic_split, tmp_path, schedule):
    from imbsam.data.loading import load_split
    from imbsam.schedules import learning_rates
    from imbsam.train import train

    split = load_split(synthetic_split(20, 5))
    config = config_for("sgd", 0, **{"model.arch": "resnet32", "train.epochs": 2, "train.batch_size": 32,
                                     "train.max_steps_per_epoch": 2, "train.schedule": schedule})
    lines = []
    result = train(config, split, tmp_path / "out", tmp_path / "resume", progress=False, log=lines.append)
    rates = learning_rates(schedule, config.lr, 2, 2)
    assert [h["lr"] for h in result["history"]] == pytest.approx([rates[0], rates[2]])
    notes = [line for line in lines if "learning rate 0" in line]
    if schedule == "step_cosine":
        assert not notes
        return
    assert result["history"][0]["lr"] == pytest.approx(config.lr / 2)  # (1 + cos(pi / 2)) / 2
    assert notes == [("note: train.schedule=epoch_cosine_at_start trains epoch 2 of 2 at learning rate 0, as the "
                     "authors' schedule ends; for a run this short, -S train.schedule=step_cosine learns instead")]


def test_a_one_epoch_run_of_the_authors_schedule_leaves_the_weights_where_they_started(synthetic_split, tmp_path):
    """SGD, whose step is all learning rate; SAM's and ImbSAM's w + eps - eps moves weights by float rounding at
    any rate, in the authors' code too."""
    import mindspore as ms

    from imbsam.data.loading import load_split
    from imbsam.models import create_model
    from imbsam.train import train

    split = load_split(synthetic_split(20, 5))
    config = config_for("sgd", 3, **{"model.arch": "resnet32", "train.epochs": 1, "train.batch_size": 32,
                                     "train.max_steps_per_epoch": 3, "train.schedule": "epoch_cosine_at_start"})
    train(config, split, tmp_path / "out", tmp_path / "resume", progress=False, log=lambda *_: None)
    trained = ms.load_checkpoint(str(tmp_path / "out" / "model" / "last.ckpt"))
    initial = create_model("resnet32", split["summary"]["num_classes"], seed=3)
    moved = 0
    for parameter in initial.get_parameters():
        same = np.array_equal(trained[parameter.name].asnumpy(), parameter.asnumpy())
        if parameter.requires_grad:
            assert same, f"{parameter.name} moved at learning rate 0"
        else:
            moved += not same  # the BatchNorm running statistics still follow the batches
    assert moved > 0


@pytest.mark.parametrize(("loss", "noted"), [("ce", True), ("logit_adjusted", False)])
def test_a_method_off_the_loss_its_defaults_were_tuned_with_says_so(synthetic_split, tmp_path, loss, noted):
    from imbsam.data.loading import load_split
    from imbsam.train import train

    config = config_for("focal_sam", 0, **{"model.arch": "resnet32", "train.epochs": 1, "train.batch_size": 16,
                                           "train.max_steps_per_epoch": 1, "train.loss": loss})
    lines = []
    train(config, load_split(synthetic_split(20, 5)), tmp_path / "out", tmp_path / "resume", progress=False,
          log=lines.append)
    note = ("note: Focal-SAM's defaults come from its authors' runs with train.loss=logit_adjusted; this run uses "
            f"train.loss={loss}")
    assert (note in lines) is noted
