"""Stage report: reports/report.md, its figures, metrics.json, claims.json and mechanism.json from every run's
evaluation, per-image predictions and analysis.

Which numbers the tables and metrics.json show is chosen here (eval.selection, eval.flip_tta);
the evaluate stage computed all of them.
"""

import json
import platform
from pathlib import Path

from imbsam import predictions as run_predictions
from imbsam.errors import InputError
from imbsam.report import git_state, read_metric_tsv, sha256_of, write_report
from stages._common import PARAMS_FILE, load_params, main_guard

SUMMARY_FILE = Path("data/split/summary.json")
RUNS_DIR = Path("runs")
EVALS_DIR = Path("evals")
ANALYSIS_DIR = Path("analysis")
REPORTS_DIR = Path("reports")
# The balanced test accuracy without TTA and the mean training loss, as imbsam.train logs them per epoch.
CURVES = ("test/all", "train/loss")


def _read_json(path, stage):
    if not path.is_file():
        raise InputError(f"{path} not found: run `dvc repro {stage}` first")
    return json.loads(path.read_text())


def _read_predictions(path, name):
    if not path.is_file():
        raise InputError(f"{path} not found: run `dvc repro evaluate@{name}` (an evaluation from before the "
                         "report judged the papers' claims has no per-image predictions)")
    return run_predictions.read(path)


def main():
    params = load_params()
    selection, flip_tta = params.eval.selection, params.eval.flip_tta

    summary = _read_json(SUMMARY_FILE, "split")
    evals, trains, curves, analyses, predictions = [], {}, {}, [], {}
    for optimizer in params.train.optimizers:
        for seed in params.train.seeds:
            name = f"{optimizer}-{seed}"
            evals.append(_read_json(EVALS_DIR / f"{name}.json", f"evaluate@{name}"))
            predictions[(optimizer, seed)] = _read_predictions(EVALS_DIR / f"{name}.predictions.npz", name)
            trains[name] = _read_json(RUNS_DIR / name / "train.json", f"train@{name}")
            analyses.append(_read_json(ANALYSIS_DIR / f"{name}.json", f"analyze@{name}"))
            metric_dir = RUNS_DIR / name / "live" / "plots" / "metrics"
            curves[name] = {metric: read_metric_tsv(metric_dir / f"{metric}.tsv")
                            for metric in CURVES if (metric_dir / f"{metric}.tsv").is_file()}

    provenance = {"git": git_state(), "params_sha256": sha256_of(PARAMS_FILE), "python": platform.python_version()}
    selected = write_report(REPORTS_DIR, evals, trains, curves, summary, params.model_dump(), selection, flip_tta,
                            provenance, analyses, predictions)
    print(f"wrote {REPORTS_DIR}/report.md; {selection} epoch, {'with' if flip_tta else 'without'} flip TTA:")
    for optimizer, groups in selected.items():
        print(f"  {optimizer:8s} " + "  ".join(
            f"{key} {'n/a' if value is None else f'{value:.2f}'}" for key, value in groups.items()))


if __name__ == "__main__":
    main_guard(main)
