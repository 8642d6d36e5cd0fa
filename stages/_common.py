"""Plumbing shared by the stage scripts: the validated params.yaml and one-line errors.

Not a stage itself. Stages run from the repository root as `python -m stages.<name>`, as dvc.yaml's commands do:
`-m` puts the working directory first on sys.path, so a stage imports the imbsam of the workspace it runs in (a
DVC experiment's temporary copy included), never an installed one.
"""

import argparse
import json
import sys
from pathlib import Path

from imbsam import params as schema
from imbsam.device.target import preflight
from imbsam.errors import InputError

PARAMS_FILE = Path("params.yaml")


def load_params(groups=None):
    """params.yaml validated against imbsam.params (the core sections and the optimizers' and losses' `groups`;
    None: the whole file), and the host checked for the device it asks for (imbsam.device.target.preflight),
    before the stage does anything else."""
    params = schema.load(PARAMS_FILE, groups)
    preflight(params.device.target)
    return params


def matrix_run(description, groups_of=lambda optimizer, params: ()):
    """(params, optimizer, seed) of a matrix stage run as `--optimizer O --seed S`, params.yaml checked before the
    seed that came from it is read; groups_of(optimizer, core params) names the groups the stage reads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--optimizer", required=True)
    parser.add_argument("--seed", required=True)
    args = parser.parse_args()
    params = load_params(groups_of(args.optimizer, schema.load(PARAMS_FILE, groups=())))
    try:
        seed = int(args.seed)
    except ValueError:
        raise InputError(f"--seed {args.seed!r} is not an integer: train.seeds lists integers >= 0") from None
    return params, args.optimizer, seed


def trained_run(name, arch, checkpoints):
    """train.json of run `name` and the paths of its `checkpoints` (e.g. "last", "best"), each checked to exist and
    the run checked to be of model.arch `arch`, before a stage that reads them builds anything."""
    run_dir = Path("runs") / name
    paths = [run_dir / "train.json", *(run_dir / "model" / f"{checkpoint}.ckpt" for checkpoint in checkpoints)]
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path} not found: run `dvc repro train@{name}` first")
    run = json.loads(paths[0].read_text())
    if run.get("arch") != arch:
        raise InputError(f"model.arch={arch!r} but {name} was trained as {run.get('arch')!r}: "
                         f"run `dvc repro train@{name}` or restore model.arch")
    return run, dict(zip(checkpoints, paths[1:]))


def main_guard(main):
    """Run main(); print InputError as a single line and exit 1 instead of a traceback."""
    try:
        main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
