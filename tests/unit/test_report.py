"""The report from hand-made evaluation records, train.json files and dvclive curves.

Six classes: 0-1 many, 2-3 medium, 4-5 few. Every expected number below is worked out by hand from
the per-class accuracies the fixture writes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from imbsam import params as schema
from imbsam import published, report

REPO = Path(__file__).resolve().parents[2]
GROUPS = {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
CLASS_COUNTS = [500, 200, 50, 30, 10, 5]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Per-class accuracy (%) of the best epoch with flip TTA; the other variants subtract an offset.
BEST_TTA = {
    ("sgd", 1): [90, 80, 60, 40, 20, 10],   # many 85, medium 50, few 15, all 50
    ("sgd", 2): [94, 84, 64, 44, 24, 14],   # many 89, medium 54, few 19, all 54
    ("imbsam", 1): [80, 70, 70, 50, 40, 30],  # many 75, medium 60, few 35, all 56.67
    ("imbsam", 2): [76, 66, 66, 46, 36, 26],  # many 71, medium 56, few 31, all 52.67
}
OFFSETS = {("best", "flip_tta"): 0, ("best", "plain"): 2, ("last", "flip_tta"): 3, ("last", "plain"): 5}


def _mean(values):
    return sum(values) / len(values) if values else None


def _variant(per_class, epoch, tta, groups=GROUPS):
    result = {"epoch": epoch, "tta": tta, "per_class": per_class}
    result.update({name: _mean([per_class[c] for c in classes]) for name, classes in groups.items()})
    result["all"] = _mean(per_class)
    return result


def eval_record(optimizer, seed, groups=GROUPS):
    variants = {}
    for (selection, variant), offset in OFFSETS.items():
        per_class = [a - offset for a in BEST_TTA[(optimizer, seed)]]
        epoch = 7 if selection == "best" else 10
        variants.setdefault(selection, {})[variant] = _variant(per_class, epoch, variant == "flip_tta", groups)
    return {"optimizer": optimizer, "seed": seed, "arch": "resnet32", "num_classes": 6, "test_total": 600,
            "device": {"target": "CPU"}, "variants": variants}


TEST_LABELS = np.repeat(np.arange(6), 100)


def predictions(optimizer, seed):
    """Per-image predictions with exactly the per-class accuracies of eval_record: in class c, the first
    `accuracy` of its 100 images right, the others taken for the next class."""
    arrays = {"labels": TEST_LABELS}
    for (selection, variant), offset in OFFSETS.items():
        accuracy = [a - offset for a in BEST_TTA[(optimizer, seed)]]
        right = np.arange(600) % 100 < np.repeat(accuracy, 100)
        arrays[f"{selection}{'_tta' if variant == 'flip_tta' else ''}"] = np.where(right, TEST_LABELS,
                                                                                (TEST_LABELS + 1) % 6)
    return arrays


# Per group, lambda_max of SGD; ImbSAM's is half, and seed s adds s. The other quantities follow from it.
LAMBDA_MAX = {"many": 10.0, "medium": 20.0, "few": 80.0}


def analysis_record(optimizer, seed):
    groups = {}
    for group, base in LAMBDA_MAX.items():
        lambda_max = (base if optimizer == "sgd" else base / 2) + seed
        groups[group] = {"train_acc": 90.0, "test_acc": 90.0 - lambda_max / 2, "gap": lambda_max / 2,
                         "train_loss": 0.1, "test_loss": 1.0, "lambda_max": lambda_max, "lambda_min": -lambda_max / 10,
                         "saddle_ratio": 0.1, "trace": 10 * lambda_max, "trace_stderr": 1.0,
                         "rho_sharpness": lambda_max / 100, "samples": 8, "hessian_vector_products": 5,
                         "seconds": 1.0, "nodes": [[-lambda_max / 10, 0.0, lambda_max]], "weights": [[0.2, 0.5, 0.3]]}
    return {"optimizer": optimizer, "seed": seed, "arch": "resnet32", "epoch": 10, "checkpoint": "last",
            "settings": {"samples_per_group": 8, "lanczos_steps": 3, "lanczos_runs": 1, "hutchinson_samples": 2,
                         "rho": 0.05, "seed": 0, "batch_size": 8},
            "weight_norm": 50.0 + seed, "groups": groups}


def train_record(optimizer, seed, params):
    return {"optimizer": optimizer, "seed": seed, "arch": params["model"]["arch"], "epochs": 10,
            "epochs_completed": 10, "best_epoch": 7, "last_epoch": 10, "wall_time_s": 95.0,
            "train_img_per_s": 123.4, "steps_per_epoch": 5, "max_steps_per_epoch": 5,
            "device": {"target": "CPU", "mode": "pynative", "threads": 2, "mindspore": "2.10.0",
                       "kernels": "onednn"}, "params": params}


def summary(synthetic):
    return {"imb_factor": 0.01, "profile": "exp", "num_classes": 6, "class_names": list("abcdef"),
            "class_counts": CLASS_COUNTS, "groups": GROUPS, "many_threshold": 100, "few_threshold": 20,
            "train_total": sum(CLASS_COUNTS), "test_total": 600, "synthetic": synthetic}


def paper_params():
    """The repository's params.yaml as the report stage gets it (validated, auto resolved): the paper's protocol."""
    return schema.load(REPO / "params.yaml").model_dump()


def smoke_params(optimizers=("sgd", "imbsam"), seeds=(1, 2)):
    params = paper_params()
    params["model"]["arch"] = "resnet32"
    params["train"].update(epochs=10, max_steps_per_epoch=5, optimizers=list(optimizers), seeds=list(seeds))
    return params


RUNS = [("sgd", 1), ("sgd", 2), ("imbsam", 1)]
MATRIX = [("sgd", 1), ("sgd", 2), ("imbsam", 1), ("imbsam", 2)]


def write_workspace(root, params, synthetic=True, runs=MATRIX):
    """What the report stage reads: params.yaml, the split summary, evals/ and runs/."""
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data" / "split").mkdir(parents=True)
    (root / "data" / "split" / "summary.json").write_text(json.dumps(summary(synthetic)))
    (root / "evals").mkdir()
    (root / "analysis").mkdir()
    for optimizer, seed in runs:
        name = f"{optimizer}-{seed}"
        (root / "evals" / f"{name}.json").write_text(json.dumps(eval_record(optimizer, seed)))
        np.savez(root / "evals" / f"{name}.predictions.npz", **predictions(optimizer, seed))
        (root / "analysis" / f"{name}.json").write_text(json.dumps(analysis_record(optimizer, seed)))
        run_dir = root / "runs" / name
        metric_dir = run_dir / "live" / "plots" / "metrics"
        curves = (("test/all", "all", [10 + seed, 30, 40]), ("train/loss", "loss", [4.0, 3.1, 2.5]))
        for metric, column, values in curves:
            path = metric_dir / f"{metric}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step\t{column}\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))
        (run_dir / "train.json").write_text(json.dumps(train_record(optimizer, seed, params)))


def table_rows(markdown):
    """Cells of every github-table body row, stripped: independent of column widths."""
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("|") and not line.startswith("|--")]


def run_stage(cwd):
    """The report stage of this checkout, run in the workspace cwd."""
    return subprocess.run([sys.executable, "-m", "stages.report"], cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120, check=False)


def render(root, params, **workspace):
    """The report stage run on a written workspace: its report.md."""
    write_workspace(root, params, **workspace)
    result = run_stage(root)
    assert result.returncode == 0, result.stderr
    return (root / "reports" / "report.md").read_text()


def _records():
    return [eval_record(optimizer, seed) for optimizer, seed in RUNS]


def test_aggregate_mean_and_sample_std_over_seeds():
    aggregated = report.aggregate(_records(), "best", flip_tta=True)
    assert list(aggregated) == ["sgd", "imbsam"]
    sgd = aggregated["sgd"]
    assert sgd["seeds"] == [1, 2]
    assert sgd["mean"] == pytest.approx({"many": 87.0, "medium": 52.0, "few": 17.0, "all": 52.0})
    # Two seeds 4 points apart: sample std = 4 / sqrt(2).
    assert sgd["std"] == pytest.approx({k: 2 ** 1.5 for k in report.GROUP_KEYS})
    assert aggregated["imbsam"]["std"] is None
    clean = report.aggregate(_records(), "last", flip_tta=False)
    assert clean["sgd"]["mean"] == pytest.approx({"many": 82.0, "medium": 47.0, "few": 12.0, "all": 47.0})


def test_rows_follow_the_order_of_the_evals_given_and_seeds_are_sorted():
    """The report stage gives the evals in train.optimizers' order: the table keeps it."""
    records = [eval_record("imbsam", 1), eval_record("sgd", 2), eval_record("sgd", 1)]
    aggregated = report.aggregate(records, "best", True)
    assert list(aggregated) == ["imbsam", "sgd"] and aggregated["sgd"]["seeds"] == [1, 2]
    assert list(report.aggregate(records[::-1], "best", True)) == ["sgd", "imbsam"]


def test_an_empty_group_stays_none_through_tables_and_metrics():
    groups = {"many": [0, 1, 2, 3], "medium": [4, 5], "few": []}
    aggregated = report.aggregate([eval_record("sgd", 1, groups)], "best", True)
    assert aggregated["sgd"]["mean"]["few"] is None
    assert report.metrics(aggregated)["sgd"]["few"] is None
    assert ["SGD", "67.5", "15.0", "n/a", "50.0", "1"] in table_rows(report.results_table(aggregated))
    assert "13.5 (n/a)" in report.comparison_table(aggregated, published.PUBLISHED[0].results)


def test_comparison_shows_published_value_and_our_signed_difference():
    aggregated = report.aggregate(_records(), "best", True)
    table = report.comparison_table(aggregated, published.PUBLISHED[0].results)
    # SGD: ours 87 / 52 / 17 / 52; ImbSAM: ours 75 / 60 / 35 / 56.67.
    assert table_rows(table)[1:] == [["SGD", "77.8 (+9.2)", "46.6 (+5.4)", "13.5 (+3.5)", "47.6 (+4.4)"],
                                     ["ImbSAM", "75.9 (\u22120.9)", "53.5 (+6.5)", "19.4 (+15.6)", "51.1 (+5.6)"]]


def test_the_repository_defaults_are_the_paper_protocol():
    assert report.differences_from_paper(paper_params()) == []
    assert report.comparability_warnings(paper_params(), summary(synthetic=False)) == []


def test_smoke_config_is_flagged_with_every_reason():
    warnings = report.comparability_warnings(smoke_params(), summary(synthetic=True))
    text = "\n".join(warnings)
    for expected in ("`model.arch` = 'resnet32'", "`train.epochs` = 10", "`train.max_steps_per_epoch` = 5",
                     "synthetic"):
        assert expected in text
    # Seeds and optimizers change what is run, not how: they are stated, not warned about.
    assert "train.seeds" not in text and "train.optimizers" not in text


def test_imbalance_factor_and_float_params_compare_by_value():
    params = paper_params()
    params["split"]["imb_factor"] = 0.02
    params["train"]["lr"] = 1e-2
    assert [key for key, _, _ in report.differences_from_paper(params)] == ["split.imb_factor"]


def test_read_metric_tsv_takes_the_value_column_whatever_its_name(tmp_path):
    path = tmp_path / "acc.tsv"
    path.write_text("step\tacc\ttimestamp\n0\t0.25\t1700000000\n1\t0.5\t1700000100\n")
    steps, values = report.read_metric_tsv(path)
    assert steps.tolist() == [0, 1] and values.tolist() == [0.25, 0.5]


def test_git_state_outside_a_repository(tmp_path):
    assert report.git_state(tmp_path).startswith("no git commit")


def test_report_stage_renders_tables_figures_and_metrics(tmp_path):
    md = render(tmp_path, smoke_params())
    reports = tmp_path / "reports"
    assert "WARNING: these numbers are not comparable" in md
    assert "2 seeds (1, 2)" in md and "`eval.selection=best`, `eval.flip_tta=true`" in md
    # Selected protocol (best, TTA), then the clean one (last, no TTA).
    rows = table_rows(md)
    assert ["SGD", "87.0 ± 2.8", "52.0 ± 2.8", "17.0 ± 2.8", "52.0 ± 2.8", "2"] in rows
    assert ["ImbSAM", "73.0 ± 2.8", "58.0 ± 2.8", "33.0 ± 2.8", "54.7 ± 2.8", "2"] in rows
    assert ["SGD", "82.0 ± 2.8", "47.0 ± 2.8", "12.0 ± 2.8", "47.0 ± 2.8", "2"] in rows
    assert ["ImbSAM", "68.0 ± 2.8", "53.0 ± 2.8", "28.0 ± 2.8", "49.7 ± 2.8", "2"] in rows
    assert ["ImbSAM", "75.9 (\u22122.9)", "53.5 (+4.5)", "19.4 (+13.6)", "51.1 (+3.6)"] in rows
    assert ["ImbSAM", "63.2 (+9.8)", "43.4 (+14.6)", "11.4 (+21.6)", "40.7 (+14.0)"] in rows
    assert ["sgd-1", "CPU (pynative, 2 threads, onednn kernels)", "10/10", "7", "10", "5", "1.6 min",
            "123.4"] in rows
    assert ["`train.epochs`", "10", "200"] in rows
    assert md.index("## Results") < md.index("### Clean protocol") < md.index("## Against the published numbers")
    assert "No per-epoch curves" not in md
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics == {"sgd": {"many": 87.0, "medium": 52.0, "few": 17.0, "all": 52.0},
                       "imbsam": {"many": 73.0, "medium": 58.0, "few": 33.0, "all": pytest.approx(54.6667)}}
    for figure in ("per_class.png", "curves.png", "mechanism.png", "density.png"):
        assert (reports / figure).read_bytes().startswith(PNG_MAGIC)


def test_the_mechanism_section_and_metrics_average_over_seeds(tmp_path):
    md = render(tmp_path, smoke_params())
    assert md.index("## Against the published numbers") < md.index("## Mechanism") < md.index("## Figures")
    rows = table_rows(md)
    # SGD few: lambda_max 81 and 82 over seeds 1 and 2; gap half of it; ratio 0.1; |w| 51 and 52.
    assert ["SGD", "few", "40.8 ± 0.4", "81.5 ± 0.7071", "-8.15 ± 0.0707", "0.100 ± 0.000", "815 ± 7.071",
            "0.815 ± 0.00707", "51.5 ± 0.7"] in rows
    assert ["ImbSAM", "many", "3.2 ± 0.4", "6.5 ± 0.7071", "-0.65 ± 0.0707", "0.100 ± 0.000", "65 ± 7.071",
            "0.065 ± 0.00707", "51.5 ± 0.7"] in rows
    mechanism = json.loads((tmp_path / "reports" / "mechanism.json").read_text())
    assert mechanism["imbsam"]["few"]["lambda_max"] == pytest.approx(41.5)
    assert mechanism["sgd"]["weight_norm"] == pytest.approx(51.5)


def test_paper_config_has_no_banner_and_clean_selection_is_not_repeated(tmp_path):
    params = paper_params()
    params["train"].update(optimizers=["sgd", "imbsam"], seeds=[1])
    params["eval"].update(selection="last", flip_tta=False)
    md = render(tmp_path, params, synthetic=False, runs=[("sgd", 1), ("imbsam", 1)])
    assert "WARNING" not in md
    assert "### Clean protocol" not in md and "The selected protocol is the clean one." in md
    assert ["SGD", "80.0", "45.0", "10.0", "45.0", "1"] in table_rows(md)
    assert json.loads((tmp_path / "reports" / "metrics.json").read_text())["sgd"] == {
        "many": 80.0, "medium": 45.0, "few": 10.0, "all": 45.0}


def test_the_report_opens_with_the_claims_judged_on_the_selected_protocol(tmp_path):
    md = render(tmp_path, smoke_params())
    assert md.index("WARNING") < md.index("## Did it reproduce?") < md.index("## Results")
    claims = json.loads((tmp_path / "reports" / "claims.json").read_text())
    # SGD's few group, best epoch with TTA: 17.0 over seeds 1 and 2 (15 and 19), the clean protocol's 12.0 beside.
    few = claims["imbsam:sgd:few"]
    assert (few["ours"], few["clean"], few["verdict"], few["setting"]) == (17.0, 12.0, "not comparable", "off")
    assert few["low"] < 17.0 < few["high"]
    # ImbSAM's few minus SGD's: 33 - 17, seed by seed on the same images; judged although off the setting.
    difference = claims["imbsam:imbsam-sgd:few"]
    assert difference["ours"] == pytest.approx(16.0) and difference["verdict"] == "holds"
    assert claims["imbsam:imbsam-sam:all"]["verdict"] == "not run"
    row = next(row for row in table_rows(md) if row[0] == "ImbSAM above SGD on the few classes")
    assert row[1:3] == ["+5.9", "+16.0"] and row[-2:] == ["holds (off-setting)", "no"]
    assert "Not run: " in md and "runs of SAM (`train.optimizers`)" in md


def test_on_the_papers_setting_value_claims_get_a_verdict(tmp_path):
    params = paper_params()
    params["train"].update(optimizers=["sgd", "imbsam"], seeds=[1])
    write_workspace(tmp_path, params, synthetic=False, runs=[("sgd", 1), ("imbsam", 1)])
    assert run_stage(tmp_path).returncode == 0
    claims = json.loads((tmp_path / "reports" / "claims.json").read_text())
    values = [claim for claim_id, claim in claims.items() if claim_id.startswith("imbsam:") and claim["kind"] == "value"
              and claim["ours"] is not None]
    assert len(values) == 8 and all(c["verdict"] in ("holds", "contradicted", "inconclusive") for c in values)
    md = (tmp_path / "reports" / "report.md").read_text()
    assert "With one seed the intervals cover the test set's noise only" in md


def test_unknown_selection_fails_fast_naming_the_key(tmp_path):
    params = smoke_params()
    params["eval"]["selection"] = "median"
    write_workspace(tmp_path, params)
    result = run_stage(tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: params.yaml: eval.selection='median' is invalid: input should be 'best' or "
                               "'last' (eval.selection: "), lines
    assert not (tmp_path / "reports").exists()


def test_a_run_without_curves_is_named(tmp_path):
    write_workspace(tmp_path, smoke_params())
    for tsv in (tmp_path / "runs" / "sgd-2" / "live").rglob("*.tsv"):
        tsv.unlink()
    result = run_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "No per-epoch curves (dvclive files) for: sgd-2." in (tmp_path / "reports" / "report.md").read_text()


@pytest.mark.parametrize(("folder", "stage"), [("evals", "evaluate"), ("analysis", "analyze")])
@pytest.mark.parametrize("run", ["imbsam-2", "sgd-1"])
def test_a_missing_record_names_the_stage_to_run(tmp_path, folder, stage, run):
    write_workspace(tmp_path, smoke_params())
    (tmp_path / folder / f"{run}.json").unlink()
    result = run_stage(tmp_path)
    assert result.returncode == 1
    assert f"dvc repro {stage}@{run}" in result.stderr


def test_an_evaluation_without_predictions_names_the_stage_to_rerun(tmp_path):
    """An evaluate@ of an earlier version wrote no per-image predictions: the report says what to run."""
    write_workspace(tmp_path, smoke_params())
    (tmp_path / "evals" / "sgd-2.predictions.npz").unlink()
    result = run_stage(tmp_path)
    assert result.returncode == 1
    assert "dvc repro evaluate@sgd-2" in result.stderr and "per-image predictions" in result.stderr


def test_evaluate_stage_does_not_depend_on_report_choices():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]
    assert not {"eval", "eval.flip_tta", "eval.selection"} & set(stage["params"])
