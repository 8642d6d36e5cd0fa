"""The report's Mechanism section, its figures and reports/mechanism.json, from the analyze@ stages' records
(analysis/<optimizer>-<seed>.json, imbsam.mechanism): per optimizer and class group, mean and std over seeds."""

import numpy as np

GROUPS = ("many", "medium", "few")
# (record key, column header, format)
QUANTITIES = (
    ("gap", "gap (points)", ".1f"),
    ("lambda_max", "λ_max", ".4g"),
    ("lambda_min", "λ_min", ".3g"),
    ("saddle_ratio", "\\|λ_min\\| / λ_max", ".3f"),
    ("trace", "trace", ".4g"),
    ("rho_sharpness", "ρ-sharpness", ".3g"),
)
DENSITY_GROUPS = ("many", "few")


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "seeds": len(values)}


def aggregate(analyses):
    """{optimizer: {"weight_norm": stats, group: {quantity: stats}}}, optimizers in the records' order; stats are
    {"mean", "std" (None for one seed), "seeds"}."""
    by_optimizer = {}
    for record in analyses:
        by_optimizer.setdefault(record["optimizer"], []).append(record)
    result = {}
    for optimizer, records in by_optimizer.items():
        result[optimizer] = {"weight_norm": _stats([r["weight_norm"] for r in records])}
        for group in GROUPS:
            result[optimizer][group] = {key: _stats([r["groups"][group].get(key) for r in records])
                                        for key, _, _ in QUANTITIES}
    return result


def seed_figures(record):
    """One analysis record's table figures, {"weight_norm": x, group: {quantity: x}}: what reports/seeds.json keeps
    per seed, so that the sweep report can average them over experiments."""
    return {"weight_norm": record["weight_norm"],
            **{group: {key: record["groups"][group].get(key) for key, _, _ in QUANTITIES} for group in GROUPS}}


def from_seed_figures(optimizer, seed, figures):
    """seed_figures back into the shape of an analysis record, as aggregate() takes it. `dvc exp show` leaves out
    null values, and with them a group whose figures were all null (an empty group)."""
    return {"optimizer": optimizer, "seed": seed, "weight_norm": figures.get("weight_norm"),
            "groups": {group: figures.get(group, {}) for group in GROUPS}}


def metrics(aggregated):
    """reports/mechanism.json: the means, {optimizer: {"weight_norm": x, group: {quantity: x}}}, for dvc metrics."""
    return {optimizer: {"weight_norm": groups["weight_norm"]["mean"],
                        **{group: {key: stats["mean"] for key, stats in groups[group].items() if stats}
                           for group in GROUPS}}
            for optimizer, groups in aggregated.items()}


def _cell(stats, fmt):
    if stats is None:
        return "n/a"
    if stats["std"] is None:
        return format(stats["mean"], fmt)
    return f"{format(stats['mean'], fmt)} ± {format(stats['std'], fmt)}"


def table(aggregated, label):
    header = ["optimizer", "group", *(title for _, title, _ in QUANTITIES), "\\|w\\|"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for optimizer, groups in aggregated.items():
        for group in GROUPS:
            cells = [_cell(groups[group][key], fmt) for key, _, fmt in QUANTITIES]
            lines.append(f"| {label(optimizer)} | {group} | " + " | ".join(cells)
                         + f" | {_cell(groups['weight_norm'], '.1f')} |")
    return lines


def section(analyses, expected_runs, label):
    """The Mechanism section's markdown lines; expected_runs names every run the report covers."""
    lines = ["## Mechanism: generalization gap and curvature per class group", ""]
    missing = sorted(set(expected_runs) - {f"{r['optimizer']}-{r['seed']}" for r in analyses})
    if not analyses:
        return lines + ["No run has an analysis yet: run `dvc repro` (stage analyze@<optimizer>-<seed>).", ""]
    settings = analyses[0]["settings"]
    seeds = {r["seed"] for r in analyses}
    lines += [(
        f"Each run's last epoch (epoch {', '.join(sorted({str(r['epoch']) for r in analyses}))}), no TTA, "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} (mean ± std over seeds where there are several). "
        "Gap: balanced training accuracy minus balanced test accuracy, in points, on images without augmentation. "
        "Curvature: the Hessian of the mean cross-entropy of the group's training images (at most "
        f"{settings['samples_per_group']} per group, seeded), BatchNorm on its running statistics, every trainable "
        f"parameter, no weight decay. λ_max and λ_min: the largest and smallest Ritz values of "
        f"{settings['lanczos_runs']} Lanczos runs of {settings['lanczos_steps']} steps; a negative λ_min is a "
        "saddle direction, and \\|λ_min\\| / λ_max is Saddle-LongTail's measure of it. Trace: Hutchinson's "
        f"estimate from {settings['hutchinson_samples']} Rademacher vectors. ρ-sharpness: L(w + ρ g/\\|g\\|) − L(w) "
        f"at ρ = {settings['rho']}. With BatchNorm, the loss does not change when a layer's weights are scaled but "
        "its curvature scales with 1/\\|w\\|²: compare curvature between optimizers with \\|w\\| (the norm of every "
        "trainable parameter) beside it."), ""]
    if not all(r["settings"].get("curvature", True) for r in analyses):
        lines += ["Curvature not measured for every run (`analysis.curvature=false`): those figures are n/a.", ""]
    lines += table(aggregate(analyses), label)
    lines += ["", "![Per-group λ_max and generalization gap](mechanism.png)", "",
              "![Hessian spectral density of the many and few groups](density.png)", ""]
    if missing:
        lines += [f"Not analysed yet: {', '.join(missing)}.", ""]
    return lines


def plot_mechanism(aggregated, label, colour, path, pyplot):
    """Per group, λ_max (left) and the generalization gap (right), one bar per optimizer, std as error bars."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    order = list(aggregated)
    width = 0.8 / max(len(order), 1)
    for ax, (key, title) in zip(axes, (("lambda_max", "λ_max of the group's training loss"),
                                       ("gap", "generalization gap (points)"))):
        for i, optimizer in enumerate(order):
            stats = [aggregated[optimizer][group][key] for group in GROUPS]
            means = [s["mean"] if s else np.nan for s in stats]
            errors = [s["std"] if s and s["std"] is not None else 0.0 for s in stats]
            ax.bar(np.arange(len(GROUPS)) + (i - (len(order) - 1) / 2) * width, means, width, yerr=errors,
                   color=colour(optimizer, order), label=label(optimizer))
        ax.set_xticks(np.arange(len(GROUPS)), GROUPS)
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def smoothed_density(nodes, weights, grid, sigma):
    """PyHessian's plot of a spectral density: a Gaussian of width sigma at each Ritz value, weighted, averaged
    over the runs (rows)."""
    nodes, weights = np.asarray(nodes, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    kernels = np.exp(-((grid[None, None, :] - nodes[..., None]) ** 2) / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))
    return (weights[..., None] * kernels).sum(axis=1).mean(axis=0)


def plot_density(analyses, label, colour, path, pyplot):
    """The spectral densities of the many and few groups, one line per optimizer (runs and seeds pooled), log y."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(DENSITY_GROUPS), figsize=(10, 4))
    order = list(dict.fromkeys(r["optimizer"] for r in analyses))
    for ax, group in zip(axes, DENSITY_GROUPS):
        pooled = {optimizer: [r["groups"][group] for r in analyses if r["optimizer"] == optimizer
                              and "nodes" in r["groups"][group]] for optimizer in order}
        every = np.concatenate([np.ravel(g["nodes"]) for runs in pooled.values() for g in runs] or [np.zeros(1)])
        low, high = every.min(), every.max()
        span = max(high - low, 1e-12)
        grid = np.linspace(low - 0.05 * span, high + 0.05 * span, 2000)
        # PyHessian's width, sigma^2 = 1e-5 x the range, would show single spikes at our few Lanczos nodes.
        sigma = 0.01 * span
        for optimizer, runs in pooled.items():
            if runs:
                density = np.mean([smoothed_density(g["nodes"], g["weights"], grid, sigma) for g in runs], axis=0)
                ax.semilogy(grid, np.maximum(density, 1e-12), color=colour(optimizer, order), label=label(optimizer))
        ax.set_title(f"{group} classes" if any(pooled.values()) else f"{group} classes: none analysed")
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density (log)")
        if any(pooled.values()):
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
