"""The sweep report over real DVC experiments: two datasets x two losses x two optimizers on synthetic archives,
read back through `dvc exp show` by `python -m imbsam.sweep`; and its grouping on its own."""

import sys

import pytest
from workspace import dvc, ok, project_copy, run

from imbsam import sweep

SMOKE = {"model.arch": "resnet32", "train.optimizers": ["sgd", "imbsam"], "train.seeds": [0], "train.epochs": 1,
         "train.max_steps_per_epoch": 2, "train.batch_size": 16, "train.schedule": "step_cosine",
         "ldam_drw.drw_after": 0}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, synthetic_archive):
    cifar100 = synthetic_archive(train_per_class=20, test_per_class=5)
    cifar10 = synthetic_archive(train_per_class=100, test_per_class=5, dataset="cifar10")
    root = project_copy(tmp_path_factory.mktemp("sweep") / "repo", *cifar100, SMOKE)
    for dataset, (archive, md5) in (("cifar100", cifar100), ("cifar10", cifar10)):
        for loss in ("ce", "ldam_drw"):
            ok(dvc(root, "exp", "run", "--name", f"{dataset}-{loss}", "-S", f"data.dataset={dataset}",
                   "-S", f"data.url={archive}", "-S", f"data.md5={md5}", "-S", f"train.loss={loss}"))
    result = ok(run([sys.executable, "-m", "imbsam.sweep"], root))
    return root, result, (root / "reports" / "sweep.md").read_text()


def _sections(text):
    """heading -> body of every setting's section."""
    return dict(part.split("\n", 1) for part in text.split("\n## ")[1:])


def test_every_setting_has_both_optimizers_with_their_seed_count(swept):
    _, result, text = swept
    assert "wrote reports/sweep.md: 4 settings, 8 runs" in result.stdout
    assert "differs from the repository's defaults in: model.arch=resnet32, train.batch_size=16, " in text
    sections = _sections(text)
    assert sorted(sections) == ["CIFAR-10-LT, imbalance factor 100, CE loss",
                                "CIFAR-10-LT, imbalance factor 100, LDAM-DRW loss (ldam_drw.drw_after=0)",
                                "CIFAR-100-LT, imbalance factor 100, CE loss",
                                "CIFAR-100-LT, imbalance factor 100, LDAM-DRW loss (ldam_drw.drw_after=0)"]
    for section in sections.values():
        ours = section.split("Published, ")[0]
        rows = [line for line in ours.splitlines() if line.startswith(("| SGD ", "| ImbSAM "))]
        assert len(rows) == 2 and all(row.rstrip(" |").endswith("1") for row in rows), section
        assert "Not the official archive" in section


def test_published_numbers_stand_beside_their_setting_only(swept):
    text = swept[2]
    cifar100_ce = _sections(text)["CIFAR-100-LT, imbalance factor 100, CE loss"]
    assert "Published, Paper (PyTorch)" in cifar100_ce and "Published, SSE-SAM's re-runs" in cifar100_ce
    assert "its ImbSAM row is SSE-SAM's implementation" in cifar100_ce
    assert text.count("Published, ") == 3


def _entry(name, dataset="cifar100", loss="ce", seeds=None, **changes):
    from imbsam.params import file_defaults

    params = file_defaults()
    params["data"]["dataset"] = dataset
    params["train"]["loss"] = loss
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    return name, params, seeds


def test_seeds_pool_across_experiments_count_once_and_other_params_stay_apart():
    groups = {"many": 50.0, "medium": 30.0, "few": 10.0, "all": 30.0}
    found = [_entry("a", seeds={"sgd": {"1": groups}}),
             _entry("b", seeds={"sgd": {"2": {**groups, "all": 34.0}, "1": {**groups, "all": 99.0}}}),
             _entry("c", seeds={"sgd": {"1": groups}}, imbsam__rho=0.1, train__optimizers=["sgd", "imbsam"]),
             _entry("d", seeds={"sgd": {"1": groups}}, focal_sam__rho=0.1)]
    settings = sweep.collect(found)
    plain = settings[("cifar100", 100, "ce", ())]
    # Seed 1 of b repeats a's: the first listed counts. d's focal_sam.rho is no run's: the same setting, and d adds
    # only a seed already counted.
    assert sorted(e["seed"] for e in plain["evals"]) == [1, 2] and plain["experiments"] == ["a", "b"]
    assert settings[("cifar100", 100, "ce", ("imbsam.rho=0.1",))]["experiments"] == ["c"]
    text = sweep.render(settings)
    sgd = next(line for line in text.splitlines() if line.startswith("| SGD "))
    assert [cell.strip() for cell in sgd.strip("|").split("|")] == [
        "SGD", "50.0 ± 0.0", "30.0 ± 0.0", "10.0 ± 0.0", "32.0 ± 2.8", "2"]
    assert "## CIFAR-100-LT, imbalance factor 100, CE loss (imbsam.rho=0.1)" in text
