"""The download and split stages under real `dvc repro`, in a throwaway git + DVC repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from imbsam.data.checksum import md5sum
from imbsam.data.split import class_groups, longtail_counts

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1"}


def _run(args, cwd):
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)


def _dvc(cwd, *args):
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _set_params(root, **changes):
    """changes: dotted key -> value, e.g. data__md5="..." for data.md5."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in changes.items():
        group, name = key.split("__")
        params[group][name] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def repo(tmp_path, synthetic_archive):
    """A copy of the project wired to a small synthetic archive (100 train, 10 test images per class)."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    for name in ("stages", "imbsam"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    assert _run(["git", "init", "-q"], root).returncode == 0
    assert _dvc(root, "init", "-q").returncode == 0
    archive, md5 = synthetic_archive(train_per_class=100, test_per_class=10)
    _set_params(root, data__url=str(archive), data__md5=md5)
    return root


def _split_files(root):
    return {p.name: p.read_bytes() for p in (root / "data" / "split").iterdir()}


def test_repro_split_then_a_wrong_md5_keeps_the_good_outputs(repo):
    result = _dvc(repo, "repro", "split")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "split: imb_factor 0.01 (exp)" in result.stdout and "synthetic archive" in result.stderr

    summary = json.loads((repo / "data" / "split" / "summary.json").read_text())
    counts = longtail_counts(100, 100, 0.01)
    assert summary["class_counts"] == counts and summary["train_total"] == sum(counts)
    assert summary["test_total"] == 1000 and summary["synthetic"] is True
    assert (summary["imb_factor"], summary["profile"], summary["shuffle_seed"]) == (0.01, "exp", None)
    assert summary["groups"] == class_groups(counts) and len(summary["groups"]["few"]) == 65
    labels = np.load(repo / "data" / "split" / "train_labels.npy")
    assert np.bincount(labels, minlength=100).tolist() == counts
    assert np.load(repo / "data" / "split" / "test_images.npy").shape == (1000, 3, 32, 32)
    archive_md5 = md5sum(repo / "data" / "archive" / "cifar-100-python.tar.gz")
    good_split = _split_files(repo)

    wrong = "0" * 32
    _set_params(repo, data__md5=wrong)
    result = _dvc(repo, "repro", "split")
    assert result.returncode != 0
    assert f"expected {wrong}, got {archive_md5}" in result.stderr
    assert md5sum(repo / "data" / "archive" / "cifar-100-python.tar.gz") == archive_md5
    assert _split_files(repo) == good_split
    assert sorted(p.name for p in (repo / "data").iterdir()) == [".gitignore", "archive", "split"]
    assert [p.name for p in (repo / "data" / "archive").iterdir()] == ["cifar-100-python.tar.gz"]


def test_cifar10_is_one_param_and_switching_back_downloads_nothing(repo, synthetic_archive):
    cifar100_archive = repo / "data" / "archive" / "cifar-100-python.tar.gz"
    assert _dvc(repo, "repro", "split").returncode == 0
    archive, md5 = synthetic_archive(train_per_class=200, test_per_class=10, dataset="cifar10")
    _set_params(repo, data__dataset="cifar10", data__url=str(archive), data__md5=md5)
    result = _dvc(repo, "repro", "split")
    assert result.returncode == 0, result.stderr
    summary = json.loads((repo / "data" / "split" / "summary.json").read_text())
    # auto thresholds: CIFAR-10's 1000 / 200, so at 200 images a class and IF 100 every class is medium or few.
    counts = longtail_counts(10, 200, 0.01)
    assert summary["dataset"] == "cifar10" and summary["class_counts"] == counts and summary["num_classes"] == 10
    assert summary["groups"] == class_groups(counts, 1000, 200) and summary["test_total"] == 100
    assert sorted(p.name for p in (repo / "data" / "archive").iterdir()) == [
        "cifar-10-python.tar.gz", "cifar-100-python.tar.gz"]
    # Back to CIFAR-100 from a source that no longer exists: the kept archive is used, nothing is fetched.
    _set_params(repo, data__dataset="cifar100", data__url=str(repo / "gone.tar.gz"),
                data__md5=md5sum(cifar100_archive))
    result = _dvc(repo, "repro", "split")
    assert result.returncode == 0, result.stderr
    assert json.loads((repo / "data" / "split" / "summary.json").read_text())["num_classes"] == 100


def test_bad_imb_factor_fails_before_any_work(repo):
    _set_params(repo, split__imb_factor=1.5)
    result = _dvc(repo, "repro", "split")
    assert result.returncode != 0
    expected = "error: params.yaml: split.imb_factor=1.5 is invalid: input should be less than or equal to 1"
    assert expected in result.stderr
    # The first stage to run, download, checks the whole of params.yaml: nothing is downloaded either.
    assert not (repo / "data").exists()

    # Run alone, with no archive yet: the parameter is still what it reports, not the missing archive.
    result = _run([sys.executable, "-m", "stages.split"], repo)
    assert result.returncode == 1 and "split.imb_factor=1.5" in result.stderr


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("split__profile", "linear", "split.profile='linear' is invalid: input should be 'exp' or 'step'"),
        ("split__shuffle_seed", -2, "split.shuffle_seed=-2 is invalid: input should be greater than or equal to -1"),
        ("split__few_threshold", 200, "split.few_threshold=200 is invalid: must not exceed split.many_threshold"),
    ],
)
def test_split_stage_checks_each_param_first(repo, key, value, message):
    _set_params(repo, **{key: value})
    result = _run([sys.executable, "-m", "stages.split"], repo)
    assert result.returncode == 1 and message in result.stderr


def test_download_stage_checks_the_md5_format_first(repo):
    _set_params(repo, data__md5=12345)
    result = _run([sys.executable, "-m", "stages.download"], repo)
    expected = ("data.md5=12345 is invalid: input should be a valid string (data.md5: auto (the official archive's) | "
                "the archive's md5, 32 hex")
    assert result.returncode == 1 and expected in result.stderr
    assert not (repo / "data").exists()
