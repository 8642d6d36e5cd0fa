"""The papers' claims as data, the bootstrap behind their intervals, and the verdict rules on crafted records."""

import numpy as np
import pytest

from imbsam import claims, claims_report, published, registry
from imbsam.bootstrap import Bootstrap
from imbsam.claims import PAPER_PROTOCOL, Difference, Mechanism, Value

GROUPS = {"many": [0, 1, 2, 3], "medium": [4, 5, 6], "few": [7, 8, 9]}
NUM_CLASSES = 10


def _labels(per_class):
    return np.repeat(np.arange(NUM_CLASSES), per_class)


def _predictions(labels, right):
    """Predicted classes: the label where `right`, the next class elsewhere."""
    return np.where(right, labels, (labels + 1) % NUM_CLASSES)


def _draw(labels, accuracy, rng):
    """Each image right with its class's probability: binomial per-class accuracies around a known truth."""
    return _predictions(labels, rng.random(labels.size) < np.asarray(accuracy)[labels])


# --- the claims as data -----------------------------------------------------------------------------------------

def test_every_claim_is_well_formed_and_names_real_optimizers():
    all_claims = claims.all_claims()
    assert len({claim.id for claim in all_claims}) == len(all_claims)
    optimizers = set(registry.names("optimizers"))
    for claim in all_claims:
        assert set(claim.optimizers) <= optimizers, claim.id
        assert claim.source and claim.setting.description, claim.id
        if claim.kind == "mechanism":
            assert claim.quantity in ("gap", "lambda_max", "lambda_min"), claim.id
    assert all_claims[0].paper == "imbsam"


def test_a_claim_with_a_direction_its_kind_has_no_rule_for_is_refused():
    with pytest.raises(ValueError, match="direction 'not_less'"):
        Difference("test", "a table", PAPER_PROTOCOL, "imbsam", "sgd", "few", 2.0, "not_less")
    with pytest.raises(ValueError, match="direction 'not_above'"):
        Mechanism("test", "a figure", PAPER_PROTOCOL, "m", "text", "gap", "sgd", "few", "not_above", baseline="sam")
    with pytest.raises(ValueError, match="not both or none"):
        Mechanism("test", "a figure", PAPER_PROTOCOL, "m", "text", "gap", "sgd", "few", "less")


def test_the_imbsam_papers_argument_is_its_table_read_as_differences():
    """The differences the issue lists, in the direction the paper argues, from imbsam/published.py's table."""
    table = published.PUBLISHED[0].results
    differences = {(c.optimizer, c.baseline, c.group): (c.published, c.direction, c.margin)
                   for c in claims.all_claims() if c.paper == "imbsam" and c.kind == "difference"}
    assert differences == {
        ("imbsam", "sgd", "all"): (3.5, "greater", 0.0), ("imbsam", "sam", "all"): (2.2, "greater", 0.0),
        ("imbsam", "sgd", "few"): (5.9, "greater", 0.0), ("imbsam", "sam", "few"): (7.0, "greater", 0.0),
        ("imbsam", "sgd", "medium"): (6.9, "greater", 0.0), ("sam", "sgd", "many"): (1.9, "greater", 0.0),
        ("sam", "sgd", "few"): (-1.1, "not_above", 1.0), ("imbsam", "sgd", "many"): (-1.9, "less", 0.0)}
    values = {(c.optimizer, c.group): c.published for c in claims.all_claims()
              if c.paper == "imbsam" and c.kind == "value"}
    assert values == {(o, g): table[o][g] for o in ("sgd", "sam", "imbsam") for g in claims.GROUPS}


# --- the bootstrap ----------------------------------------------------------------------------------------------

def test_intervals_from_binomial_draws_cover_the_true_accuracy_about_95_percent_of_the_time():
    """400 test sets drawn from known per-class accuracies: the share of intervals that hold the truth is 95%
    within 3 standard errors of a proportion over 400 repetitions (about +-3.3 points)."""
    rng = np.random.default_rng(7)
    truth = np.linspace(0.2, 0.9, NUM_CLASSES)
    labels = _labels(40)
    repetitions, covered = 400, {"all": 0, "few": 0}
    for repetition in range(repetitions):
        boot = Bootstrap({"run": [_draw(labels, truth, rng)]}, labels, GROUPS, NUM_CLASSES, resamples=400,
                         seed=repetition)
        for group, classes in (("all", range(NUM_CLASSES)), ("few", GROUPS["few"])):
            _, low, high = boot.accuracy("run", group)
            covered[group] += low <= 100 * truth[list(classes)].mean() <= high
    margin = 3 * np.sqrt(0.95 * 0.05 / repetitions)
    for group, hits in covered.items():
        assert abs(hits / repetitions - 0.95) < margin, (group, hits / repetitions)


def test_the_estimate_is_the_mean_over_seeds_of_the_balanced_accuracy():
    labels = _labels([10, 10, 10, 10, 10, 10, 10, 10, 10, 20])  # an unbalanced test set: balanced accuracy
    right = np.zeros(labels.size, bool)
    right[labels == 9] = np.arange(20) < 5  # class 9: 25%; every other class 0%
    boot = Bootstrap({"run": [_predictions(labels, right), _predictions(labels, labels >= 0)]}, labels, GROUPS,
                     NUM_CLASSES, resamples=50)
    estimate, low, high = boot.accuracy("run", "few")
    assert estimate == pytest.approx((25 / 3 + 100) / 2)
    assert low <= estimate <= high


def test_a_paired_difference_is_narrower_than_an_unpaired_one_when_errors_are_shared():
    """Two optimizers that fail on mostly the same images: pairing them on one image resample cancels the shared
    part; differencing two independent resamples does not."""
    rng = np.random.default_rng(3)
    labels = _labels(50)
    hard = rng.random(labels.size) < 0.5
    first = _predictions(labels, ~hard)
    second = _predictions(labels, ~hard ^ (rng.random(labels.size) < 0.05))
    paired = Bootstrap({"a": [first], "b": [second]}, labels, GROUPS, NUM_CLASSES, resamples=1000)
    _, low, high = paired.difference("a", "b", "all")
    unpaired = (Bootstrap({"a": [first]}, labels, GROUPS, NUM_CLASSES, resamples=1000, seed=1).replicates("a", "all")
                - Bootstrap({"b": [second]}, labels, GROUPS, NUM_CLASSES, resamples=1000, seed=2)
                .replicates("b", "all"))
    unpaired_width = np.subtract(*np.percentile(unpaired, [97.5, 2.5]))
    assert high - low < unpaired_width / 3, (high - low, unpaired_width)


def test_seeds_widen_the_interval_with_the_training_noise_between_them():
    labels = _labels(100)
    seeds = [_predictions(labels, np.arange(labels.size) % 100 < accuracy) for accuracy in (40, 60, 50, 70, 30)]
    one = Bootstrap({"run": seeds[:1]}, labels, GROUPS, NUM_CLASSES, resamples=500).accuracy("run", "all")
    five = Bootstrap({"run": seeds}, labels, GROUPS, NUM_CLASSES, resamples=500).accuracy("run", "all")
    assert one[0] == pytest.approx(40) and five[0] == pytest.approx(50)
    # One seed: the test images' noise only (about +-3 points on 1000 images); five seeds 40 points apart add
    # theirs (a standard deviation of 16 points, about 7 for their mean).
    assert one[2] - one[1] < 8 and five[2] - five[1] > 2 * (one[2] - one[1]) + 10


def test_seeds_are_paired_across_optimizers():
    """Seeds 40 points apart, each optimizer 10 points above the other on every seed: the difference's interval
    has no seed spread in it (the seeds are drawn once for both), only the test images'."""
    labels = _labels(100)
    position = np.arange(labels.size) % 100
    series = {name: [_predictions(labels, position < accuracy + offset) for accuracy in (20, 60, 40)]
              for name, offset in (("a", 10), ("b", 0))}
    boot = Bootstrap(series, labels, GROUPS, NUM_CLASSES, resamples=500)
    estimate, low, high = boot.difference("a", "b", "all")
    assert estimate == pytest.approx(10.0)
    # Unpaired seeds would spread the difference by about the seeds' own spread (16 points).
    assert high - low < 6 and boot.accuracy("a", "all")[2] - boot.accuracy("a", "all")[1] > 20


def test_an_interval_without_spread_is_its_estimate_exactly():
    """Every class all right or all wrong: no resample changes anything, and claims.json's `low <= ours <= high`
    must hold to the last bit, not up to float32 rounding."""
    labels = _labels(30)
    predicted = _predictions(labels, np.isin(labels, [0, 2, 5, 8]))
    boot = Bootstrap({"run": [predicted]}, labels, GROUPS, NUM_CLASSES, resamples=100)
    for group in ("many", "medium", "few", "all"):
        estimate, low, high = boot.accuracy("run", group)
        assert low == estimate == high, group


def test_a_bootstrap_is_seeded():
    labels = _labels(20)
    series = {"run": [_draw(labels, np.full(NUM_CLASSES, 0.5), np.random.default_rng(0))]}
    first, second = (Bootstrap(series, labels, GROUPS, NUM_CLASSES, resamples=100, seed=5) for _ in range(2))
    assert first.accuracy("run", "all") == second.accuracy("run", "all")


# --- verdicts ---------------------------------------------------------------------------------------------------

def _value(published_value=50.0):
    return Value("test", "a table", PAPER_PROTOCOL, "sgd", "all", published_value)


def _difference(direction, published_value=2.0, margin=0.0):
    return Difference("test", "a table", PAPER_PROTOCOL, "imbsam", "sgd", "few", published_value, direction, margin)


@pytest.mark.parametrize(("claim", "low", "high", "verdict"), [
    (_value(), 49.2, 50.9, "holds"),
    (_value(), 48.5, 50.5, "inconclusive"),  # meets 49-51 but does not lie inside it
    (_value(), 51.2, 53.0, "contradicted"),
    (_value(), 44.0, 48.9, "contradicted"),
    (_difference("greater"), 0.3, 4.0, "holds"),
    (_difference("greater"), -0.5, 4.0, "inconclusive"),
    (_difference("greater"), -3.0, -0.1, "contradicted"),
    (_difference("less", -2.0), -4.0, -0.2, "holds"),
    (_difference("less", -2.0), 0.1, 2.0, "contradicted"),
    (_difference("not_above", -1.1, 1.0), -3.0, 0.9, "holds"),
    (_difference("not_above", -1.1, 1.0), -3.0, 1.5, "inconclusive"),
    (_difference("not_above", -1.1, 1.0), 1.2, 3.0, "contradicted"),
])
def test_accuracy_verdicts(claim, low, high, verdict):
    assert claims_report.accuracy_verdict(claim, low, high) == verdict


@pytest.mark.parametrize(("direction", "values", "verdict"), [
    ("less", [-1.0, -2.0, -0.5], "holds"),
    ("less", [-1.0, -2.0], "inconclusive"),  # all agree, but fewer than 3 seeds
    ("less", [-1.0, 2.0, -0.5], "inconclusive"),
    ("less", [1.0, 2.0, 0.5], "contradicted"),
    ("greater", [0.0, 1.0, 2.0], "inconclusive"),  # a tie is no agreement with "greater"
    ("not_less", [0.0, 1.0, 2.0], "holds"),
    ("not_less", [-1.0, -0.1, -2.0], "contradicted"),
])
def test_mechanism_verdicts(direction, values, verdict):
    assert claims_report.mechanism_verdict(direction, values) == verdict


def _record(optimizer, seed, few_gap, few_lambda_max=None):
    groups = {"many": {"gap": 1.0, "lambda_max": 5.0}, "medium": {"gap": 2.0, "lambda_max": 6.0},
              "few": {"gap": few_gap, "lambda_max": few_lambda_max}}
    return {"optimizer": optimizer, "seed": seed, "groups": groups}


def _judge(claim_list, predictions, analyses=(), off=()):
    return claims_report.judge(claim_list, predictions, list(analyses), GROUPS, NUM_CLASSES, "best", True,
                               lambda setting: list(off))


def _runs(optimizers, seeds=(1,), accuracy=0.5):
    labels = _labels(30)
    rng = np.random.default_rng(0)
    runs = {}
    for optimizer in optimizers:
        for seed in seeds:
            predicted = _draw(labels, np.full(NUM_CLASSES, accuracy), rng)
            runs[(optimizer, seed)] = {"labels": labels, "last": predicted, "last_tta": predicted, "best": predicted,
                                       "best_tta": predicted}
    return runs


def test_not_run_takes_precedence_over_not_comparable():
    value = _value()
    missing = Value("test", "a table", PAPER_PROTOCOL, "sam", "all", 50.0)
    results = _judge([value, missing], _runs(["sgd"]), off=["`train.epochs` = 1 (paper: 200)"])
    assert [r["verdict"] for r in results] == ["not comparable", "not run"]
    assert results[1]["missing"] == ["sam"]
    # A value claim off its setting still shows our estimate and interval.
    assert results[0]["low"] <= results[0]["ours"] <= results[0]["high"]


def test_a_difference_off_its_setting_is_judged_and_marked():
    runs = _runs(["imbsam", "sgd"])
    on, off = (_judge([_difference("greater")], runs, off=reasons)[0] for reasons in ((), ["synthetic data"]))
    assert on["verdict"] == off["verdict"] != "not comparable"
    assert off["setting"] == ["synthetic data"] and on["setting"] == []
    row = claims_report._row(off, lambda name: name, clean_column=True)
    assert row[-2].endswith("(off-setting)")


def test_mechanism_claims_read_every_seed_and_need_their_figures():
    gap = Mechanism("test", "a figure", PAPER_PROTOCOL, "gap", "few gap largest", "gap", "sgd", "few", "greater",
                    other_groups=("many", "medium"))
    curvature = Mechanism("test", "a figure", PAPER_PROTOCOL, "flat", "flatter few", "lambda_max", "imbsam", "few",
                          "less", baseline="sgd")
    analyses = [_record("sgd", seed, few_gap) for seed, few_gap in ((1, 5.0), (2, 3.0), (3, 2.5))]
    analyses += [_record("imbsam", seed, 1.0) for seed in (1, 2, 3)]
    results = _judge([gap, curvature], _runs(["sgd", "imbsam"], seeds=(1, 2, 3)), analyses)
    # SGD's few gap minus the larger of many's (1) and medium's (2), seed by seed.
    assert results[0]["verdict"] == "holds" and results[0]["ours"] == pytest.approx((3.0 + 1.0 + 0.5) / 3)
    assert (results[0]["low"], results[0]["high"], results[0]["agree"]) == (0.5, 3.0, 3)
    # Curvature off (lambda_max None): nothing to judge.
    assert results[1]["verdict"] == "not run" and "missing" not in results[1]


def test_a_group_the_split_left_empty_drops_out_of_the_comparison():
    gap = Mechanism("test", "a figure", PAPER_PROTOCOL, "gap", "few gap largest", "gap", "sgd", "few", "greater",
                    other_groups=("many", "medium"))
    analyses = [_record("sgd", seed, 3.0) for seed in (1, 2, 3)]
    for record in analyses:
        record["groups"]["many"] = {"gap": None}
    result = _judge([gap], _runs(["sgd"], seeds=(1, 2, 3)), analyses)[0]
    assert result["verdict"] == "holds" and result["ours"] == pytest.approx(1.0)  # against medium's 2


def test_mechanism_claims_need_analyses_not_predictions():
    curvature = Mechanism("test", "a figure", PAPER_PROTOCOL, "flat", "flatter few", "lambda_max", "imbsam", "few",
                          "less", baseline="sgd")
    analyses = [_record(optimizer, seed, 1.0, few_lambda_max=value)
                for seed in (1, 2, 3) for optimizer, value in (("sgd", 9.0), ("imbsam", 4.0))]
    result = _judge([curvature], {}, analyses)[0]
    assert result["verdict"] == "holds" and result["ours"] == pytest.approx(-5.0)


def test_accuracies_measured_otherwise_than_the_source_are_not_comparable_with_its_values():
    """The paper's figures are of the best epoch with flip TTA: a report of the clean protocol (last epoch, no
    TTA) gives no verdict on them, but still judges the differences, marked off-setting."""
    results = claims_report.judge([_value(), _difference("greater")], _runs(["sgd", "imbsam"]), [], GROUPS,
                                  NUM_CLASSES, "last", False, lambda setting: [])
    assert results[0]["verdict"] == "not comparable"
    assert results[1]["verdict"] != "not comparable" and "`eval.selection=last`" in results[1]["setting"][0]


def test_claims_json_has_the_contracted_keys_and_verdicts():
    not_above = Difference("test", "a table", PAPER_PROTOCOL, "imbsam", "sgd", "many", -1.1, "not_above", 1.0)
    results = _judge([_value(), _difference("greater"), not_above], _runs(["sgd", "imbsam"]))
    out = claims_report.metrics(results, str.upper)
    assert len(out) == 3
    for entry in out.values():
        assert {"kind", "paper", "ours", "low", "high", "verdict", "setting"} <= set(entry)
        assert entry["verdict"] in claims_report.VERDICTS and entry["setting"] in ("on", "off")
        assert entry["low"] <= entry["ours"] <= entry["high"]
    assert out["test:imbsam-sgd:few"]["claim"] == "IMBSAM above SGD on the few classes"


def test_a_claim_of_another_setting_is_checked_against_its_own_keys():
    """Focal-SAM's setting is its script's, not the ImbSAM paper's: the paper's defaults are off it, a run with
    its values is on it (on real data)."""
    from pathlib import Path

    from imbsam import params as schema
    from imbsam.claims import focal_sam
    from imbsam.report import comparability_warnings

    params = schema.load(Path(__file__).resolve().parents[2] / "params.yaml").model_dump()
    summary = {"synthetic": False}
    reasons = comparability_warnings(params, summary, focal_sam.SETTING.keys)
    assert [reason.split(" = ")[0] for reason in reasons] == ["`model.arch`", "`train.loss`", "`train.lr`"]
    assert comparability_warnings(params, summary) == []
    params["model"]["arch"], params["train"]["loss"], params["train"]["lr"] = "resnet32", "logit_adjusted", 0.1
    assert comparability_warnings(params, summary, focal_sam.SETTING.keys) == []
    assert comparability_warnings(params, {"synthetic": True}, focal_sam.SETTING.keys) != []


def test_optimizers_with_different_seeds_are_refused_rather_than_paired_wrongly():
    runs = {**_runs(["sgd"], seeds=(1, 2)), **_runs(["imbsam"], seeds=(1, 3))}
    with pytest.raises(ValueError, match="seeds differ"):
        _judge([_difference("greater")], runs)
