"""What the step benchmark's rows train on: the paper's settings and CIFAR-100-LT's labels at imbalance factor 100,
shared by the main process, which plans the batches, and the workers, which build the steps."""

import numpy as np

from imbsam.data.split import longtail_counts
from imbsam.datasets import cifar100
from imbsam.params import defaults

# CIFAR-100-LT at imbalance factor 100 and the paper's hyper-parameters: params.yaml's defaults.
PAPER = defaults()
NUM_CLASSES = cifar100.NUM_CLASSES
SEED = 0


def longtail_dataset():
    """(labels of the 10847 CIFAR-100-LT IF=100 training images, per-class counts)."""
    counts = longtail_counts(NUM_CLASSES, cifar100.TRAIN_PER_CLASS, PAPER["split"]["imb_factor"],
                             PAPER["split"]["profile"])
    return np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), counts), counts
