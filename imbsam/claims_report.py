"""Did it reproduce? Each claim of imbsam.claims judged against the runs: our estimate, an interval and a verdict,
for the report's opening section and reports/claims.json.

Accuracy claims (value, difference) are judged on the protocol eval.selection and eval.flip_tta choose, from the
evaluate stage's per-image predictions, with imbsam.bootstrap's 95% intervals; the clean protocol's estimate (last
epoch, no TTA) stands beside. Mechanism claims are judged seed by seed from the analyze@ records (a curvature
has no test-image resample), paired across optimizers; their "interval" is the range over seeds.
"""

import numpy as np
from tabulate import tabulate

from imbsam import predictions as run_predictions
from imbsam import registry
from imbsam.bootstrap import CONFIDENCE, RESAMPLES, SEED, Bootstrap

VERDICTS = ("holds", "contradicted", "inconclusive", "not comparable", "not run")
MIN_SEEDS = 3  # a mechanism claim needs this many seeds, all one way, for a verdict
SELECTED, CLEAN = "selected", "clean"
GROUP_PHRASES = {"many": "the many classes", "medium": "the medium classes", "few": "the few classes",
                 "all": "all classes"}
RULES = (
    "**Rules.** A difference with a direction holds when its 95% interval excludes 0 on the paper's side, is "
    "contradicted when it excludes 0 on the other side, and is inconclusive otherwise; \"not more than m points "
    "above\" holds when the interval's upper end is below +m, is contradicted when its lower end is above +m. A "
    "value holds when our interval lies inside the paper's value ± its tolerance (the Paper column), is "
    "contradicted when the two do not meet, and is inconclusive otherwise. A mechanism claim holds when every "
    f"seed agrees with its direction and there are at least {MIN_SEEDS}, is contradicted when every seed "
    f"disagrees and there are at least {MIN_SEEDS}, and is inconclusive otherwise; its range is over seeds, not a "
    "confidence interval. *Not run*: the runs lack the claim's optimizers or figures (this takes precedence); "
    "*not comparable*: a value claim whose setting or evaluation protocol the runs are off. Differences and "
    "mechanism claims off their setting are judged all the same and marked *off-setting*. Every verdict is a "
    "separate 95% statement, not a family-wise one (docs/claims.md).")


def bootstrap(predictions, groups, num_classes, selection, flip_tta, resamples=RESAMPLES, seed=SEED):
    """A Bootstrap over every optimizer under the selected protocol, (optimizer, "selected"), and the clean one,
    (optimizer, "clean"). predictions: {(optimizer, seed): {"labels", "last", "last_tta", "best", "best_tta"}}, the
    evaluate stage's files, every optimizer with the same seeds."""
    runs = sorted(predictions, key=lambda key: key[1])
    labels = predictions[runs[0]]["labels"]
    if any(not np.array_equal(predictions[run]["labels"], labels) for run in runs):
        raise ValueError("the runs' predictions are of different test sets: re-run their evaluate@ stages")
    seeds = {}
    for optimizer, run_seed in runs:
        seeds.setdefault(optimizer, []).append(run_seed)
    if len({tuple(of_one) for of_one in seeds.values()}) != 1:
        raise ValueError(f"the optimizers' seeds differ ({seeds}): the bootstrap pairs them seed by seed")
    protocols = {SELECTED: run_predictions.key(selection, flip_tta), CLEAN: "last"}
    if protocols[SELECTED] == protocols[CLEAN]:
        del protocols[CLEAN]  # the selected protocol is the clean one: _judge_accuracy reads it for both
    series = {}
    for run in runs:
        for protocol, variant in protocols.items():
            series.setdefault((run[0], protocol), []).append(predictions[run][variant])
    return Bootstrap(series, labels, groups, num_classes, resamples, seed)


def accuracy_verdict(claim, low, high):
    """A value or difference claim's verdict from our 95% interval [low, high] (the rules of RULES)."""
    if claim.kind == "value":
        lowest, highest = claim.published - claim.tolerance, claim.published + claim.tolerance
        if lowest <= low and high <= highest:
            return "holds"
        return "contradicted" if high < lowest or low > highest else "inconclusive"
    if claim.direction == "not_above":
        if high < claim.margin:
            return "holds"
        return "contradicted" if low > claim.margin else "inconclusive"
    if claim.direction == "greater":
        return "holds" if low > 0 else "contradicted" if high < 0 else "inconclusive"
    if claim.direction == "less":
        return "holds" if high < 0 else "contradicted" if low > 0 else "inconclusive"
    raise ValueError(f"{claim.id}: no rule for direction {claim.direction!r}")


def _agrees(direction, value):
    return {"greater": value > 0, "less": value < 0, "not_less": value >= 0}[direction]


def mechanism_verdict(direction, values):
    """A mechanism claim's verdict from its per-seed values (the claim's figure minus its comparison)."""
    agree = sum(_agrees(direction, value) for value in values)
    if len(values) >= MIN_SEEDS and agree in (0, len(values)):
        return "holds" if agree else "contradicted"
    return "inconclusive"


def _seed_values(claim, analyses):
    """{seed: the claim's figure minus its comparison} for every seed where both are known."""
    figures = {(record["optimizer"], record["seed"]): record["groups"] for record in analyses}
    seeds = sorted({seed for optimizer, seed in figures if optimizer == claim.optimizer})
    values = {}
    for seed in seeds:
        ours = figures[(claim.optimizer, seed)].get(claim.group, {}).get(claim.quantity)
        if claim.baseline is not None:
            others = [figures.get((claim.baseline, seed), {}).get(claim.group, {}).get(claim.quantity)]
        else:
            # A group the split left empty (no many class at a small scale) has no figure: the others are compared.
            others = [figures[(claim.optimizer, seed)].get(group, {}).get(claim.quantity)
                      for group in claim.other_groups]
            others = [other for other in others if other is not None]
        if ours is None or not others or None in others:
            continue
        # Against the strongest competitor in the claim's direction: "the largest of the three" means above both.
        strongest = max(others) if claim.direction in ("greater", "not_less") else min(others)
        values[seed] = ours - strongest
    return values


def _judge_mechanism(claim, analyses):
    values = _seed_values(claim, analyses)
    if not values:
        return {"verdict": "not run"}
    spread = list(values.values())
    return {"verdict": mechanism_verdict(claim.direction, spread), "ours": float(np.mean(spread)),
            "low": min(spread), "high": max(spread), "seeds": len(spread),
            "agree": sum(_agrees(claim.direction, value) for value in spread)}


def _judge_accuracy(claim, boot):
    clean_protocol = CLEAN if (claim.optimizer, CLEAN) in boot.names else SELECTED
    if claim.kind == "value":
        selected = boot.accuracy((claim.optimizer, SELECTED), claim.group)
        clean = boot.accuracy((claim.optimizer, clean_protocol), claim.group)
    else:
        names = (claim.optimizer, claim.baseline)
        selected = boot.difference(*((name, SELECTED) for name in names), claim.group)
        clean = boot.difference(*((name, clean_protocol) for name in names), claim.group)
    if selected is None:
        return {"verdict": "not run"}
    ours, low, high = selected
    return {"verdict": accuracy_verdict(claim, low, high), "ours": ours, "low": low, "high": high,
            "clean": clean[0], "inside": low <= claim.published <= high, "seeds": boot.seeds}


def _evaluation_reasons(claim, selection, flip_tta):
    """Why an accuracy claim's figures are not measured as its source measured them; empty when they are."""
    if claim.kind == "mechanism" or (selection, flip_tta) == claim.setting.evaluation:
        return []
    theirs, tta = claim.setting.evaluation
    return [(f"`eval.selection={selection}`, `eval.flip_tta={str(flip_tta).lower()}` (source: {theirs} epoch, "
             f"{'with' if tta else 'without'} flip TTA)")]


def judge(claims, predictions, analyses, groups, num_classes, selection, flip_tta, off_setting):
    """One result per claim: {"claim", "verdict", "setting": reasons the runs are off it (empty: on it), and, when
    run, "ours", "low", "high", "seeds"; accuracy claims also "clean" and "inside" (the published figure inside
    our interval); mechanism claims "agree" (seeds that agree); a claim not run for want of optimizers names them
    in "missing"}.

    predictions: as bootstrap() takes them; analyses: the analyze@ records; off_setting(setting) -> [reasons].
    """
    boot = bootstrap(predictions, groups, num_classes, selection, flip_tta) if predictions else None
    ran = {"accuracy": {optimizer for optimizer, _ in predictions},
           "mechanism": {record["optimizer"] for record in analyses}}
    results = []
    for claim in claims:
        reasons = off_setting(claim.setting) + _evaluation_reasons(claim, selection, flip_tta)
        have = ran["mechanism" if claim.kind == "mechanism" else "accuracy"]
        missing = [optimizer for optimizer in claim.optimizers if optimizer not in have]
        if missing:
            outcome = {"verdict": "not run", "missing": missing}
        elif claim.kind == "mechanism":
            outcome = _judge_mechanism(claim, analyses)
        else:
            outcome = _judge_accuracy(claim, boot)
        if claim.kind == "value" and reasons and outcome["verdict"] != "not run":
            outcome["verdict"] = "not comparable"
        results.append({"claim": claim, "setting": reasons, **outcome})
    return results


def _rounded(value):
    return None if value is None else round(float(value), 4)


def metrics(results, label):
    """reports/claims.json: {claim id: {"kind", "paper", "ours", "low", "high", "verdict", "setting", "claim"}},
    "setting" "on" or "off" (its reasons are in the report), "paper" the published figure (null for a mechanism
    claim, which has none); accuracy claims add "clean", mechanism claims "seeds" and "agree"."""
    out = {}
    for result in results:
        claim = result["claim"]
        entry = {"kind": claim.kind, "paper": claim.published, "ours": _rounded(result.get("ours")),
                 "low": _rounded(result.get("low")), "high": _rounded(result.get("high")),
                 "verdict": result["verdict"], "setting": "off" if result["setting"] else "on",
                 "claim": text(claim, label)}
        if claim.kind == "mechanism":
            entry.update(seeds=result.get("seeds", 0), agree=result.get("agree", 0))
        else:
            entry["clean"] = _rounded(result.get("clean"))
        out[claim.id] = entry
    return out


def text(claim, label):
    """The claim in words; label(optimizer) names an optimizer."""
    if claim.kind == "mechanism":
        return claim.text.format(baseline=label(claim.baseline)) if claim.baseline else claim.text
    where = GROUP_PHRASES[claim.group]
    if claim.kind == "value":
        return f"{label(claim.optimizer)}'s accuracy on {where}"
    pair = f"{label(claim.optimizer)} {{}} {label(claim.baseline)} on {where}"
    if claim.direction == "not_above":
        return pair.format(f"not more than {claim.margin:g} point{'s' * (claim.margin != 1)} above")
    return pair.format("above" if claim.direction == "greater" else "below")


def signed(value, fmt=".1f"):
    """value with its sign always shown; the report's tables use it for differences."""
    # Rounded first, so that -0.04 reads +0.0; U+2212 is the typographic minus, as in the report's tables.
    shown = format(value, fmt)
    return shown.replace("-", "\u2212", 1) if shown.startswith("-") and float(shown) != 0 else f"+{shown.lstrip('-')}"


def _row(result, label, clean_column):
    claim = result["claim"]
    verdict = result["verdict"]
    if result["setting"] and claim.kind != "value" and verdict != "not run":
        verdict += " (off-setting)"
    if claim.kind == "mechanism":
        fmt = ".1f" if claim.quantity == "gap" else ".3g"
        spread = (f"{result['agree']} of {result['seeds']} seeds agree; range "
                  f"[{signed(result['low'], fmt)}, {signed(result['high'], fmt)}]")
        return [text(claim, label), _paper_cell(claim), signed(result["ours"], fmt), spread,
                *([""] * clean_column), verdict, ""]
    show = (lambda v: f"{v:.1f}") if claim.kind == "value" else signed
    clean = [] if not clean_column else ["n/a" if result["clean"] is None else show(result["clean"])]
    return [text(claim, label), _paper_cell(claim), show(result["ours"]),
            f"[{show(result['low'])}, {show(result['high'])}]", *clean, verdict,
            "yes" if result["inside"] else "no"]


def _paper_cell(claim):
    if claim.kind == "value":
        return f"{claim.published:.1f} ± {claim.tolerance:g}"
    if claim.kind == "difference":
        return signed(claim.published)
    return {"greater": "> 0", "less": "< 0", "not_less": "≥ 0"}[claim.direction]


def _not_run(rows, label):
    """One line for a paper's claims that did not run, and what they need."""
    skipped = [row for row in rows if row["verdict"] == "not run"]
    missing = list(dict.fromkeys(name for row in skipped for name in row.get("missing", ())))
    needs = []
    if missing:
        needs.append(f"runs of {', '.join(map(label, missing))} (`train.optimizers`)")
    if any(not row.get("missing") for row in skipped):
        needs.append("figures the runs lack (the curvature, with `analysis.curvature: false`, or an empty group)")
    return f"Not run: {len(skipped)} of its {len(rows)} claims, which need {' and '.join(needs)}."


def summary_line(results):
    counts = {verdict: sum(r["verdict"] == verdict for r in results) for verdict in VERDICTS}
    return (f"**{counts['holds']} held, {counts['contradicted']} contradicted, {counts['inconclusive']} "
            f"inconclusive, {counts['not comparable'] + counts['not run']} not comparable or not run** "
            f"(of {len(results)} claims).")


def _basis(results, protocol, selection):
    seeds = max((r.get("seeds", 0) for r in results if r["claim"].kind != "mechanism"), default=0)
    if not seeds:
        return "No accuracy claim ran."
    lines = [(f"Accuracy claims rest on {seeds} seed{'s' * (seeds != 1)} per optimizer, judged on {protocol}; "
              f"their {CONFIDENCE:.0%} intervals are percentile-bootstrap intervals over the test images "
              f"(stratified by class){' and the seeds' if seeds > 1 else ''}, paired across optimizers, "
              f"{RESAMPLES} resamples, seed {SEED}.")]
    if seeds == 1:
        lines.append("With one seed the intervals cover the test set's noise only, not training's.")
    elif 1 < seeds < 5:
        lines.append("With fewer than 5 seeds the seed part of each interval is crude.")
    if selection == "best":
        lines.append("The best epoch is chosen on the test set itself, so these intervals are optimistic.")
    return " ".join(lines)


def section(results, label, protocol, selection, flip_tta):
    """The report's "Did it reproduce?" section. protocol: the selected protocol in words."""
    if not results:
        return []
    clean_column = (selection, flip_tta) != ("last", False)
    headers = ["Claim", "Paper", "Ours", "95% interval", *(["Clean"] * clean_column), "Verdict",
               "Paper's value inside"]
    lines = ["## Did it reproduce?", "", summary_line(results), "", _basis(results, protocol, selection), ""]
    def where(result):
        return result["claim"].paper, result["claim"].setting.description

    for paper, setting in dict.fromkeys(map(where, results)):
        rows = [result for result in results if where(result) == (paper, setting)]
        reasons = list(dict.fromkeys(reason for row in rows for reason in row["setting"]))
        if not reasons:
            status = "These runs are on it."
        else:
            consequence = ("its value claims are not comparable, its other claims are judged and marked off-setting"
                           if any(row["claim"].kind == "value" for row in rows)
                           else "its claims are judged and marked off-setting")
            status = f"These runs are off it ({'; '.join(reasons)}): {consequence}."
        sources = "; ".join(dict.fromkeys(row["claim"].source for row in rows))
        lines += [f"### {registry.module('claims', paper).TITLE}", "",
                  f"Setting: {setting}. {status} Sources: {sources}.", ""]
        ran = [row for row in rows if row["verdict"] != "not run"]
        if ran:
            lines += [tabulate([_row(row, label, clean_column) for row in ran], headers=headers, tablefmt="github",
                               disable_numparse=True), ""]
        if len(ran) < len(rows):
            lines += [_not_run(rows, label), ""]
    return [*lines, RULES, ""]

