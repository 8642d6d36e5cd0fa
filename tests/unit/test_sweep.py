"""The sweep report's grouping of experiments on its own, without DVC; the report over real experiments is in
tests/test_sweep.py."""

from imbsam import sweep


def _entry(name, dataset="cifar100", loss="ce", seeds=None, claims=None, **changes):
    from imbsam.params import file_defaults

    params = file_defaults()
    params["data"]["dataset"] = dataset
    params["train"]["loss"] = loss
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    return name, params, seeds, claims or {}


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


def test_mechanism_figures_pool_over_the_same_seeds_as_the_accuracies():
    groups = {"many": 50.0, "medium": 30.0, "few": 10.0, "all": 30.0}

    def mechanism(lambda_max):
        figures = {"gap": 2.0, "lambda_max": lambda_max, "lambda_min": -1.0, "saddle_ratio": 0.5, "trace": 9.0,
                   "rho_sharpness": 0.25}
        return {"weight_norm": 40.0, "many": figures, "medium": figures, "few": figures}

    # As `dvc exp show` gives it: without null values, so without a group whose figures were all null.
    without_many = {key: value for key, value in mechanism(10.0).items() if key != "many"}
    found = [_entry("a", seeds={"sgd": {"1": {**groups, "mechanism": without_many}}}),
             _entry("b", seeds={"sgd": {"2": {**groups, "mechanism": mechanism(12.0)},
                                        "1": {**groups, "mechanism": mechanism(99.0)}}}),
             _entry("c", seeds={"sgd": {"3": groups}})]
    text = sweep.render(sweep.collect(found))
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| SGD | few ")]
    # Seeds 1 (a's, not b's repeat) and 2; seed 3 has no analysis.
    assert next(line for line in text.splitlines() if line.startswith("| SGD | many ")).count("n/a") == 0
    assert rows == [["SGD", "few", "2.0 ± 0.0", "11 ± 1.414", "-1 ± 0", "0.500 ± 0.000", "9 ± 0", "0.25 ± 0",
                     "40.0 ± 0.0"]]


def test_each_experiments_verdicts_stand_under_its_setting_for_the_claims_any_ran():
    groups = {"many": 50.0, "medium": 30.0, "few": 10.0, "all": 30.0}

    def claims(verdict, setting="on"):
        return {"imbsam:imbsam-sgd:all": {"kind": "difference", "verdict": verdict, "setting": setting,
                                          "claim": "ImbSAM above SGD on all classes"},
                "sse_sam:sse_sam:all": {"kind": "value", "verdict": "not run", "claim": "SSE-SAM on all classes"}}

    found = [_entry("a", seeds={"sgd": {"1": groups}}, claims=claims("holds")),
             _entry("b", seeds={"sgd": {"2": groups}}, claims=claims("inconclusive", setting="off")),
             _entry("c", seeds={"sgd": {"3": groups}})]
    text = sweep.render(sweep.collect(found))
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|--")]
    assert rows[-2:] == [["claim", "a", "b"],
                         ["ImbSAM above SGD on all classes", "holds", "inconclusive (off-setting)"]]
    assert "SSE-SAM on all classes" not in text
