"""The sweep report over real DVC experiments: two datasets x two losses x two optimizers on synthetic archives,
read back through `dvc exp show` by `python -m imbsam.sweep`. Its grouping on its own is in
tests/unit/test_sweep.py."""

import re
import sys

import pytest
from workspace import dvc, ok, project_copy, run

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
        ours = section.split("Published, ")[0].split("Mechanism, ")[0]
        rows = [line for line in ours.splitlines() if line.startswith(("| SGD ", "| ImbSAM "))]
        assert len(rows) == 2 and all(row.rstrip(" |").endswith("1") for row in rows), section
        # Each experiment's analysis, from its seeds.json, pooled as its accuracies are.
        assert "| SGD | few | " in section.split("Mechanism, ")[1] and "| ImbSAM | few | " in section, section
        assert "Not the official archive" in section
        # Each experiment's verdicts on the claims its runs could test (SGD and ImbSAM: the ImbSAM paper's
        # differences between them), read back from its reports/claims.json.
        verdicts = section.split("The papers' claims, ")[1]
        judged = r"(holds|contradicted|inconclusive) \(off-setting\) +\|"
        assert re.search(rf"^\| ImbSAM above SGD on all classes +\|( {judged})+$", verdicts, re.MULTILINE), section


def test_published_numbers_stand_beside_their_setting_only(swept):
    text = swept[2]
    cifar100_ce = _sections(text)["CIFAR-100-LT, imbalance factor 100, CE loss"]
    assert "Published, Paper (PyTorch)" in cifar100_ce and "Published, SSE-SAM's re-runs" in cifar100_ce
    assert "its ImbSAM row is SSE-SAM's implementation" in cifar100_ce
    assert text.count("Published, ") == 3
