"""Evaluation records -> the markdown report, its figures and the metrics file.

Inputs are plain data: the evaluate stage's records, each run's train.json, the split summary
and the params as a nested dict. Nothing here knows where those came from.
"""

import hashlib
import json
import math
import subprocess
from pathlib import Path

import numpy as np
from tabulate import tabulate

from imbsam import bootstrap, claims, claims_report, datasets, mechanism_report, published, registry
from imbsam.durations import format_duration
from imbsam.params import flatten, paper_protocol

GROUP_KEYS = bootstrap.GROUPS

# Stated in the report's own text (rows, seed count, protocol line) instead of warned about: other seeds, fewer
# optimizers or the clean protocol are legitimate ways to run and read the paper's experiment.
_PROTOCOL_NEUTRAL = ("train.optimizers", "train.seeds", "eval.flip_tta", "eval.selection")


def _same(ours, paper):
    if isinstance(paper, float) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
        return math.isclose(ours, paper, rel_tol=1e-9)
    return ours == paper


def differences_from_paper(params, protocol=None):
    """[(dotted key, ours, paper)] for every key of `protocol` ({dotted key: value}; None: the paper's whole
    protocol) whose value differs (missing counts as different), leaving out the groups of methods and losses the
    run does not use."""
    flat, unused = flatten(params), unused_groups(params)
    protocol = paper_protocol() if protocol is None else protocol
    return [(key, flat.get(key), paper) for key, paper in protocol.items()
            if key.split(".")[0] not in unused and not _same(flat.get(key), paper)]


def unused_groups(params):
    """The params.yaml groups of the optimizers and losses a run of these params does not use."""
    train = params.get("train", {})
    return ((set(registry.names("optimizers")) - set(train.get("optimizers", ())))
            | (set(registry.names("losses")) - {train.get("loss", "ce")}))


def comparability_warnings(params, summary, protocol=None):
    """Why the numbers are not comparable with those of a source that ran `protocol` (None: the paper's); empty
    when they are."""
    warnings = [f"`{key}` = {ours!r} ({'paper' if protocol is None else 'source'}: {paper!r})"
                for key, ours, paper in differences_from_paper(params, protocol) if key not in _PROTOCOL_NEUTRAL]
    if summary.get("synthetic"):
        warnings.append(f"the data is a synthetic stand-in archive, not {_dataset_title(summary)}")
    return warnings


def _dataset_title(summary):
    return datasets.get(summary.get("dataset", "cifar100")).LAYOUT.title


def _group_values(records, selection, variant, key):
    values = [record["variants"][selection][variant][key] for record in records]
    # A group is empty by construction of the split, hence for every seed alike.
    return None if any(v is None for v in values) else values


def aggregate(evals, selection, flip_tta):
    """Per optimizer, in the order of `evals` (the stage reads them in train.optimizers' order):
    {"seeds": [...], "mean": {group: %}, "std": {group: %} or None}.

    std is the sample standard deviation over seeds, None with a single seed; a group that is empty in the
    split is None in both.
    """
    variant = "flip_tta" if flip_tta else "plain"
    by_optimizer = {}
    for record in evals:
        by_optimizer.setdefault(record["optimizer"], []).append(record)
    result = {}
    for optimizer, unsorted in by_optimizer.items():
        records = sorted(unsorted, key=lambda r: r["seed"])
        single = len(records) < 2
        mean, std = {}, {}
        for key in GROUP_KEYS:
            values = _group_values(records, selection, variant, key)
            mean[key] = None if values is None else float(np.mean(values))
            std[key] = None if values is None or single else float(np.std(values, ddof=1))
        result[optimizer] = {"seeds": [r["seed"] for r in records], "mean": mean, "std": None if single else std}
    return result


def metrics(aggregated):
    """The DVC metrics file's content: optimizer -> {many, medium, few, all} mean over seeds, in percent."""
    return {optimizer: {key: None if value is None else round(value, 4) for key, value in row["mean"].items()}
            for optimizer, row in aggregated.items()}


def seed_metrics(evals, selection, flip_tta, analyses=()):
    """optimizer -> seed -> {many, medium, few, all[, "mechanism": that seed's analysis figures]}: what the sweep
    report (imbsam.sweep) aggregates over experiments."""
    variant = "flip_tta" if flip_tta else "plain"
    by_optimizer = {}
    optimizers = list(dict.fromkeys(record["optimizer"] for record in evals))
    for record in sorted(evals, key=lambda r: (optimizers.index(r["optimizer"]), r["seed"])):
        groups = record["variants"][selection][variant]
        by_optimizer.setdefault(record["optimizer"], {})[str(record["seed"])] = {
            key: None if groups[key] is None else round(groups[key], 4) for key in GROUP_KEYS}
    for record in analyses:
        seed = by_optimizer.get(record["optimizer"], {}).get(str(record["seed"]))
        if seed is not None:
            seed["mechanism"] = mechanism_report.seed_figures(record)
    return by_optimizer


def _colour(optimizer, order):
    """One colour per optimizer, by its place in `order`, so that the two figures agree."""
    return f"C{order.index(optimizer) % 10}"


def label(optimizer):
    """The optimizer's LABEL (imbsam/optimizers/<optimizer>.py); its name where no module has it any more."""
    return registry.module("optimizers", optimizer).LABEL if optimizer in registry.names("optimizers") else optimizer


def _cell(mean, std):
    if mean is None:
        return "n/a"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def results_table(aggregated):
    rows = []
    for optimizer, row in aggregated.items():
        std = row["std"] or {}
        rows.append([label(optimizer), *(_cell(row["mean"][k], std.get(k)) for k in GROUP_KEYS),
                     len(row["seeds"])])
    return tabulate(rows, headers=["Optimizer", "Many", "Medium", "Few", "All", "Seeds"], tablefmt="github",
                    disable_numparse=True)


def comparison_table(aggregated, published):
    """Published values with (ours - published) beside each, for the optimizers both have."""
    rows = []
    for optimizer, row in aggregated.items():
        if optimizer not in published:
            continue
        cells = []
        for key in GROUP_KEYS:
            ours, theirs = row["mean"][key], published[optimizer][key]
            difference = "n/a" if ours is None else claims_report.signed(ours - theirs)
            cells.append(f"{theirs:.1f} ({difference})")
        rows.append([label(optimizer), *cells])
    return tabulate(rows, headers=["Optimizer", "Many", "Medium", "Few", "All"], tablefmt="github",
                    disable_numparse=True)


def describe_protocol(selection, flip_tta):
    epoch = ("the best epoch, chosen by test accuracy without TTA (the authors' protocol: selection on the test set)"
             if selection == "best" else "the last epoch (no choice made on the test set)")
    return f"{epoch}, {'with' if flip_tta else 'without'} horizontal-flip test-time augmentation"


def read_metric_tsv(path):
    """A dvclive metric file (columns step, <metric>[, timestamp]) -> (steps, values) arrays."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    value_column = next(i for i, name in enumerate(header) if name not in ("step", "timestamp"))
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    steps = np.array([int(row[header.index("step")]) for row in rows])
    values = np.array([float(row[value_column]) for row in rows])
    return steps, values


def _pyplot():
    import matplotlib

    # Headless: stages run without a display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_class(evals, class_counts, groups_thresholds, selection, flip_tta, path):
    """Per-class test accuracy (mean over seeds) against the class's training-set size, log x."""
    plt = _pyplot()
    variant = "flip_tta" if flip_tta else "plain"
    counts = np.asarray(class_counts, dtype=np.float64)
    by_optimizer = {}
    for record in evals:
        per_class = [np.nan if a is None else a for a in record["variants"][selection][variant]["per_class"]]
        by_optimizer.setdefault(record["optimizer"], []).append(per_class)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    shown = counts > 0
    order = list(by_optimizer)
    for optimizer in order:
        with np.errstate(all="ignore"):
            accuracy = np.nanmean(np.asarray(by_optimizer[optimizer], dtype=np.float64), axis=0)
        ax.scatter(counts[shown], accuracy[shown], s=14, alpha=0.7, color=_colour(optimizer, order),
                   label=label(optimizer))
    for threshold in groups_thresholds:
        ax.axvline(threshold, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title(f"Per-class accuracy: {selection} epoch, {'flip TTA' if flip_tta else 'no TTA'}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(curves, optimizers, path):
    """curves: {run name: {"test/all": (steps, values), "train/loss": (steps, values)}}, either may be absent.

    optimizers: {run name: optimizer}, so that a run takes its optimizer's colour, as in the per-class figure.
    dvclive's step is the 0-based epoch index, plotted as the 1-based epoch train.json counts in.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    linestyles = ("-", "--", ":", "-.")
    seen = {}
    order = list(dict.fromkeys(optimizers[name] for name in curves))
    for name in sorted(curves, key=lambda n: (order.index(optimizers[n]), n)):
        optimizer = optimizers[name]
        style = {"color": _colour(optimizer, order), "linestyle": linestyles[seen.get(optimizer, 0) % len(linestyles)]}
        seen[optimizer] = seen.get(optimizer, 0) + 1
        for ax, metric in ((acc_ax, "test/all"), (loss_ax, "train/loss")):
            if metric in curves[name]:
                steps, values = curves[name][metric]
                ax.plot(steps + 1, values, label=name, **style)
    acc_ax.set_title("balanced test accuracy, no TTA")
    acc_ax.set_ylabel("test/all (%)")
    loss_ax.set_title("training loss")
    loss_ax.set_ylabel("train/loss")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_state(directory="."):
    """"<commit> (clean|dirty)", or why there is none: the report must render outside a repository too."""
    def git(*args):
        return subprocess.run(["git", *args], check=False, cwd=directory, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "no git commit (not a repository, or no commit yet)"
        status = git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return "git not available"
    return f"{head.stdout.strip()} ({'dirty' if status.stdout.strip() else 'clean'})"


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _device(info):
    if not info:
        return "n/a"
    threads = f", {info['threads']} threads" if info.get("threads") else ""
    kernels = f", {info['kernels']} kernels" if info.get("kernels") else ""
    return f"{info.get('slot') or info.get('target', '?')} ({info.get('mode', '?')}{threads}{kernels})"


def runs_table(trains):
    rows = []
    for name, run in trains.items():
        img_per_s = run.get("train_img_per_s")
        rows.append([name, _device(run.get("device")), f"{run.get('epochs_completed')}/{run.get('epochs')}",
                     run.get("best_epoch"), run.get("last_epoch"), run.get("steps_per_epoch"),
                     format_duration(run.get("wall_time_s")), "n/a" if img_per_s is None else f"{img_per_s:.1f}"])
    return tabulate(rows, headers=["Run", "Device", "Epochs done/planned", "Best epoch", "Last epoch",
                                   "Steps/epoch", "Wall time", "Train img/s"], tablefmt="github",
                    disable_numparse=True)


def _differences_table(params):
    rows = [[f"`{key}`", json.dumps(ours), json.dumps(paper)] for key, ours, paper in differences_from_paper(params)]
    if not rows:
        return "None: every paper-protocol key has the paper's value."
    return tabulate(rows, headers=["Key", "This report", "Paper"], tablefmt="github", disable_numparse=True)


def _group_sizes(summary):
    return " / ".join(str(len(summary["groups"][g])) for g in ("many", "medium", "few"))


def how_to_read(summary):
    many, few = summary.get("many_threshold", 100), summary.get("few_threshold", 20)
    return f"""## How to read this

- **Paper-comparable**: `eval.selection=best` with `eval.flip_tta=true`, the authors' protocol. The best
  epoch is chosen by accuracy on the test set, so this is selection on the test set and an optimistic
  estimate, kept only to compare with the published tables.
- **Clean**: the last epoch without TTA. Nothing is chosen on the test set; prefer it for conclusions of
  your own.
- Many / Medium / Few: classes with > {many}, {few} to {many} and < {few} training images. Every figure is the mean
  of per-class accuracies (balanced), so each class counts once.
- With a single seed the tables show no spread: a gap of a point or two between optimizers may be seed
  noise. The intervals of "Did it reproduce?" say how large a gap the test images (and the seeds, given
  several) can make on their own.
- The MindSpore README's numbers come from the authors' MindSpore code, which has known defects (for
  one, no weight decay on BatchNorm parameters); the PyTorch numbers are the paper's.
"""


def _banner(params, summary):
    warnings = comparability_warnings(params, summary)
    if not warnings:
        return []
    headline = "> **WARNING: these numbers are not comparable with the paper's.** This run differs from its protocol:"
    return [headline, ">", *(f"> - {w}" for w in warnings), ""]


def _results_section(evals, selected, selection, flip_tta):
    seeds = sorted({record["seed"] for record in evals})
    seed_text = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"
    spread = "mean ± sample standard deviation over" if len(seeds) > 1 else "from"
    protocol = (f"selected protocol (`eval.selection={selection}`, `eval.flip_tta={str(flip_tta).lower()}`): "
                f"{describe_protocol(selection, flip_tta)}")
    lines = ["## Results", "",
             f"Balanced accuracy (%) on {evals[0].get('test_total')} test images, {spread} {seed_text}; {protocol}.",
             "", results_table(selected), ""]
    if (selection, flip_tta) == ("last", False):
        return [*lines, "The selected protocol is the clean one.", ""]
    return [*lines, "### Clean protocol", "", f"Same runs, {describe_protocol('last', False)}.", "",
            results_table(aggregate(evals, "last", False)), ""]


NO_PUBLISHED = ("No published numbers are known for this dataset, imbalance factor and loss (imbsam/published.py "
                "lists those that are).")
COMPARISON_LEGEND = ("Each cell: the published value, then (ours \u2212 published) with ours under the selected "
                     "protocol. Published: 200 epochs, best test epoch, flip TTA.")


def _comparison_section(selected, summary, params):
    imb_factor = summary.get("imb_factor")
    tables = published.for_setting(summary.get("dataset", "cifar100"), published.imbalance_factor(imb_factor),
                                   params.get("train", {}).get("loss", "ce")) if imb_factor else []
    lines = ["## Against the published numbers", ""]
    if not tables:
        return [*lines, NO_PUBLISHED, ""]
    lines += [COMPARISON_LEGEND, ""]
    for table in tables:
        lines += [f"### {table.title}", "", f"Source: {table.source}.", "", comparison_table(selected, table.results),
                  ""]
    return lines


def _sources(trains):
    """Whose update each optimizer of the runs is (the SOURCE of imbsam/optimizers/<name>.py)."""
    names = dict.fromkeys(run["optimizer"] for run in trains.values())
    return "; ".join(f"{label(name)}: {registry.module('optimizers', name).SOURCE}"
                     if name in registry.names("optimizers") else name for name in names)


def _provenance_section(trains, summary, params, provenance):
    mindspore_versions = sorted({str((run.get("device") or {}).get("mindspore")) for run in trains.values()})
    source = "synthetic stand-in archive" if summary.get("synthetic") else _dataset_title(summary)
    data = (f"{source}, profile {summary.get('profile')}, imb_factor {summary.get('imb_factor')}, "
            f"{summary.get('train_total')} training images, many / medium / few classes {_group_sizes(summary)}")
    return ["## Provenance", "",
            f"- Git: {provenance['git']}",
            f"- params.yaml sha256: `{provenance['params_sha256']}`",
            f"- Python {provenance['python']} (report); MindSpore {', '.join(mindspore_versions)} (runs)",
            f"- Data: {data}",
            f"- Optimizers: {_sources(trains)}",
            "", "### Params that differ from the paper's protocol", "", _differences_table(params), "",
            "### Runs", "", runs_table(trains), ""]


def judge_claims(summary, params, selection, flip_tta, predictions, analyses=()):
    """imbsam.claims_report.judge over every paper's claims, a claim's setting checked like the banner's."""
    return claims_report.judge(claims.all_claims(), predictions, analyses, summary["groups"], summary["num_classes"],
                               selection, flip_tta,
                               lambda setting: comparability_warnings(params, summary, setting.keys))


def render_markdown(evals, trains, curves, summary, params, selection, flip_tta, provenance, analyses=(),
                    claim_results=()):
    """The report. provenance: {"git": str, "params_sha256": str, "python": str}; analyses: the analyze@ records;
    claim_results: judge_claims'."""
    selected = aggregate(evals, selection, flip_tta)
    imb_factor = summary.get("imb_factor")
    title_if = f"IF={published.imbalance_factor(imb_factor)}" if imb_factor else "imbalance factor unknown"
    figures = ["## Figures", "",
               "![Per-class accuracy against training-set size](per_class.png)", "",
               "![Test accuracy and training loss per epoch](curves.png)", ""]
    without_curves = [name for name in trains if not curves.get(name)]
    if without_curves:
        figures += [f"No per-epoch curves (dvclive files) for: {', '.join(without_curves)}.", ""]
    return "\n".join([f"# ImbSAM reproduction: {_dataset_title(summary)}-LT ({title_if})", "",
                      *_banner(params, summary),
                      *claims_report.section(list(claim_results), label, describe_protocol(selection, flip_tta),
                                             selection, flip_tta),
                      *_results_section(evals, selected, selection, flip_tta),
                      *_comparison_section(selected, summary, params),
                      *mechanism_report.section(list(analyses), list(trains), label),
                      *figures,
                      how_to_read(summary),
                      *_provenance_section(trains, summary, params, provenance)])


def write_report(out_dir, evals, trains, curves, summary, params, selection, flip_tta, provenance, analyses=(),
                 predictions=None):
    """Write report.md, per_class.png, curves.png, metrics.json, seeds.json, claims.json and, from the analyze@
    records, mechanism.json, mechanism.png and density.png into out_dir; return the metrics.

    predictions: {(optimizer, seed): the evaluate stage's per-image predictions}, what the claims' intervals
    resample; without them every accuracy claim is "not run"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = judge_claims(summary, params, selection, flip_tta, predictions or {}, analyses)
    (out_dir / "claims.json").write_text(json.dumps(claims_report.metrics(results, label), indent=2) + "\n")
    selected = metrics(aggregate(evals, selection, flip_tta))
    (out_dir / "metrics.json").write_text(json.dumps(selected, indent=2) + "\n")
    (out_dir / "seeds.json").write_text(
        json.dumps(seed_metrics(evals, selection, flip_tta, analyses), indent=2) + "\n")
    (out_dir / "report.md").write_text(
        render_markdown(evals, trains, curves, summary, params, selection, flip_tta, provenance, analyses, results))
    mechanism = mechanism_report.aggregate(analyses)
    (out_dir / "mechanism.json").write_text(json.dumps(mechanism_report.metrics(mechanism), indent=2) + "\n")
    if analyses:
        mechanism_report.plot_mechanism(mechanism, label, _colour, out_dir / "mechanism.png", _pyplot)
        mechanism_report.plot_density(analyses, label, _colour, out_dir / "density.png", _pyplot)
    thresholds = [summary.get("few_threshold", 20), summary.get("many_threshold", 100)]
    plot_per_class(evals, summary["class_counts"], thresholds, selection, flip_tta, out_dir / "per_class.png")
    plot_curves(curves, {name: run["optimizer"] for name, run in trains.items()}, out_dir / "curves.png")
    return selected
