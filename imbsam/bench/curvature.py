"""The mechanism stage's cost beside training's, side by side in one process: seconds per image of a
Hessian-vector product (imbsam.analysis on MindSpore's own kernels, as analyze@ runs it) and of an SGD train step
(the project's graph-mode step on its CPU kernels, as train@ runs it), the peak memory, and what they make of one
run's analysis at params.yaml's analysis.* against that run's SGD training at the paper's protocol.

    python -m imbsam.bench.curvature [--arch resnet34] [--batch-size 32] [--products 3] [--steps 5]
"""

import argparse
import resource
import time

import numpy as np

from imbsam.bench.step import label_batches
from imbsam.bench.workload import NUM_CLASSES, PAPER, SEED, longtail_dataset

GROUPS = 3


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_step_seconds(arch, batch_size, steps):
    """Seconds per image of the SGD step, after one warm-up step that compiles it (imbsam.bench.runners)."""
    from imbsam.bench.runners import MindSporeStep

    runner = MindSporeStep({"arch": arch, "batch_size": batch_size, "device": "CPU", "mode": "graph",
                            "kernels": "auto", "optimizer": "sgd", "labels": label_batches(batch_size, steps + 1)})
    runner.sync(runner.step(0)[1])
    started = time.perf_counter()
    for i in range(1, steps + 1):
        runner.sync(runner.step(i)[1])
    return (time.perf_counter() - started) / (steps * batch_size), runner.describe()


def product_seconds(arch, batch_size, products):
    """(seconds per image of a Hessian-vector product over one batch, compile seconds, parameters)."""
    from imbsam.analysis import Curvature
    from imbsam.mechanism import twice_differentiable
    from imbsam.models import create_model

    network = twice_differentiable(create_model(arch, NUM_CLASSES, seed=SEED, kernels="mindspore"))
    network.set_train(False)
    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32)
    curvature = Curvature(network, images, rng.integers(0, NUM_CLASSES, batch_size), batch_size=batch_size)
    vector = rng.standard_normal(curvature.size)
    started = time.perf_counter()
    curvature.hvp(vector)
    compile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(products):
        curvature.hvp(vector)
    return (time.perf_counter() - started) / (products * batch_size), compile_seconds, curvature.size


def report(arch, batch_size, products, steps, analysis):
    from imbsam.device.target import setup

    setup("CPU", "graph")
    train, device = train_step_seconds(arch, PAPER["train"]["batch_size"], steps)
    after_training = _peak_rss_mib()
    product, compile_seconds, parameters = product_seconds(arch, batch_size, products)
    per_group = analysis["lanczos_runs"] * analysis["lanczos_steps"] + analysis["hutchinson_samples"]
    analysis_seconds = GROUPS * analysis["samples_per_group"] * per_group * product
    training_seconds = PAPER["train"]["epochs"] * len(longtail_dataset()[0]) * train
    lanczos_mib = analysis["lanczos_steps"] * parameters * 4 / 2**20
    return "\n".join([
        (f"{arch}, {parameters:,} parameters, {device['threads']} threads "
        f"(MindSpore {device['mindspore']}, {device['platform']}); give `lscpu`'s model name with these figures"),
        (f"SGD train step ({device['kernels']} kernels, graph, batch {PAPER['train']['batch_size']}): "
         f"{1000 * train:8.1f} ms per image"),
        (f"Hessian-vector product (mindspore kernels, batch {batch_size}): {1000 * product:8.1f} ms per image  "
        f"({product / train:.1f}x the step; compiled in {compile_seconds:.0f} s)"),
        (f"peak RSS: {after_training:.0f} MiB after the steps, {_peak_rss_mib():.0f} MiB after the products; "
        f"the Lanczos basis adds {lanczos_mib:.0f} MiB"),
        (f"one run's analysis at analysis.* ({GROUPS} groups x {analysis['samples_per_group']} images x {per_group} "
        f"products): {analysis_seconds / 3600:.2f} h; its SGD training at the paper's protocol "
        f"({PAPER['train']['epochs']} epochs of {len(longtail_dataset()[0])} images): {training_seconds / 3600:.1f} h; "
        f"ratio {analysis_seconds / training_seconds:.2f}"),
    ])


def main(argv=None):
    from imbsam.params import load

    parser = argparse.ArgumentParser(prog="python -m imbsam.bench.curvature", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet34", choices=("resnet34", "resnet32"))
    parser.add_argument("--batch-size", type=int, default=None, help="default: params.yaml's analysis.batch_size")
    parser.add_argument("--products", type=int, default=3, help="timed Hessian-vector products")
    parser.add_argument("--steps", type=int, default=5, help="timed SGD steps")
    args = parser.parse_args(argv)
    analysis = load("params.yaml").analysis.model_dump()
    print(report(args.arch, args.batch_size or analysis["batch_size"], args.products, args.steps, analysis))


if __name__ == "__main__":
    main()
