"""CIFAR-100, python version (Krizhevsky, 2009): the archive the paper's code downloads.

cifar-100-python.tar.gz holds cifar-100-python/{train,test,meta} (and a stray file.txt~): 50,000
training and 10,000 test images of 100 classes ("fine" labels; the 20 "coarse" superclasses are unused).
"""

from imbsam.datasets import _cifar_python as cifar_python

NAME = "cifar100"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
ARCHIVE = "cifar-100-python.tar.gz"
LAYOUT = cifar_python.Layout(title="CIFAR-100", root="cifar-100-python", train=("train",), test=("test",), meta="meta",
                             label_key="fine_labels", names_key="fine_label_names", num_classes=100)
NUM_CLASSES = LAYOUT.num_classes
TRAIN_PER_CLASS = 500
# The values of the params.yaml keys set to `auto` (imbsam.params): the paper's protocol. Its groups (many > 100,
# few < 20 training images) and ImbSAM's eta 20, which makes the tail exactly the few classes; SSE-SAM's README
# command and Focal-SAM's CIFAR-100-LT script.
DEFAULTS = {"split.many_threshold": 100, "split.few_threshold": 20, "imbsam.eta": 20, "sse_sam.eta": 100,
            "focal_sam.rho": 0.3, "focal_sam.gamma": 3.2, "focal_sam.sharpness": 0.8}


def read(folder):
    """The extracted archive in folder: see imbsam.datasets._cifar_python.read."""
    return cifar_python.read(folder, LAYOUT)
