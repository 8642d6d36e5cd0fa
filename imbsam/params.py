"""The schema of params.yaml: every key's type, range, default and meaning, stated once.

The defaults are the paper's protocol (CIFAR-100-LT IF 100, ResNet-34, 200 epochs, the authors'
hyper-parameters), and params.yaml holds exactly them (a test says so). Keys marked `protocol=False`
(where the data comes from, execution mode, kernels, device, evaluation batch size) change how a run
is made, not what it computes; the others are the protocol the report compares against (PAPER_PROTOCOL).

Every stage validates the whole file first (`load`), in a fraction of a second and before any work, so a
bad value anywhere stops the first stage that runs with one line naming the key and the fix. A method's
group (sam:, imbsam:, ...) is its row's in imbsam.methods.
"""

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from imbsam.architectures import ARCHS
from imbsam.data import PROFILES
from imbsam.datasets import cifar100
from imbsam.device import MODES, TARGETS
from imbsam.errors import InputError
from imbsam.kernels import KERNELS
from imbsam.methods import METHODS
from imbsam.schedules import SCHEDULES

SELECTIONS = ("best", "last")


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


class Data(Section):
    url: str = knob(cifar100.URL, "an http(s) URL, a file:// URL or a local path of the archive",
                    protocol=False, min_length=1)
    md5: str = knob(cifar100.MD5, "the archive's md5, 32 hex digits in quotes", pattern=r"^[0-9a-fA-F]{32}$")


class Split(Section):
    imb_factor: float = knob(0.01, "tail count / head count (0.01 = imbalance factor 100)", gt=0, le=1)
    profile: Literal[PROFILES] = knob("exp", "exp: count_c = int(500 * imb_factor ** (c / 99)); step: two levels")
    shuffle_seed: int = knob(-1, "-1: the first count_c images in file order (the paper); >= 0: seeded shuffle",
                             ge=-1)
    many_threshold: int = knob(100, "many: classes with more training images than this", ge=0)
    few_threshold: int = knob(20, "few: classes with fewer training images than this", ge=0)

    @field_validator("few_threshold")
    @classmethod
    def _thresholds_in_order(cls, few, info):
        many = info.data.get("many_threshold")
        if many is not None and few > many:
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
    optimizers: list[Literal[tuple(METHODS)]] = knob(["sgd", "sam", "imbsam"],
                                                     "one training run per optimizer and seed")
    seeds: list[int] = knob([9826], "the authors' seed; several give mean and std in the report")
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


SECTIONS = {"data": Data, "split": Split, "model": Model, "train": Train,
            **{name: method.params for name, method in METHODS.items()}, "eval": Eval, "device": Device}
Params = create_model("Params", __base__=Section, **{name: (model, model()) for name, model in SECTIONS.items()})


def defaults():
    """params.yaml as the paper's protocol sets it, a nested dict."""
    return Params().model_dump()


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


def _protocol_keys():
    for section, model in SECTIONS.items():
        for name, field in model.model_fields.items():
            if (field.json_schema_extra or {}).get("protocol", True):
                yield f"{section}.{name}"


# The paper's protocol as dotted params.yaml keys: what the report's comparability check compares with.
_PROTOCOL_KEYS = set(_protocol_keys())
PAPER_PROTOCOL = {key: value for key, value in flatten(defaults()).items() if key in _PROTOCOL_KEYS}


def _missing(raw):
    """The first key of the schema that `raw` lacks, with the value to add."""
    for section, model in SECTIONS.items():
        if not isinstance(raw.get(section), dict):
            if section in raw and raw[section] is not None:
                continue  # pydantic names the wrong type
            return section, model().model_dump()
        for name, field in model.model_fields.items():
            if name not in raw[section]:
                return f"{section}.{name}", field.default
    return None


def _location(loc):
    dotted = ""
    for part in loc:
        dotted += f"[{part}]" if isinstance(part, int) else f".{part}" if dotted else str(part)
    return dotted


def _shown(value):
    """A value as one would write it in params.yaml or after `dvc exp run -S key=`."""
    return yaml.safe_dump([value], default_flow_style=True, width=1000, sort_keys=False).strip()[1:-1]


def _hint(loc):
    """What the key at loc means and the paper's value, for an error message."""
    section, name = (str(part) for part in loc[:2]) if len(loc) > 1 else (str(loc[0]), None)
    field = SECTIONS[section].model_fields.get(name) if section in SECTIONS and name else None
    if field is None:
        return ""
    return f" ({section}.{name}: {field.description}; the paper's value: {_shown(field.default)})"


def validate(raw, source="params.yaml"):
    """Params from a nested dict; InputError with one line naming the first bad key and the fix."""
    if not isinstance(raw, dict):
        raise InputError(f"{source} must be a mapping of sections (data:, split:, train:, ...); restore it from git")
    missing = _missing(raw)
    if missing:
        key, value = missing
        raise InputError(f"{source}: missing key {key}; add it with its default, {_shown(value)} (see the "
                         "repository's params.yaml)")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        first = problems[0]
        where = _location(first["loc"])
        if first["type"] == "extra_forbidden":
            section = first["loc"][0] if len(first["loc"]) > 1 else None
            known = ", ".join(SECTIONS[section].model_fields) if section in SECTIONS else ", ".join(SECTIONS)
            message = f"unknown key {where}: a typo? the keys here are {known}"
        else:
            value = first.get("input")
            reason = first["msg"].removeprefix("Value error, ")
            message = f"{where}={value!r} is invalid: {reason[0].lower()}{reason[1:]}{_hint(first['loc'])}"
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise InputError(f"{source}: {message}{more}") from None


def load(path="params.yaml"):
    """Read and validate params.yaml (see `validate`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found: run the stage from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML ({' '.join(str(error).split())}); fix the line it names") from None
    return validate(raw, str(path))


def override(params, changes):
    """A copy of `params` with {dotted key: value} changes, validated: what `dvc exp run -S` does to the file."""
    raw = params.model_dump()
    for dotted, value in changes.items():
        *sections, key = dotted.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[key] = value
    return validate(raw, "override")


# The README's quick run: every stage on the full-size data, the cheap ResNet-32, 2 epochs of 20 steps, and a
# per-step schedule (the authors' trains the last epoch at learning rate 0, half of a 2-epoch run).
QUICK_RUN = {"model.arch": "resnet32", "train.epochs": 2, "train.max_steps_per_epoch": 20,
             "train.schedule": "step_cosine"}


def exp_run_command(changes):
    """The `dvc exp run -S key=value ...` that makes these changes."""
    return "dvc exp run " + " ".join(f"-S {key}={value}" for key, value in changes.items())
