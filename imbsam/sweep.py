"""The sweep report: every DVC experiment's per-seed results (reports/seeds.json) grouped by (dataset, imbalance
factor, loss), the optimizers side by side with mean +- std over seeds, beside the published numbers of that
setting (imbsam.published) and each experiment's verdicts on the papers' claims (reports/claims.json).

    python -m imbsam.sweep [--out reports/sweep.md] [dvc exp show options, e.g. -A or --rev main]

The pipeline's matrix is optimizer x seed; datasets, imbalance factors and losses are experiments
(`dvc exp run --queue -S data.dataset=cifar10 ...`). Experiments of one setting whose other protocol params
differ (an epoch count, a rho) are kept apart, each labelled with what differs; the same seed of the same
setting in two experiments counts once (the first listed: the workspace, then the newest).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

from imbsam import datasets, mechanism_report, published, registry
from imbsam.errors import InputError
from imbsam.params import defaults, flatten, paper_protocol, validate
from imbsam.report import (
    COMPARISON_LEGEND,
    GROUP_KEYS,
    aggregate,
    comparison_table,
    label,
    results_table,
    unused_groups,
)

SEEDS_FILE = "reports/seeds.json"
CLAIMS_FILE = "reports/claims.json"
# What a setting is; the variant label leaves these out, and the keys that say how to run or read the matrix.
SETTING_KEYS = ("data.dataset", "split.imb_factor", "train.loss")
# data.md5: whether the archive is the official one is said on its own.
_NOT_VARIANT = (*SETTING_KEYS, "train.optimizers", "train.seeds", "data.md5")


def entries(exp_show):
    """(name, params.yaml as a nested dict, seeds.json, claims.json or {}) of every experiment and commit in
    `dvc exp show --json` output that has params and seeds, in its order."""
    found = []

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and "params" in data:
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
                metrics = data.get("metrics") or {}
                seeds = (metrics.get(SEEDS_FILE) or {}).get("data")
                if params and seeds:
                    name = node.get("name") or data.get("name") or node.get("rev") or data.get("rev")
                    found.append((str(name), params, seeds, (metrics.get(CLAIMS_FILE) or {}).get("data") or {}))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)

    walk(exp_show)
    return found


def _variant(params):
    """The protocol params that differ from the repository's defaults on this dataset, besides the setting's."""
    flat = flatten(params)
    own, unused = flatten(defaults(params["data"]["dataset"])), unused_groups(params)
    return tuple(f"{key}={flat[key]}" for key in paper_protocol()
                 if key not in _NOT_VARIANT and key.split(".")[0] not in unused and flat[key] != own[key])


def collect(found):
    """{(dataset, imbalance factor, loss, variant): {"experiments": [...], "official": bool, "evals": [...],
    "analyses": [...], "claims": {experiment: its claims.json}}}, evals as the report's aggregate() takes them (one
    per optimizer and seed)."""
    settings = {}
    for name, raw, seeds, claims in found:
        try:
            params = validate(raw, f"experiment {name}").model_dump()
        except InputError:
            continue  # an experiment of an older params.yaml layout: not comparable, left out
        setting = (params["data"]["dataset"], published.imbalance_factor(params["split"]["imb_factor"]),
                   params["train"]["loss"], _variant(params))
        entry = settings.setdefault(setting, {"experiments": [], "official": True, "evals": [], "analyses": [],
                                              "claims": {}, "seen": set()})
        entry["official"] &= params["data"]["md5"] == datasets.get(params["data"]["dataset"]).MD5
        added = False
        for optimizer, by_seed in seeds.items():
            for seed, groups in by_seed.items():
                if (optimizer, seed) in entry["seen"]:
                    continue
                entry["seen"].add((optimizer, seed))
                record = {key: groups.get(key) for key in GROUP_KEYS}
                entry["evals"].append({"optimizer": optimizer, "seed": int(seed),
                                       "variants": {"sweep": {"plain": record}}})
                if groups.get("mechanism"):
                    entry["analyses"].append(mechanism_report.from_seed_figures(optimizer, int(seed),
                                                                                groups["mechanism"]))
                added = True
        if added:
            entry["experiments"].append(name)
        if claims:
            entry["claims"][name] = claims
    return {key: value for key, value in settings.items() if value["evals"]}


def _loss_label(loss):
    return registry.module("losses", loss).LABEL if loss in registry.names("losses") else loss


def _title(setting):
    dataset, factor, loss, variant = setting
    title = f"{datasets.get(dataset).LAYOUT.title}-LT, imbalance factor {factor}, {_loss_label(loss)} loss"
    return f"{title} ({', '.join(variant)})" if variant else title


INTRODUCTION = ("Balanced accuracy (%) per class group, mean ± sample standard deviation over seeds, each "
                "experiment under its own `eval.selection` and `eval.flip_tta` (the paper's: best epoch, flip TTA). "
                "Written by `python -m imbsam.sweep` from every experiment's `reports/seeds.json`.")


MECHANISM_LEGEND = ("Mechanism, each run's last epoch (the report's Mechanism section and docs/mechanism.md say how "
                    "each figure is measured), mean ± std over the same seeds:")


def render(settings):
    lines = ["# Sweep report", "", INTRODUCTION, ""]
    if not settings:
        return "\n".join([*lines, "No experiment has results yet: run `dvc exp run` (or queue some) first.", ""])
    # What every experiment differs in is said once, and each title keeps only its own differences.
    common = set.intersection(*(set(setting[3]) for setting in settings))
    if common:
        lines += [f"Every experiment here differs from the repository's defaults in: {', '.join(sorted(common))}.", ""]
    # The paper's loss first, then the others by name.
    for setting in sorted(settings, key=lambda s: (s[0], s[1], s[2] != "ce", s[2], s[3])):
        entry = settings[setting]
        title = _title((*setting[:3], tuple(v for v in setting[3] if v not in common)))
        aggregated = aggregate(entry["evals"], "sweep", False)
        data = "" if entry["official"] else (" **Not the official archive** (data.md5 differs from it: synthetic "
                                             "or other data): these numbers say nothing about the dataset.")
        lines += [f"## {title}", "",
                  f"Experiments: {', '.join(entry['experiments'])}.{data}", "", results_table(aggregated), ""]
        for table in published.for_setting(*setting[:3]):
            lines += [f"Published, {table.title} ({table.source}). {COMPARISON_LEGEND}", "",
                      comparison_table(aggregated, table.results), ""]
        if entry["analyses"]:
            lines += [MECHANISM_LEGEND, "", *mechanism_report.table(mechanism_report.aggregate(entry["analyses"]),
                                                                    label), ""]
        lines += _claims_table(entry["claims"])
    return "\n".join(lines)


CLAIMS_LEGEND = ("The papers' claims, each experiment's verdict on its own runs (its report's \"Did it reproduce?\" "
                 "section; docs/claims.md), for the claims any of them ran:")


def _verdict(claim):
    """A claims.json entry's verdict as the report shows it: a judged claim off its setting says so."""
    verdict = claim.get("verdict", "n/a")
    if claim.get("setting") == "off" and verdict in ("holds", "contradicted", "inconclusive"):
        return f"{verdict} (off-setting)"
    return verdict


def _claims_table(by_experiment):
    """Claim x experiment verdicts, leaving out the claims no experiment ran."""
    ran = {}
    for claims in by_experiment.values():
        for claim_id, claim in claims.items():
            if claim.get("verdict") not in (None, "not run"):
                ran.setdefault(claim_id, claim.get("claim", claim_id))
    if not ran:
        return []
    experiments = list(by_experiment)
    rows = [[text, *(_verdict(by_experiment[name].get(claim_id, {})) for name in experiments)]
            for claim_id, text in ran.items()]
    return [CLAIMS_LEGEND, "", tabulate(rows, headers=["claim", *experiments], tablefmt="github",
                                        disable_numparse=True), ""]


def exp_show(extra=()):
    command = ["dvc", "exp", "show", "--json", *extra]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InputError(f"`{' '.join(command)}` failed: {' '.join(result.stderr.split())[:300]}; run this from "
                         "the repository root")
    return json.loads(result.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m imbsam.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reports/sweep.md", help="the markdown file to write")
    args, extra = parser.parse_known_args(argv)
    try:
        settings = collect(entries(exp_show(extra)))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(settings))
    runs = sum(len(entry["evals"]) for entry in settings.values())
    print(f"wrote {out}: {len(settings)} setting{'s' * (len(settings) != 1)}, {runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
