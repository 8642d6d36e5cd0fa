"""The schema of params.yaml: every key's type, range, default and meaning, stated once, and the choice
tuples the rest of the library checks its arguments against.

The defaults are the paper's protocol (CIFAR-100-LT IF 100, ResNet-34, 200 epochs, the authors'
hyper-parameters), and params.yaml holds exactly them (a test says so). Keys marked `protocol=False`
(where the data comes from, execution mode, kernels, device, evaluation batch size) change how a run
is made, not what it computes; the others are the protocol the report compares against (paper_protocol).

The sections of every run (data:, split:, model:, train:, eval:, device:) are here. An optimizer's group
(sam:, imbsam:, ...) is the `Params` of its module imbsam/optimizers/<name>.py, a loss's (logit_adjusted:, ...)
that of imbsam/losses/<name>.py; both are found by name (imbsam.registry).

Keys set to `auto` take their dataset's value (imbsam/datasets/<name>.py: the archive's URL and md5, the group
thresholds and the tail thresholds the long-tail literature uses for it), so `-S data.dataset=cifar10` is all
a switch takes; `defaults()` and a validated Params hold the values, params.yaml the word.

`load(path)` validates the whole file, in a fraction of a second and before any work: the download stage, which
DVC runs first in every repro, does, so a bad value anywhere stops the pipeline with one line naming the key and
the fix. A later stage validates the sections and the groups it computes with (`load(path, groups=...)`), so that
it imports, and DVC tracks, only those modules.
"""

import functools
import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from imbsam import registry
from imbsam.errors import InputError

# The choices of the keys that take one of a few words; the modules that act on them import them from here.
ARCHS = ("resnet34", "resnet32")
PROFILES = ("exp", "step")
SCHEDULES = ("epoch_cosine_at_start", "step_cosine")
MODES = ("auto", "pynative", "graph")
STEP_MODES = ("graph", "pynative")  # what a train step runs in (imbsam.optim.make_train_step); train.mode adds auto
KERNELS = ("auto", "onednn", "mindspore")
TARGETS = ("auto", "CPU", "GPU", "Ascend")
SELECTIONS = ("best", "last")
AUTO = "auto"
# A value that follows data.dataset, resolved before a step or a loss sees it.
Auto = Literal["auto"]
PAPER_DATASET = "cifar100"


def dataset_values(name):
    """Every key dataset `name` gives a value for: data.url and data.md5 from its module, the rest from its
    DEFAULTS (the values of the keys set to auto)."""
    module = registry.module("datasets", name)
    return {"data.url": module.URL, "data.md5": module.MD5, **module.DEFAULTS}


def knob(default, meaning, *, protocol=True, **checks):
    """A params.yaml key: its default (the paper's value), what it means, and its checks (pydantic's ge, gt,
    le, lt, pattern, ...)."""
    return Field(default, description=meaning, json_schema_extra={"protocol": protocol}, **checks)


class Section(BaseModel):
    # strict: YAML's `true` is no integer and "0.1" no number; forbid: a misspelt key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _finite(value):
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class GroupParams(Section):
    """An optimizer's or a loss's params.yaml group."""

    def resolved(self):
        """The group as a dict, every `auto` already given its dataset's value (validate and defaults do that)."""
        values = self.model_dump()
        left = [name for name, value in values.items() if value == AUTO]
        if left:
            raise ValueError(f"{', '.join(left)} still auto: take the group from imbsam.params (validate, defaults)")
        return values


class OptimizerParams(GroupParams):
    """An optimizer's group; its fields are its make_step's keyword arguments unless `step_options` says
    otherwise."""

    def step_options(self, class_counts, schedule=None):
        """make_step's keyword arguments, given the training split's per-class counts and the run's
        (epochs, steps per epoch), None where no run is planned (a benchmark)."""
        return self.resolved()


class LossParams(GroupParams):
    """A loss's group."""

    def loss_options(self, class_counts):
        """make_loss's keyword arguments, given the split's per-class counts."""
        return {}


class Data(Section):
    dataset: Literal[registry.names("datasets")] = knob("cifar100", "cifar100 (the paper's) | cifar10")
    url: str = knob(AUTO, "auto (the dataset's official URL) | an http(s) URL, a file:// URL or a local path of the "
                    "archive", protocol=False, min_length=1)
    md5: str = knob(AUTO, "auto (the official archive's) | the archive's md5, 32 hex digits in quotes",
                    pattern=r"^(auto|[0-9a-fA-F]{32})$")


class Split(Section):
    imb_factor: float = knob(0.01, "tail count / head count (0.01 = imbalance factor 100)", gt=0, le=1)
    profile: Literal[PROFILES] = knob("exp", "exp: count_c = int(n_max * imb_factor ** (c / (C - 1))), n_max 500 "
                                      "on CIFAR-100, 5000 on CIFAR-10; step: two levels")
    shuffle_seed: int = knob(-1, "-1: the first count_c images in file order (the paper); >= 0: seeded shuffle",
                             ge=-1)
    many_threshold: int | Literal[AUTO] = knob(AUTO, "many: classes with more training images than this (auto: "
                                               "100 on CIFAR-100, 1000 on CIFAR-10)", ge=0)
    few_threshold: int | Literal[AUTO] = knob(AUTO, "few: classes with fewer training images than this (auto: 20 "
                                              "on CIFAR-100, 200 on CIFAR-10)", ge=0)

    @field_validator("few_threshold")
    @classmethod
    def _thresholds_in_order(cls, few, info):
        many = info.data.get("many_threshold")
        if isinstance(many, int) and isinstance(few, int) and few > many:
            raise ValueError(f"must not exceed split.many_threshold ({many})")
        return few


class Model(Section):
    arch: Literal[ARCHS] = knob("resnet34", "resnet34 (the paper's) | resnet32 (LDAM's, cheap on a CPU)")


def _distinct(values):
    if not values:
        raise ValueError("must list at least one")
    if len(set(values)) != len(values):
        raise ValueError("must not list one twice")
    return values


class Train(Section):
    # The paper's table: its three optimizers, not every row of the methods table.
    optimizers: list[Literal[registry.names("optimizers")]] = knob(["sgd", "sam", "imbsam"],
                                                     "one training run per optimizer and seed")
    seeds: list[int] = knob([9826], "the authors' seed; several give mean and std in the report")
    loss: Literal[registry.names("losses")] = knob("ce", "ce (the paper's) | logit_adjusted | balanced_softmax | "
                                                    "ldam_drw (imbsam/losses/; each with its group below)")
    epochs: int = knob(200, "epochs of the whole long-tailed training set", ge=1)
    batch_size: int = knob(64, "images per step", ge=1)
    lr: float = knob(0.01, "the base learning rate", gt=0)
    momentum: float = knob(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = knob(0.001, "L2 weight decay", ge=0)
    decay_bn: bool = knob(True, "decay BatchNorm scale and shift too, as PyTorch's SGD in the authors' code")
    schedule: Literal[SCHEDULES] = knob("epoch_cosine_at_start", "epoch_cosine_at_start (the authors': per "
                                        "epoch, the last at lr 0) | step_cosine (per step, towards 0)")
    max_steps_per_epoch: int = knob(0, "0: whole epochs; > 0 caps the steps of every epoch (quick runs)", ge=0)
    mode: Literal[MODES] = knob("auto", "auto (= graph: each piece of a step compiled) | graph | pynative "
                                "(op by op, to debug)", protocol=False)
    kernels: Literal[KERNELS] = knob("auto", "auto (the CPU: imbsam's oneDNN convolutions and fused BatchNorm if "
                                     "they load) | onednn | mindspore", protocol=False)

    _finite_numbers = field_validator("lr", "momentum", "weight_decay")(_finite)

    @field_validator("optimizers", "seeds")
    @classmethod
    def _listed_once(cls, values):
        return _distinct(values)

    @field_validator("seeds")
    @classmethod
    def _natural(cls, seeds):
        if any(seed < 0 for seed in seeds):
            raise ValueError("seeds must be integers >= 0")
        return seeds


class Eval(Section):
    flip_tta: bool = knob(True, "the report's figure with horizontal-flip test-time augmentation (the paper's)")
    selection: Literal[SELECTIONS] = knob("best", "best (the authors': the best epoch on the test set) | last")
    batch_size: int = knob(500, "test images per forward pass: memory only", protocol=False, ge=1)


class Device(Section):
    target: Literal[TARGETS] = knob("auto", "auto (Ascend, then GPU, then CPU) | CPU | GPU | Ascend",
                                    protocol=False)


class Analysis(Section):
    """The mechanism stage (analyze@): generalization gap and curvature per class group of a run's last epoch."""

    curvature: bool = knob(True, "measure the curvature too (false: the generalization gap only, in seconds)",
                           protocol=False)
    samples_per_group: int = knob(128, "training images per group the curvature is measured on (a seeded subsample "
                                  "when the group has more)", protocol=False, ge=1)
    lanczos_steps: int = knob(16, "Lanczos steps per run (Ritz values of the spectral density)", protocol=False, ge=2)
    lanczos_runs: int = knob(3, "Lanczos runs, each from its own random start", protocol=False, ge=1)
    hutchinson_samples: int = knob(24, "Rademacher vectors of the trace estimate", protocol=False, ge=2)
    rho: float = knob(0.05, "radius of rho-sharpness, L(w + rho g/|g|) - L(w) (the paper's SAM radius)",
                      protocol=False, gt=0)
    seed: int = knob(0, "seed of the subsample and the random vectors", protocol=False, ge=0)
    batch_size: int = knob(32, "images per Hessian-vector product batch: memory only", protocol=False, ge=1)


CORE = {"data": Data, "split": Split, "model": Model, "train": Train, "eval": Eval, "device": Device,
        "analysis": Analysis}
GROUP_KINDS = ("optimizers", "losses")


def group_names():
    """The names of every optimizer's and loss's group, found by module name."""
    return tuple(name for kind in GROUP_KINDS for name in registry.names(kind))


def group_model(name):
    """The Params of optimizer or loss `name` (its module, imported by name)."""
    for kind in GROUP_KINDS:
        if name in registry.names(kind):
            return registry.module(kind, name).Params
    raise InputError(f"no optimizer or loss is named {name!r}: the known ones are {', '.join(group_names())}")


def sections(groups=None):
    """{section: model} of the core sections and the groups named (None: every optimizer's and loss's)."""
    groups = group_names() if groups is None else groups
    return {**CORE, **{name: group_model(name) for name in groups}}


@functools.cache
def _model(groups):
    return create_model("Params", __base__=Section,
                        **{name: (model, model()) for name, model in sections(groups).items()})


def params_model(groups=None):
    """The pydantic model of a params.yaml of the core sections and these groups (None: every group)."""
    return _model(group_names() if groups is None else tuple(groups))


def file_defaults():
    """params.yaml as the repository has it, `auto` where a key follows the dataset: a nested dict."""
    return params_model()().model_dump()


def defaults(dataset=PAPER_DATASET):
    """The values of the repository's params.yaml on `dataset`, auto resolved: on cifar100 the paper's protocol."""
    raw = file_defaults()
    raw["data"]["dataset"] = dataset
    return validate(raw, "defaults").model_dump()


def flatten(params, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in params.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


@functools.cache
def paper_protocol():
    """The paper's protocol as {dotted params.yaml key: value}: the keys that change what a run computes, at
    their paper values (every group's): what the report's comparability check compares with."""
    protocol = {f"{section}.{name}" for section, model in sections().items()
                for name, field in model.model_fields.items() if (field.json_schema_extra or {}).get("protocol", True)}
    return {key: value for key, value in flatten(defaults()).items() if key in protocol}


def _missing(raw, models):
    """The first key of the schema that `raw` lacks, with the value to add."""
    for section, model in models.items():
        if not isinstance(raw.get(section), dict):
            if section in raw and raw[section] is not None:
                continue  # pydantic names the wrong type
            return section, model().model_dump()
        for name, field in model.model_fields.items():
            if name not in raw[section]:
                return f"{section}.{name}", field.default
    return None


_NUMBER_ERRORS = ("int_type", "int_parsing", "float_type", "float_parsing", "int_from_float")
# pydantic names the member of a union a value failed (imbsam.eta.int): not a part of the key.
_UNION_MEMBERS = ("int", "float", "str", "bool", f"literal['{AUTO}']")


def _location(loc):
    dotted = ""
    for part in (part for part in loc if part not in _UNION_MEMBERS):
        dotted += f"[{part}]" if isinstance(part, int) else f".{part}" if dotted else str(part)
    return dotted


def _shown(value):
    """A value as one would write it in params.yaml or after `dvc exp run -S key=`."""
    return yaml.safe_dump([value], default_flow_style=True, width=1000, sort_keys=False).strip()[1:-1]


def _hint(loc, models):
    """What the key at loc means and the paper's value, for an error message."""
    section, name = (str(part) for part in loc[:2]) if len(loc) > 1 else (str(loc[0]), None)
    field = models[section].model_fields.get(name) if section in models and name else None
    if field is None:
        return ""
    paper = field.default
    if paper == AUTO:
        paper = dataset_values(PAPER_DATASET).get(f"{section}.{name}", paper)
    return f" ({section}.{name}: {field.description}; the paper's value: {_shown(paper)})"


def _resolved(raw):
    """A copy of raw with every `auto` replaced by its dataset's value. With an unknown dataset, which the schema
    then names, the paper's: a bound such as eta >= 0 cannot be checked on the word."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    dataset = data.get("dataset")
    values = dataset_values(dataset if dataset in registry.names("datasets") else PAPER_DATASET)
    raw = {section: dict(group) if isinstance(group, dict) else group for section, group in raw.items()}
    for dotted, value in values.items():
        section, key = dotted.split(".")
        if isinstance(raw.get(section), dict) and raw[section].get(key) == AUTO:
            raw[section][key] = value
    return raw


def _check_archive_is_the_datasets(params, source):
    """An official archive of another dataset under data.url or data.md5 would fail only after the download."""
    chosen = params.data.dataset
    for name in registry.names("datasets"):
        values = dataset_values(name)
        for key, value in (("data.url", params.data.url), ("data.md5", params.data.md5.lower())):
            if name != chosen and value == values[key]:
                title = registry.module("datasets", name).LAYOUT.title
                raise InputError(f"{source}: {key} is {title}'s archive but data.dataset={chosen}: set {key}=auto "
                                 f"(or data.dataset={name})")


def _unknown_section(raw, source):
    known = (*CORE, *group_names())
    for section in raw:
        if section not in known:
            raise InputError(f"{source}: unknown key {section}: a typo? the sections are {', '.join(CORE)} and one "
                             f"group per optimizer and loss ({', '.join(group_names())})")


def validate(raw, source="params.yaml", groups=None):
    """Params from a nested dict; InputError with one line naming the first bad key and the fix.

    groups: the optimizers' and losses' groups to validate beside the core sections (None: all of them, the
    whole file); the others are not read, nor their modules imported."""
    if not isinstance(raw, dict):
        raise InputError(f"{source} must be a mapping of sections (data:, split:, train:, ...); restore it from git")
    _unknown_section(raw, source)
    if groups is not None:
        raw = {section: value for section, value in raw.items() if section in CORE or section in groups}
    models = sections(groups)
    missing = _missing(raw, models)
    if missing:
        key, value = missing
        raise InputError(f"{source}: missing key {key}; add it with its default, {_shown(value)} (see the "
                         "repository's params.yaml)")
    try:
        params = params_model(groups).model_validate(_resolved(raw))
    except ValidationError as error:
        problems = error.errors(include_url=False)
        first = problems[0]
        where = _location(first["loc"])
        # A key that takes a number or `auto` fails both members of its union: one problem, said once.
        others = [p for p in problems[1:] if _location(p["loc"]) != where]
        if len(others) < len(problems) - 1 and first["type"] in _NUMBER_ERRORS:
            first = {**first, "msg": f"{first['msg']} or {AUTO!r}"}
        problems = [first, *others]
        if first["type"] == "extra_forbidden":
            section = first["loc"][0] if len(first["loc"]) > 1 else None
            known = ", ".join(models[section].model_fields) if section in models else ", ".join(models)
            message = f"unknown key {where}: a typo? the keys here are {known}"
        else:
            value = first.get("input")
            reason = first["msg"].removeprefix("Value error, ")
            message = f"{where}={value!r} is invalid: {reason[0].lower()}{reason[1:]}{_hint(first['loc'], models)}"
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise InputError(f"{source}: {message}{more}") from None
    if groups is None:
        _check_archive_is_the_datasets(params, source)
    return params


def load(path="params.yaml", groups=None):
    """Read and validate params.yaml (see `validate`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found: run the stage from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML ({' '.join(str(error).split())}); fix the line it names") from None
    return validate(raw, str(path), groups)


def override(params, changes):
    """A copy of `params` with {dotted key: value} changes, validated: what `dvc exp run -S` does to the file."""
    raw = params.model_dump()
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        node = raw
        for section in path:
            node = node[section]
        node[key] = value
    return validate(raw, "override")


# The README's quick run: every stage on the full-size data, the cheap ResNet-32, 2 epochs of 20 steps, and a
# per-step schedule (the authors' trains the last epoch at learning rate 0, half of a 2-epoch run).
QUICK_RUN = {"model.arch": "resnet32", "train.epochs": 2, "train.max_steps_per_epoch": 20,
             "train.schedule": "step_cosine", "analysis.samples_per_group": 32, "analysis.lanczos_steps": 8,
             "analysis.hutchinson_samples": 8}


def exp_run_command(changes):
    """The `dvc exp run -S key=value ...` that makes these changes."""
    return "dvc exp run " + " ".join(f"-S {key}={value}" for key, value in changes.items())
