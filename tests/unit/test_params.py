"""The params.yaml schema: the repository's file is the paper's protocol, and every bad value, unknown or
missing key stops with one line naming the key, the problem and the fix."""

import copy
from pathlib import Path

import pytest
import yaml

from imbsam import params as schema
from imbsam import registry
from imbsam.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def _raw():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_params_yaml_is_the_schema_defaults():
    assert _raw() == schema.file_defaults()
    assert schema.load(REPO / "params.yaml").model_dump() == schema.defaults()


def test_auto_follows_the_dataset():
    cifar100, cifar10 = schema.defaults("cifar100"), schema.defaults("cifar10")
    assert (cifar100["split"]["many_threshold"], cifar100["split"]["few_threshold"], cifar100["imbsam"]["eta"]) == (
        100, 20, 20)
    assert (cifar10["split"]["many_threshold"], cifar10["split"]["few_threshold"], cifar10["imbsam"]["eta"]) == (
        1000, 200, 200)
    assert cifar10["data"]["md5"] == "c58f30108f718f92721af3b95e74349a"
    assert cifar10["data"]["url"].endswith("/cifar-10-python.tar.gz")
    assert (cifar10["focal_sam"]["rho"], cifar10["focal_sam"]["gamma"], cifar10["focal_sam"]["sharpness"]) == (
        0.2, 3.0, 0.5)
    # A value given is kept, whatever the dataset.
    assert schema.override(schema.params_model()(), {"data.dataset": "cifar10", "imbsam.eta": 50}).imbsam.eta == 50


@pytest.mark.parametrize("key", ["data.url", "data.md5"])
def test_another_datasets_official_archive_is_refused_before_any_download(key):
    with pytest.raises(InputError, match=f"{key} is CIFAR-100's archive but data.dataset=cifar10: set {key}=auto"):
        official = schema.defaults()["data"][key.split(".")[1]]
        schema.override(schema.params_model()(), {"data.dataset": "cifar10", key: official})


def test_every_key_says_what_it_means():
    for section, model in schema.sections().items():
        for name, field in model.model_fields.items():
            assert field.description, f"{section}.{name}"


def test_the_paper_protocol_leaves_out_how_a_run_is_made():
    assert {"train.mode", "train.kernels", "device.target", "eval.batch_size", "data.url"}.isdisjoint(
        schema.paper_protocol())
    assert schema.paper_protocol()["train.schedule"] == "epoch_cosine_at_start"
    assert schema.paper_protocol()["imbsam.eta"] == 20 and schema.paper_protocol()["model.arch"] == "resnet34"


def test_every_optimizer_has_its_group_and_its_step():
    raw = _raw()
    for name, optimizer in registry.modules("optimizers").items():
        assert raw[name] == optimizer.Params().model_dump()
        assert callable(optimizer.make_step)


def test_every_loss_has_its_group_and_its_cell():
    raw = _raw()
    for name, loss in registry.modules("losses").items():
        assert raw[name] == loss.Params().model_dump()
        assert callable(loss.make_loss)


@pytest.mark.parametrize(("dotted", "value", "expected"), [
    ("train.optimizers", ["sgd", "imbsm"], ("train.optimizers[1]='imbsm' is invalid: input should be 'focal_sam', "
                                           "'imbsam', 'sam', 'sgd' or 'sse_sam'")),
    ("train.optimizers", [], "train.optimizers=[] is invalid: must list at least one"),
    ("train.optimizers", ["sgd", "sgd"], "must not list one twice"),
    ("train.seeds", [1, True], "train.seeds[1]=True is invalid: input should be a valid integer"),
    ("train.seeds", [-3], "seeds must be integers >= 0"),
    ("train.lr", -0.1, "train.lr=-0.1 is invalid: input should be greater than 0"),
    ("train.lr", "0.1", "train.lr='0.1' is invalid: input should be a valid number"),
    ("train.lr", float("nan"), "train.lr=nan is invalid"),
    ("train.momentum", 1.0, "input should be less than 1"),
    ("train.epochs", 2.5, "train.epochs=2.5 is invalid: input should be a valid integer"),
    ("train.schedule", "cosine", "input should be 'epoch_cosine_at_start' or 'step_cosine'"),
    ("train.decay_bn", "yes", "train.decay_bn='yes' is invalid: input should be a valid boolean"),
    ("eval.selection", "median", "eval.selection='median' is invalid: input should be 'best' or 'last'"),
    ("eval.flip_tta", 1, "eval.flip_tta=1 is invalid"),
    ("model.arch", "resnet18", "model.arch='resnet18' is invalid: input should be 'resnet34' or 'resnet32'"),
    ("imbsam.rho", -0.5, "imbsam.rho=-0.5 is invalid: input should be greater than or equal to 0"),
    ("imbsam.eta", 20.5, "imbsam.eta=20.5 is invalid: input should be a valid integer or 'auto'"),
    ("imbsam.eta", "Auto", "imbsam.eta='Auto' is invalid: input should be a valid integer or 'auto'"),
    ("data.dataset", "cifar1000", "data.dataset='cifar1000' is invalid: input should be 'cifar10' or 'cifar100'"),
    ("train.loss", "focal", "train.loss='focal' is invalid: input should be 'balanced_softmax', 'ce', "),
    ("ldam_drw.beta", 1.0, "ldam_drw.beta=1.0 is invalid: input should be less than 1"),
    ("sam.rho", None, "sam.rho=None is invalid"),
    ("device.target", "TPU", "device.target='TPU' is invalid: input should be 'auto', 'CPU', 'GPU' or 'Ascend'"),
    ("split.few_threshold", 101, "split.few_threshold=101 is invalid: must not exceed split.many_threshold (100)"),
    ("data.md5", "eb9058", "data.md5='eb9058' is invalid: string should match pattern"),
])
def test_a_bad_value_names_its_key_the_problem_and_the_papers_value(dotted, value, expected):
    with pytest.raises(InputError) as error:
        schema.override(schema.params_model()(), {dotted: value})
    message = str(error.value)
    assert expected in message
    key = dotted
    assert f"({key}: " in message and "the paper's value: " in message
    assert "\n" not in message


def test_an_unknown_key_is_a_typo_with_the_keys_that_exist():
    raw = _raw()
    raw["train"]["learning_rate"] = 0.1
    with pytest.raises(InputError, match=r"unknown key train.learning_rate: a typo\? the keys here are optimizers, "):
        schema.validate(raw)
    raw = _raw()
    raw["adam"] = {"lr": 0.001}
    with pytest.raises(InputError, match=r"unknown key adam: a typo\? the sections are data, split, model, train, "):
        schema.validate(raw)


def test_a_missing_key_names_what_to_add():
    raw = _raw()
    del raw["train"]["schedule"]
    with pytest.raises(InputError, match="missing key train.schedule; add it with its default, epoch_cosine_at_start"):
        schema.validate(raw)
    raw = _raw()
    del raw["imbsam"]
    with pytest.raises(InputError, match=r"missing key imbsam; add it with its default, \{rho: 0.05, eta: auto, "):
        schema.validate(raw)


def test_several_problems_are_counted_behind_the_first():
    raw = copy.deepcopy(_raw())
    raw["train"].update(lr=-1.0, epochs=0)
    with pytest.raises(InputError, match=r"\(and 1 more problem\)$"):
        schema.validate(raw)


def test_a_file_that_is_not_yaml_or_not_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(InputError, match="is not valid YAML"):
        schema.load(path)
    path.write_text("- a list\n")
    with pytest.raises(InputError, match="must be a mapping of sections"):
        schema.load(path)
    with pytest.raises(InputError, match="not found: run the stage from the repository root"):
        schema.load(tmp_path / "missing.yaml")
