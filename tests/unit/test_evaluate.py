"""Per-class and group accuracy on hand-computed cases; flip TTA and checkpoints on real MindSpore cells."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
import yaml
from mindspore import nn, ops

from imbsam import predictions
from imbsam.data.augment import normalize
from imbsam.evaluate import (
    evaluate_checkpoint,
    evaluate_network,
    group_accuracy,
    load_weights,
    per_class_accuracy,
    predict_variants,
    summarize,
)

REPO = Path(__file__).resolve().parents[2]


def test_per_class_accuracy_from_a_hand_counted_confusion():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 1, 0, 1, 0, 2]
    accuracy = per_class_accuracy(predictions, labels, num_classes=4)
    # Class 0: 2 of 3 right, class 1: 1 of 2, class 2: 1 of 1, class 3: no test sample.
    assert accuracy[:3].tolist() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert math.isnan(accuracy[3])


def test_predictions_of_an_absent_class_count_as_errors_of_the_true_class():
    accuracy = per_class_accuracy([3, 3, 0], [0, 0, 0], num_classes=4)
    assert accuracy[0] == pytest.approx(1 / 3)
    assert np.isnan(accuracy[1:]).all()


def test_per_class_accuracy_rejects_mismatched_or_out_of_range_labels():
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        per_class_accuracy([0, 1], [0, 1, 1], num_classes=2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        per_class_accuracy([0, 1], [0, 2], num_classes=2)


def test_group_accuracy_is_balanced_nan_safe_and_none_for_empty_groups():
    per_class = np.array([2 / 3, 1 / 2, 1.0, np.nan])
    groups = {"many": [0], "medium": [1, 3], "few": []}
    result = group_accuracy(per_class, groups)
    assert result["many"] == pytest.approx(200 / 3)
    # Class 3 has no test sample: the medium figure is class 1's alone, not dragged down by a NaN.
    assert result["medium"] == pytest.approx(50.0)
    assert result["few"] is None
    # Balanced: the mean of the three classes present, not the 4 of 6 samples right.
    assert result["all"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 1) / 3)


def test_a_group_of_absent_classes_is_none():
    result = group_accuracy(np.array([1.0, np.nan, np.nan]), {"many": [0], "medium": [], "few": [1, 2]})
    assert result == {"many": 100.0, "medium": None, "few": None, "all": 100.0}


def test_summarize_is_strict_json():
    result = summarize([0, 1, 1], [0, 0, 1], {"many": [0], "medium": [1], "few": [2]}, num_classes=3)
    assert result["per_class"] == [50.0, 100.0, None]
    assert json.loads(json.dumps(result, allow_nan=False))["few"] is None


class LeftHalfDetector(nn.Cell):
    """Class 0 scores the mean of the left half of the image, class 1 a constant threshold.

    Mirroring moves the left half to the right, so the scores of an image and of its mirror image
    differ: flip TTA averages them and can change the prediction.
    """

    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold
        self.bn = nn.BatchNorm2d(3)

    def construct(self, x):
        # In training mode BatchNorm would standardise over the batch and erase the brightness cue.
        left = self.bn(x)[:, :, :, :16].mean(axis=(1, 2, 3))
        return ops.stack([left, ops.full_like(left, self.threshold)], axis=1)


@pytest.fixture(name="half_images")
def fixture_half_images():
    """Image 0: bright left half, dark right half; image 1: its mirror image."""
    bright_left = np.zeros((3, 32, 32), dtype=np.uint8)
    bright_left[:, :, :16] = 255
    return np.stack([bright_left, bright_left[:, :, ::-1]])


def _threshold(images):
    """Between the bright-left score and the flip-averaged score: plain says class 0, TTA says class 1."""
    normalized = normalize(images[:1])
    bright, dark = normalized[..., :16].mean(), normalized[..., 16:].mean()
    return float((bright + (bright + dark) / 2) / 2)


def test_flip_tta_averages_the_logits_of_the_mirror_image(half_images):
    network = LeftHalfDetector(_threshold(half_images))
    network.set_train(True)
    predicted = predict_variants(network, half_images)
    assert predicted["plain"].tolist() == [0, 1]
    assert predicted["flip_tta"].tolist() == [1, 1]
    assert not network.training


def test_predict_variants_does_not_depend_on_the_batch_size(half_images):
    network = LeftHalfDetector(_threshold(half_images))
    images = np.concatenate([half_images] * 3)
    one_by_one = predict_variants(network, images, batch_size=1)
    at_once = predict_variants(network, images, batch_size=500)
    for variant in ("plain", "flip_tta"):
        assert one_by_one[variant].tolist() == at_once[variant].tolist()


def test_evaluate_network_reports_both_variants(half_images):
    network = LeftHalfDetector(_threshold(half_images))
    groups = {"many": [0], "medium": [1], "few": []}
    results = evaluate_network(network, half_images, np.array([0, 1]), groups, num_classes=2)
    assert results["plain"]["tta"] is False and results["flip_tta"]["tta"] is True
    assert results["plain"]["per_class"] == [100.0, 100.0]
    # TTA turns image 0 (true class 0) into class 1.
    assert results["flip_tta"]["per_class"] == [0.0, 100.0]
    assert results["flip_tta"]["all"] == pytest.approx(50.0) and results["flip_tta"]["few"] is None


def _linear(seed):
    network = nn.SequentialCell([nn.Flatten(), nn.Dense(3 * 32 * 32, 4)])
    rng = np.random.default_rng(seed)
    for parameter in network.trainable_params():
        parameter.set_data(ms.Tensor(rng.normal(size=parameter.shape).astype(np.float32)))
    return network


def test_a_checkpoint_restores_the_predictions(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8)
    trained = _linear(seed=1)
    ms.save_checkpoint(trained, str(tmp_path / "last.ckpt"))
    fresh = _linear(seed=2)
    assert predict_variants(fresh, images)["plain"].tolist() != predict_variants(trained, images)["plain"].tolist()
    labels = predict_variants(trained, images)["plain"]
    results = evaluate_checkpoint(fresh, tmp_path / "last.ckpt", images, labels,
                                  {"many": [0, 1], "medium": [2, 3], "few": []}, num_classes=4)
    assert results["plain"]["all"] == pytest.approx(100.0)


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    ms.save_checkpoint(nn.Dense(4, 2), str(tmp_path / "other.ckpt"))
    with pytest.raises(ValueError, match="lacks 2 network parameters"):
        load_weights(_linear(seed=0), tmp_path / "other.ckpt")


def _stage_workspace(root, **overrides):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["arch"] = "resnet32"
    params["device"]["target"] = "CPU"
    for dotted, value in overrides.items():
        group, key = dotted.split(".")
        params[group][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def _run_evaluate_stage(cwd, optimizer="sgd", seed=3):
    return subprocess.run([sys.executable, "-m", "stages.evaluate", "--optimizer", optimizer, "--seed", str(seed)],
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600, check=False)


def test_evaluate_stage_rejects_a_bad_batch_size_before_any_work(tmp_path):
    _stage_workspace(tmp_path, **{"eval.batch_size": 0})
    result = _run_evaluate_stage(tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: params.yaml: eval.batch_size=0 is invalid: input should be greater than or equal to 1"), lines


def test_evaluate_stage_names_the_missing_training_run(tmp_path):
    _stage_workspace(tmp_path)
    result = _run_evaluate_stage(tmp_path)
    assert result.returncode == 1
    assert "runs/sgd-3/train.json not found: run `dvc repro train@sgd-3` first" in result.stderr


def test_evaluate_stage_writes_all_four_variants(tmp_path):
    """Two real resnet32 checkpoints (different weights, so both are evaluated) on a 100-image test split."""
    from imbsam.data.split import write_split
    from imbsam.models import create_model

    _stage_workspace(tmp_path)
    rng = np.random.default_rng(0)
    train_labels = np.repeat(np.arange(100), 2).astype(np.int32)
    test_labels = np.arange(100).astype(np.int32)
    write_split(tmp_path / "data" / "split",
                rng.integers(0, 256, size=(200, 3, 32, 32), dtype=np.uint8), train_labels,
                rng.integers(0, 256, size=(100, 3, 32, 32), dtype=np.uint8), test_labels,
                [f"class{c}" for c in range(100)], imb_factor=0.01, profile="exp", shuffle_seed=-1,
                many_threshold=100, few_threshold=20, synthetic=True)
    run_dir = tmp_path / "runs" / "sgd-3"
    (run_dir / "model").mkdir(parents=True)
    for selection, seed in (("last", 0), ("best", 1)):
        checkpoint = run_dir / "model" / f"{selection}.ckpt"
        ms.save_checkpoint(create_model("resnet32", num_classes=100, seed=seed), str(checkpoint))
    (run_dir / "train.json").write_text(json.dumps({"optimizer": "sgd", "seed": 3, "arch": "resnet32",
                                                    "best_epoch": 2, "last_epoch": 4}))

    result = _run_evaluate_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "evals" / "sgd-3.json").read_text())
    assert {k: record[k] for k in ("optimizer", "seed", "arch", "test_total", "num_classes")} == {
        "optimizer": "sgd", "seed": 3, "arch": "resnet32", "test_total": 100, "num_classes": 100}
    for selection, epoch in (("last", 4), ("best", 2)):
        for variant, tta in (("plain", False), ("flip_tta", True)):
            entry = record["variants"][selection][variant]
            assert entry["epoch"] == epoch and entry["tta"] is tta
            assert len(entry["per_class"]) == 100
            # Every class has 2 training images, so all are few: many and medium are empty.
            assert entry["many"] is None and entry["medium"] is None
            assert entry["few"] == pytest.approx(entry["all"])
    # The per-image predictions beside it, in the split's test order, are what the record's accuracies count.
    stored = predictions.read(tmp_path / "evals" / "sgd-3.predictions.npz")
    assert sorted(stored) == ["best", "best_tta", "labels", "last", "last_tta"]
    assert stored["labels"].tolist() == test_labels.tolist() and all(a.dtype.kind == "i" for a in stored.values())
    for selection in ("last", "best"):
        for variant, suffix in (("plain", ""), ("flip_tta", "_tta")):
            right = stored[selection + suffix] == test_labels
            assert 100 * right.mean() == pytest.approx(record["variants"][selection][variant]["all"])
    assert "sgd-3: balanced test accuracy (%)" in result.stdout
