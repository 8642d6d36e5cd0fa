"""CIFAR-10, python version (Krizhevsky, 2009): the archive LDAM-DRW's, SSE-SAM's and Focal-SAM's code download.

cifar-10-python.tar.gz holds cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (and a
readme.html): 50,000 training images in five batches of 10,000 and 10,000 test images, of 10 classes.
"""

from imbsam.datasets import _cifar_python as cifar_python

NAME = "cifar10"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
LAYOUT = cifar_python.Layout(title="CIFAR-10", root="cifar-10-batches-py",
                             train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",),
                             meta="batches.meta", label_key="labels", names_key="label_names", num_classes=10)
NUM_CLASSES = LAYOUT.num_classes
TRAIN_PER_CLASS = 5000
# The long-tail literature's values for this dataset, for the params.yaml keys set to `auto`:
# the group thresholds of SSE-SAM's evaluation code (many > 1000, few < 200 training images; at IF 100:
# 4 / 3 / 3 classes), ImbSAM's tail as its few group (the paper's rule on CIFAR-100, where eta 20 is
# exactly the few classes; with eta 20 here no class would be tail), SSE-SAM's eta scaled with the
# head count as CIFAR-100's 100 is to 500 (not published), and Focal-SAM's CIFAR-10-LT script values.
DEFAULTS = {"split.many_threshold": 1000, "split.few_threshold": 200, "imbsam.eta": 200, "sse_sam.eta": 1000,
            "focal_sam.rho": 0.2, "focal_sam.gamma": 3.0, "focal_sam.sharpness": 0.5}


def read(folder):
    """The extracted archive in folder: see imbsam.datasets._cifar_python.read."""
    return cifar_python.read(folder, LAYOUT)
