"""Train-step throughput of every optimizer, set against the floors the network's own passes imply.

    python -m imbsam.bench --arch resnet34 --batch-size 64 --compare-torch

Every row of the table is measured in its own worker process, so its first-step time and peak
resident memory belong to that row alone (the peak includes the runtime the process loaded).
Workers start and warm up one at a time, then take turns in interleaved rounds of timed steps:
load from other jobs on a shared machine falls on every row alike, so ratios between rows hold
even when absolute figures do not. A timed loop ends by reading back its last result to the host,
so asynchronously queued work is inside the time.

Each mode in --modes (PyNative and graph by default) and each kernel set in --kernels (what
`train.kernels: auto` picks by default; "onednn,mindspore" compares the two) gets its own rows and
floors, side by side in the same rounds; the last lines say what training's auto settings pick.

Labels follow CIFAR-100-LT at imbalance factor 100, so ImbSAM meets batches without tail samples
(its cheaper path) as often as in training; images are random, which costs the same as real ones.
"""

import argparse
import json
import multiprocessing
import sys

import numpy as np
from tabulate import tabulate

from imbsam import registry, verify
from imbsam.bench import add_optimizers, positive_int, require_torch, subset
from imbsam.bench.runners import InputPipeline, MindSporeEvaluation, MindSporePass, MindSporeStep, TorchSGD
from imbsam.bench.worker import Worker, WorkerError
from imbsam.bench.workload import NUM_CLASSES, PAPER, SEED, longtail_dataset
from imbsam.device.target import resolve_mode
from imbsam.kernels.environment import USER_ENVIRONMENT
from imbsam.params import ARCHS, KERNELS, STEP_MODES, TARGETS

MODES = tuple(reversed(STEP_MODES))  # side by side in this order: op by op, then compiled

PASSES = ("forward", "forward+backward")
PIPELINE = "input pipeline"
EVALUATION = "evaluate"
TORCH_SGD = "torch sgd"


def tail_classes():
    """ImbSAM's tail at the paper's eta: the classes a batch must hold one of for ImbSAM's dearer path."""
    imbsam = registry.module("optimizers", "imbsam")
    return imbsam.Params(**PAPER["imbsam"]).step_options(longtail_dataset()[1])["tail_classes"]


def label_batches(batch_size, count, seed=SEED):
    """`count` full batches of labels, each epoch a fresh shuffle of the long-tailed dataset, as training draws them."""
    dataset, _ = longtail_dataset()
    if not 1 <= batch_size <= len(dataset):
        raise ValueError(f"batch size {batch_size} must be between 1 and {len(dataset)}")
    rng = np.random.default_rng(seed)
    batches = []
    while len(batches) < count:
        order = rng.permutation(dataset)
        batches += [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return batches[:count]


def cover_both_imbsam_paths(warmup, tail):
    """Give the first warm-up batch a tail sample and the second none, so both of ImbSAM's code
    paths (and what they compile) have run before timing starts, whatever the draw."""
    warmup = [batch.copy() for batch in warmup]
    if warmup and not np.isin(warmup[0], tail).any():
        warmup[0][0] = tail[0]
    if len(warmup) > 1:
        warmup[1][np.isin(warmup[1], tail)] = next(c for c in range(NUM_CLASSES) if c not in tail)
    return warmup


def expected_tail_free_fraction(batch_size):
    """Probability that a batch drawn without replacement from the long-tailed dataset holds no tail sample."""
    dataset, tail = longtail_dataset()[0], tail_classes()
    total, head = len(dataset), int((~np.isin(dataset, tail)).sum())
    return float(np.prod([(head - i) / (total - i) for i in range(batch_size)]))


# ---- the run ----

def _round_sizes(steps, rounds):
    return [len(chunk) for chunk in np.array_split(np.arange(steps), min(rounds, steps))]


def variant_labels(modes, kernels):
    """{label: {"mode": ..., "kernels": ...}} for every combination; a label names only the settings that
    vary ("" when nothing does)."""
    labels = {}
    for mode in modes:
        for kernel in kernels:
            shown = [value for value, values in ((mode, modes), (kernel, kernels)) if len(values) > 1]
            labels[", ".join(shown)] = {"mode": mode, "kernels": kernel}
    return labels


def floor_of(optimizer):
    """`optimizer`'s checks module where it states a floor (imbsam/verify/optimizers/<optimizer>.py), else None: an
    optimizer without one is timed, not set against a floor."""
    checks = verify.checks(optimizer)
    return checks if hasattr(checks, "floor") else None


def _floor_legend(rows):
    """The floor of each benchmarked optimizer that has one."""
    benched = [name for name in registry.names("optimizers")
               if floor_of(name) and any(row == name or row.startswith(f"{name} [") for row in rows)]
    return ", ".join(f"{name} {floor_of(name).FLOOR}" for name in benched)


def row_name(name, label):
    """Rows carry their variant's label when several variants are compared."""
    return f"{name} [{label}]" if label else name


def run(arch="resnet32", batch_size=64, device="auto", steps=10, warmup=2, rounds=5, optimizers=None,
        compare_torch=False, modes=MODES, kernels=("auto",), floors=True, pipeline=True, evaluation=False,
        one_at_a_time=False):
    """Measure every row, for each execution mode in `modes` and kernel set in `kernels`; return the
    figures as a JSON-ready dict.

    floors: also time the network's passes, which the optimizers' floors are made of; pipeline: the input
    pipeline; evaluation: the per-epoch test pass. one_at_a_time: each row's worker runs all its steps and
    exits before the next starts (no interleaved rounds), so only one holds memory at a time: for a device
    that several processes would have to share. optimizers: the optimizers to time (default: every one)."""
    optimizers = registry.names("optimizers") if optimizers is None else optimizers
    tail = tail_classes()
    labels = label_batches(batch_size, warmup + steps)
    labels = cover_both_imbsam_paths(labels[:warmup], tail) + labels[warmup:]
    base = {"arch": arch, "batch_size": batch_size, "device": device, "labels": labels}
    variants = variant_labels(modes, kernels)
    plan = {}
    for label, variant in variants.items():
        options = {**base, **variant}
        if floors:
            plan.update({row_name(name, label): (MindSporePass, {**options, "pass": name}) for name in PASSES})
        plan.update({row_name(name, label): (MindSporeStep, {**options, "optimizer": name}) for name in optimizers})
        if evaluation:
            plan[row_name(EVALUATION, label)] = (MindSporeEvaluation, options)
    if pipeline:
        plan[PIPELINE] = (InputPipeline, base)
    if compare_torch:
        plan[TORCH_SGD] = (TorchSGD, {**base, "environment": USER_ENVIRONMENT})

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no MindSpore state is inherited
    described, rows = {}, {}
    for group in ([{name: row} for name, row in plan.items()] if one_at_a_time else [plan]):
        _measure(context, group, steps, warmup, rounds, described, rows)
    for label, variant in variants.items():
        variant["resolved_kernels"] = described[row_name(optimizers[0], label)]["kernels"]
    return _figures(rows, described, described[row_name(optimizers[0], next(iter(variants)))], labels[warmup:], tail,
                    steps, warmup, rounds, arch, batch_size, variants)


def _measure(context, plan, steps, warmup, rounds, described, rows):
    """Start a worker per row of plan ({name: (runner, options)}), warm them up, time them in interleaved rounds
    and take their peaks, into described and rows. PyTorch's row starts last, with the thread count MindSpore's
    rows reported."""
    workers = {}
    try:
        for name, (runner, options) in plan.items():
            if runner is not TorchSGD:
                workers[name] = Worker(context, name, runner, options)
        described.update({name: worker.receive() for name, worker in workers.items()})
        if TORCH_SGD in plan:
            threads = next(d["threads"] for d in described.values() if "mindspore" in d)
            workers[TORCH_SGD] = Worker(context, TORCH_SGD, TorchSGD, {**plan[TORCH_SGD][1], "threads": threads})
            described[TORCH_SGD] = workers[TORCH_SGD].receive()
        rows.update({name: worker.call(("warm", warmup)) for name, worker in workers.items()})
        for size in _round_sizes(steps, rounds):
            for name, worker in workers.items():  # one worker at a time: the others wait for a command
                timed = worker.call(("time", size))
                for key, value in timed.items():
                    rows[name][key] = rows[name].get(key, 0) + value
        for name, worker in workers.items():
            rows[name].update(worker.finish())
    finally:
        for worker in workers.values():
            worker.stop()


def _figures(rows, described, mindspore, timed_labels, tail, steps, warmup, rounds, arch, batch_size, variants):
    for row in rows.values():
        row["img_per_s"] = row["images"] / row["seconds"]
        row["ms_per_step"] = 1000 * row["seconds"] / steps
        # What the first step took beyond a timed one: compiling (ImbSAM's graphs for the other kind of
        # batch compile at the second warm-up step and are not in it).
        row["compile_s"] = max(0.0, row["first_step_s"] - row["ms_per_step"] / 1000)
        row["cores_busy"] = row["cpu_seconds"] / row["seconds"]
    tail_free = float(np.mean([not np.isin(batch, tail).any() for batch in timed_labels]))
    backward_ms = {}
    for label in variants:
        if row_name(PASSES[0], label) not in rows:
            continue
        forward, forward_backward = (rows[row_name(p, label)]["ms_per_step"] for p in PASSES)
        backward = backward_ms[label] = forward_backward - forward
        for optimizer in filter(floor_of, registry.names("optimizers")):
            row = rows.get(row_name(optimizer, label))
            if row is not None:
                row["floor_ms"] = floor_of(optimizer).floor(forward, backward, tail_free)
                row["x_floor"] = row["ms_per_step"] / row["floor_ms"]
    figures = {
        "config": {"arch": arch, "batch_size": batch_size, "target": mindspore["target"],
                   "modes": list(dict.fromkeys(v["mode"] for v in variants.values())),
                   "kernels": list(dict.fromkeys(v["resolved_kernels"] for v in variants.values())),
                   "variants": variants,
                   "mindspore": mindspore["mindspore"], "threads": mindspore["threads"],
                   "onednn_max_cpu_isa": mindspore["onednn_max_cpu_isa"],
                   "launch_blocking": mindspore["launch_blocking"], "steps": steps, "warmup": warmup,
                   "rounds": min(rounds, steps), "parameters": mindspore["parameters"]},
        "tail_free_batches": {"measured": tail_free, "timed_batches": len(timed_labels),
                              "expected": expected_tail_free_fraction(batch_size)},
        "backward_ms": backward_ms,
        "rows": rows,
    }
    if TORCH_SGD in rows:
        figures["torch"] = described[TORCH_SGD]
        figures["mindspore_over_torch_sgd"] = {
            label: rows[row_name("sgd", label)]["img_per_s"] / rows[TORCH_SGD]["img_per_s"]
            for label in variants if row_name("sgd", label) in rows}
    return figures


def format_report(figures):
    config, tail_free = figures["config"], figures["tail_free_batches"]
    isa = f", ONEDNN_MAX_CPU_ISA={config['onednn_max_cpu_isa']}" if config["onednn_max_cpu_isa"] else ""
    isa += ", synchronous launch" if config["launch_blocking"] else ""
    lines = [
        (f"{config['arch']} ({config['parameters'] / 1e6:.2f} M parameters), batch {config['batch_size']}, "
        f"{config['target']} {' and '.join(config['modes'])} mode, {' and '.join(config['kernels'])} "
        f"kernels, {config['threads']} threads{isa}, MindSpore {config['mindspore']}"),
        (f"{config['steps']} timed steps per row in {config['rounds']} interleaved rounds after {config['warmup']} "
        "warm-up steps; each row in its own process (first step and peak RSS are that process's); compile = first "
        "step - a timed step"),
    ]
    headers = ["", "img/s", "ms/step", "floor ms", "x floor", "1st step s", "compile s", "peak RSS MiB",
               "peak device MiB", "cores busy"]
    table = [[name, row["img_per_s"], row["ms_per_step"], row.get("floor_ms"), row.get("x_floor"),
              row["first_step_s"], row["compile_s"], row["peak_rss_mib"], row.get("peak_device_mib"),
              row["cores_busy"]]
             for name, row in figures["rows"].items()]
    floatfmt = ["", ".1f", ".1f", ".1f", ".2f", ".2f", ".1f", ".0f", ".0f", ".2f"]
    if all(row[8] is None for row in table):  # the CPU: its memory is the RSS
        for column in (headers, floatfmt, *table):
            del column[8]
    lines.append(tabulate(table, headers, floatfmt=floatfmt, missingval=""))
    if any(name.startswith(EVALUATION) for name in figures["rows"]):
        lines.append(f"{EVALUATION}: the per-epoch test pass, eval mode, batches of {PAPER['eval']['batch_size']}")
    backward = ", ".join(f"{ms:.1f} ms" + (f" ({label})" if label else "")
                         for label, ms in figures["backward_ms"].items())
    if backward:
        lines.append(
            f"floors: f = forward, b = forward+backward - f = {backward}; {_floor_legend(figures['rows'])}; "
            f"ImbSAM's mixed by the timed batches' tail-free share "
            f"{tail_free['measured']:.2f} ({tail_free['timed_batches']} batches; "
            f"{tail_free['expected']:.3f} expected for CIFAR-100-LT IF=100 at batch {config['batch_size']})")
    picked = {v["resolved_kernels"] for v in config["variants"].values() if v["kernels"] == "auto"}
    lines.append(f"train.mode=auto trains in {resolve_mode('auto')} mode"
                 + "".join(f"; train.kernels=auto picked {kernels} kernels here" for kernels in picked))
    if "torch" in figures:
        torch = figures["torch"]
        ratios = figures["mindspore_over_torch_sgd"]
        compared = "".join(f", MindSpore{' ' + label if label else ''}/PyTorch SGD img/s = {ratio:.2f}"
                           for label, ratio in ratios.items())
        cap = torch["onednn_max_cpu_isa"] or "unset"
        lines.append(f"PyTorch {torch['torch']} ({torch['parameters'] / 1e6:.2f} M parameters, {torch['threads']} "
                     f"threads, {torch['isa']} kernels, ONEDNN_MAX_CPU_ISA={cap}){compared}")
    return "\n".join(lines)


def _batch_size(text):
    value = positive_int(text)
    images = len(longtail_dataset()[0])
    if value > images:
        raise argparse.ArgumentTypeError(f"{text} exceeds the {images} images of CIFAR-100-LT IF=100")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m imbsam.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=ARCHS, default="resnet32")
    parser.add_argument("--batch-size", type=_batch_size, default=64)
    parser.add_argument("--device", choices=TARGETS, default="auto")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps per row (default 10)")
    parser.add_argument("--warmup", type=positive_int, default=2,
                        help="untimed steps first; the first gives the first-step time (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=5,
                        help="interleaved rounds the timed steps are split into (default 5)")
    optimizers = registry.names("optimizers")
    add_optimizers(parser, optimizers, f"comma-separated optimizers (default {','.join(optimizers)})")
    parser.add_argument("--compare-torch", action="store_true",
                        help="also time the same network's SGD step in PyTorch on the CPU")
    parser.add_argument("--modes", type=subset(MODES), default=MODES,
                        help="execution modes side by side, comma-separated (default pynative,graph)")
    parser.add_argument("--kernels", type=subset(KERNELS), default=("auto",),
                        help="kernel sets side by side, comma-separated: auto (what training picks, the "
                             "default), onednn, mindspore")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args(argv)
    if args.compare_torch:
        require_torch(parser, "--compare-torch")
    try:
        figures = run(args.arch, args.batch_size, args.device, args.steps, args.warmup, args.rounds, args.optimizers,
                      args.compare_torch, args.modes, args.kernels)
    except WorkerError as error:
        print(error, file=sys.stderr)
        return 1
    print(format_report(figures))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
