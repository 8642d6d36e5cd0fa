"""What the report's claims cost: the bootstrap of every optimizer's per-image predictions (imbsam.bootstrap) and
the judging of every paper's claims (imbsam.claims_report), at the paper's test-set size, for 1 to N seeds, side
by side in one process.

    python -m imbsam.bench.bootstrap [--optimizers 3] [--seeds 1 5 10]
"""

import argparse
import resource
import time

import numpy as np

from imbsam import predictions as run_predictions
from imbsam.check_host.host import cpu
from imbsam.claims import all_claims
from imbsam.claims_report import judge

NUM_CLASSES, TEST_PER_CLASS = 100, 100
GROUPS = {"many": list(range(35)), "medium": list(range(35, 70)), "few": list(range(70, 100))}
OPTIMIZERS = ("sgd", "sam", "imbsam", "focal_sam", "sse_sam")


def predictions(optimizers, seeds, rng):
    """Random predictions, each image right with its class's accuracy (90% for class 0 down to 10%)."""
    labels = np.repeat(np.arange(NUM_CLASSES), TEST_PER_CLASS)
    accuracy = np.linspace(0.9, 0.1, NUM_CLASSES)[labels]
    runs = {}
    for optimizer in optimizers:
        for seed in range(seeds):
            variants = {key: np.where(rng.random(labels.size) < accuracy, labels, (labels + 1) % NUM_CLASSES)
                        for key in (run_predictions.key(selection, tta) for selection in run_predictions.SELECTIONS
                                    for tta in (False, True))}
            runs[(optimizer, seed)] = {"labels": labels, **variants}
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m imbsam.bench.bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", type=int, default=3, help="how many optimizers (of sgd, sam, imbsam, ...)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5, 10])
    args = parser.parse_args(argv)
    info = cpu()
    print(f"CPU: {info['model']}, {info['cores']} cores ({' '.join(info['isa'])}); "
          f"{NUM_CLASSES} classes x {TEST_PER_CLASS} test images, 2000 resamples, best epoch + flip TTA")
    # Smallest first: the peak resident memory of a process only grows, so each row's is its own.
    print("optimizers  seeds  judge all claims (s)  peak RSS (MiB)")
    rng = np.random.default_rng(0)
    for seeds in sorted(args.seeds):
        runs = predictions(OPTIMIZERS[:args.optimizers], seeds, rng)
        started = time.perf_counter()
        judge(all_claims(), runs, [], GROUPS, NUM_CLASSES, "best", True, lambda setting: [])
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{args.optimizers:10d}  {seeds:5d}  {seconds:20.2f}  {peak:14.0f}")


if __name__ == "__main__":
    main()
