"""Train-step throughput of the methods table's optimizers, set against the floors the network's own passes imply.

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
import itertools
import json
import multiprocessing
import os
import resource
import sys
import time

import numpy as np
from tabulate import tabulate

from imbsam import registry, verify
from imbsam.architectures import ARCHITECTURES, blocks
from imbsam.bench import positive_int, require_torch, subset
from imbsam.data.split import longtail_counts
from imbsam.datasets import cifar100
from imbsam.device.target import resolve_mode
from imbsam.kernels.environment import ONEDNN_ISA_ENV, USER_ENVIRONMENT, restore_user_environment
from imbsam.params import ARCHS, KERNELS, STEP_MODES, TARGETS, defaults

# CIFAR-100-LT at imbalance factor 100 and the paper's hyper-parameters: params.yaml's defaults.
PAPER = defaults()
NUM_CLASSES = cifar100.NUM_CLASSES
MODES = tuple(reversed(STEP_MODES))  # side by side in this order: op by op, then compiled
SEED = 0

PASSES = ("forward", "forward+backward")
PIPELINE = "input pipeline"
EVALUATION = "evaluate"
TORCH_SGD = "torch sgd"


def longtail_dataset():
    """(labels of the 10847 CIFAR-100-LT IF=100 training images, per-class counts)."""
    counts = longtail_counts(NUM_CLASSES, cifar100.TRAIN_PER_CLASS, PAPER["split"]["imb_factor"],
                             PAPER["split"]["profile"])
    return np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), counts), counts


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


# ---- what the workers measure: objects with step(i) -> (images, result) and sync(result) ----

class _MindSporeRun:
    """Shared set-up: device, network and batches; `describe` reports what the main process prints."""

    def __init__(self, options):
        from imbsam.device.target import setup

        self.device = setup(options["device"], options["mode"])
        import mindspore as ms
        from mindspore import Tensor

        from imbsam.models import create_model

        self.ms = ms
        self.network = create_model(options["arch"], NUM_CLASSES, seed=SEED, kernels=options["kernels"])
        self.network.set_train(True)
        rng = np.random.default_rng(SEED)
        self.batch_size = options["batch_size"]
        self.images = Tensor(rng.standard_normal((self.batch_size, 3, 32, 32)).astype(np.float32))
        self.labels = [Tensor(batch) for batch in options["labels"]]

    def describe(self):
        return {**self.device, "threads": self.ms.get_context("runtime_num_threads"), "kernels": self.network.kernels,
                "parameters": sum(p.size for p in self.network.trainable_params())}

    def peak_device_mib(self):
        """What MindSpore's allocator held at most on the accelerator; None on the CPU, whose figure is the RSS."""
        if self.device["target"] == "CPU":
            return None
        return self.ms.runtime.max_memory_allocated() / 2**20


class _MindSporeStep(_MindSporeRun):
    def __init__(self, options):
        super().__init__(options)
        from imbsam.criteria import create_loss
        from imbsam.optim import make_optimizer, make_train_step

        train = PAPER["train"]
        self.optimizer = make_optimizer(self.network, train["lr"], train["momentum"], train["weight_decay"])
        name = options["method"]
        step_options = registry.module("optimizers", name).Params(**PAPER[name]).step_options(longtail_dataset()[1])
        # The paper's loss as training builds it.
        loss_fn = create_loss(train["loss"], NUM_CLASSES, {})
        self.train_step = make_train_step(self.network, loss_fn, self.optimizer, name, mode=self.device["mode"],
                                          **step_options)

    def step(self, i):
        return self.batch_size, self.train_step(self.images, self.labels[i])

    def sync(self, loss):
        loss.asnumpy()
        # The loss is ready before the optimizer's update; the first weight is written by it.
        self.optimizer.parameters[0].asnumpy()


class _MindSporePass(_MindSporeRun):
    """One forward (train mode, BatchNorm updating) or forward+backward as make_train_step computes it:
    a Cell, so graph mode compiles it as it compiles the step."""

    def __init__(self, options):
        super().__init__(options)
        import mindspore as ms
        from mindspore import Tensor, nn

        from imbsam.criteria import create_loss
        from imbsam.optim import WeightedGradients, make_optimizer

        # One update at learning rate 0 leaves the weights as they are but stores them as training does:
        # on a network no optimizer ever wrote, ResNet-32's passes ran about 25% faster than in training.
        optimizer = make_optimizer(self.network, 0.0, momentum=0.0, weight_decay=0.0)
        optimizer(tuple(ms.ops.zeros_like(p) for p in optimizer.parameters))
        self.uniform = Tensor(np.full(self.batch_size, 1.0 / self.batch_size, dtype=np.float32))
        loss_fn = create_loss(PAPER["train"]["loss"], NUM_CLASSES, {})
        if options["pass"] == "forward":
            self.run = _forward_cell(nn, self.network, loss_fn)
        else:
            # The very Cell the train step differentiates with, so the floor is the step's own pass.
            gradients = WeightedGradients(self.network, loss_fn, optimizer.parameters)
            self.run = lambda images, labels, weights: gradients(images, labels, ms.mutable((weights,)))[1][0]

    def step(self, i):
        return self.batch_size, self.run(self.images, self.labels[i], self.uniform)

    def sync(self, result):
        # Backward runs from the loss to the input: the first layer's gradient is its last result.
        (result[0] if isinstance(result, tuple) else result).asnumpy()


class _MindSporeEvaluation(_MindSporeRun):
    """The per-epoch test pass: eval mode (BatchNorm reading its running statistics), batches of
    eval.batch_size, as imbsam.train evaluates after every epoch."""

    def __init__(self, options):
        super().__init__({**options, "batch_size": PAPER["eval"]["batch_size"]})
        self.network.set_train(False)

    def step(self, i):
        return self.batch_size, self.network(self.images)

    def sync(self, result):
        result.asnumpy()


def _forward_cell(nn, network, loss_fn):
    class Forward(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.network = network
            self.loss_fn = loss_fn

        def construct(self, images, labels, sample_weights):
            return (self.loss_fn(self.network(images), labels) * sample_weights).sum()

    return Forward()


class _InputPipeline:
    """TrainBatches over random uint8 images with the long-tailed labels.

    Each timed loop reads a freshly started stream and closes it at the end: its producer thread
    must neither work while other rows are timed nor start a loop with batches already made."""

    def __init__(self, options):
        from imbsam.data.augment import TrainBatches

        labels = longtail_dataset()[0]
        images = np.random.default_rng(SEED).integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        self.batches = TrainBatches(images, labels, options["batch_size"], SEED)
        self.epochs = itertools.count(1)
        self.stream = None

    def _fresh_stream(self):
        for epoch in self.epochs:
            yield from self.batches.epoch(epoch)

    def describe(self):
        return {}

    def step(self, i):
        if self.stream is None:
            self.stream = self._fresh_stream()
        images, _ = next(self.stream)
        return len(images), None

    def sync(self, result):
        self.stream.close()  # stops the producer thread
        self.stream = None


class _TorchSGD:
    """The same network's SGD step in PyTorch on the CPU, with MindSpore's thread count and the user's
    environment: not imbsam's CPU defaults, which this process inherits (an AVX2 cap slowed PyTorch's
    128-channel convolution 1.3x)."""

    def __init__(self, options):
        restore_user_environment(options["environment"])
        import torch

        torch.set_num_threads(options["threads"])
        torch.manual_seed(SEED)
        self.torch = torch
        self.network = _torch_resnet(torch, options["arch"]).train()
        train = PAPER["train"]
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=train["lr"], momentum=train["momentum"],
                                         weight_decay=train["weight_decay"])
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.batch_size = options["batch_size"]
        self.images = torch.randn(self.batch_size, 3, 32, 32)
        self.labels = [torch.from_numpy(batch.astype(np.int64)) for batch in options["labels"]]

    def describe(self):
        return {"torch": self.torch.__version__, "threads": self.torch.get_num_threads(),
                "isa": self.torch.backends.cpu.get_cpu_capability(),
                "onednn_max_cpu_isa": os.environ.get(ONEDNN_ISA_ENV),
                "parameters": sum(p.numel() for p in self.network.parameters())}

    def step(self, i):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.network(self.images), self.labels[i])
        loss.backward()
        self.optimizer.step()
        return self.batch_size, loss

    def sync(self, loss):
        loss.item()


def _torch_resnet(torch, arch, relu=None):
    """The PyTorch twin of imbsam.models' network `arch`, built from the same imbsam.architectures entry.
    relu: the function every ReLU of the network calls, in forward order (default torch's)."""
    nn, functional = torch.nn, torch.nn.functional
    architecture = ARCHITECTURES[arch]
    relu = relu or functional.relu

    class ReLU(nn.Module):
        def forward(self, x):
            return relu(x)

    class PadShortcut(nn.Module):
        def __init__(self, extra):
            super().__init__()
            self.padding = (0, 0, 0, 0, extra // 2, extra - extra // 2)

        def forward(self, x):
            return functional.pad(x[:, :, ::2, ::2], self.padding)

    class BasicBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride, shortcut):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.shortcut = shortcut

        def forward(self, x):
            out = relu(self.bn1(self.conv1(x)))
            return relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    stem = architecture.stem_channels
    layers = [nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), ReLU()]
    for in_channels, channels, stride in blocks(architecture):
        if stride == 1 and in_channels == channels:
            shortcut = nn.Identity()
        elif architecture.shortcut == "projection":
            shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
        else:
            shortcut = PadShortcut(channels - in_channels)
        layers.append(BasicBlock(in_channels, channels, stride, shortcut))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(architecture.stages[-1][0], NUM_CLASSES)]
    return nn.Sequential(*layers)


_KINDS = {"step": _MindSporeStep, "pass": _MindSporePass, "evaluation": _MindSporeEvaluation,
          "pipeline": _InputPipeline, "torch": _TorchSGD}


# ---- worker processes ----

def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _serve(conn, kind, options):
    """Worker: build one measurement, then answer ("warm", n), ("time", n) and finally None.
    An exception ends the process with its traceback on the shared stderr; the main process sees the pipe close."""
    bench = _KINDS[kind](options)
    conn.send(bench.describe())
    position = 0
    while (command := conn.recv()) is not None:
        name, count = command
        if name == "warm":
            # Synchronised per step, so the first step's time is its own.
            seconds = []
            for i in range(position, position + count):
                start = time.perf_counter()
                bench.sync(bench.step(i)[1])
                seconds.append(time.perf_counter() - start)
            conn.send({"first_step_s": seconds[0]})
        else:
            images = 0
            cpu, start = _cpu_seconds(), time.perf_counter()
            for i in range(position, position + count):
                done, result = bench.step(i)
                images += done
            bench.sync(result)
            wall = time.perf_counter() - start
            conn.send({"seconds": wall, "cpu_seconds": _cpu_seconds() - cpu, "images": images})
        position += count
    peak_device = getattr(bench, "peak_device_mib", lambda: None)()
    conn.send({"peak_rss_mib": _peak_rss_mib(), "peak_device_mib": peak_device})


class WorkerError(RuntimeError):
    """A worker process died; its traceback is on the shared stderr."""


class _Worker:
    def __init__(self, context, name, kind, options):
        self.name = name
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, kind, options), name=f"bench {name}", daemon=True)
        self.process.start()
        child.close()

    def receive(self):
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join(5)
            raise WorkerError(f"the {self.name!r} worker exited (code {self.process.exitcode}); "
                              "its error is printed above") from None

    def call(self, command):
        self.conn.send(command)
        return self.receive()

    def finish(self):
        peaks = self.call(None)
        self.process.join()
        return peaks

    def stop(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


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


def run(arch="resnet32", batch_size=64, device="auto", steps=10, warmup=2, rounds=5, methods=None,
        compare_torch=False, modes=MODES, kernels=("auto",), floors=True, pipeline=True, evaluation=False,
        one_at_a_time=False):
    """Measure every row, for each execution mode in `modes` and kernel set in `kernels`; return the
    figures as a JSON-ready dict.

    floors: also time the network's passes, which the methods' floors are made of; pipeline: the input
    pipeline; evaluation: the per-epoch test pass. one_at_a_time: each row's worker runs all its steps and
    exits before the next starts (no interleaved rounds), so only one holds memory at a time: for a device
    that several processes would have to share. methods: the optimizers to time (default: every one)."""
    methods = registry.names("optimizers") if methods is None else methods
    tail = tail_classes()
    labels = label_batches(batch_size, warmup + steps)
    labels = cover_both_imbsam_paths(labels[:warmup], tail) + labels[warmup:]
    base = {"arch": arch, "batch_size": batch_size, "device": device, "labels": labels}
    variants = variant_labels(modes, kernels)
    plan = {}
    for label, variant in variants.items():
        options = {**base, **variant}
        if floors:
            plan.update({row_name(name, label): ("pass", {**options, "pass": name}) for name in PASSES})
        plan.update({row_name(method, label): ("step", {**options, "method": method}) for method in methods})
        if evaluation:
            plan[row_name(EVALUATION, label)] = ("evaluation", options)
    if pipeline:
        plan[PIPELINE] = ("pipeline", base)
    if compare_torch:
        plan[TORCH_SGD] = ("torch", {**base, "environment": USER_ENVIRONMENT})

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no MindSpore state is inherited
    described, rows = {}, {}
    for group in ([{name: row} for name, row in plan.items()] if one_at_a_time else [plan]):
        _measure(context, group, steps, warmup, rounds, described, rows)
    for label, variant in variants.items():
        variant["resolved_kernels"] = described[row_name(methods[0], label)]["kernels"]
    return _figures(rows, described, described[row_name(methods[0], next(iter(variants)))], labels[warmup:], tail,
                    steps, warmup, rounds, arch, batch_size, variants)


def _measure(context, plan, steps, warmup, rounds, described, rows):
    """Start a worker per row of plan, warm them up, time them in interleaved rounds and take their peaks,
    into described and rows. PyTorch's row starts last, with the thread count MindSpore's rows reported."""
    workers = {}
    try:
        for name, (kind, options) in plan.items():
            if kind != "torch":
                workers[name] = _Worker(context, name, kind, options)
        described.update({name: worker.receive() for name, worker in workers.items()})
        if TORCH_SGD in plan:
            threads = next(d["threads"] for d in described.values() if "mindspore" in d)
            workers[TORCH_SGD] = _Worker(context, TORCH_SGD, "torch", {**plan[TORCH_SGD][1], "threads": threads})
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
        for method in filter(floor_of, registry.names("optimizers")):
            row = rows.get(row_name(method, label))
            if row is not None:
                row["floor_ms"] = floor_of(method).floor(forward, backward, tail_free)
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
    parser.add_argument("--methods", type=subset(optimizers), default=optimizers,
                        help=f"comma-separated optimizers (default {','.join(optimizers)})")
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
        figures = run(args.arch, args.batch_size, args.device, args.steps, args.warmup, args.rounds, args.methods,
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
