"""Focal-SAM's claims (ICML 2025, arXiv 2505.01660, github scongl/Focal-SAM): its Figure 1, which draws ImbSAM as
"sharp head, flat tail" and Focal-SAM as "flat head, flat tail".

Its accuracy tables are in the paper only (its README has none) and are not encoded here. The figure is a sketch
without a setting; the setting below is its repository's CIFAR-100-LT script (cifar.sh in its scripts folder),
the only one its authors publish, so a run on the ImbSAM paper's protocol is off it.
"""

from imbsam.claims import Mechanism, Setting

PAPER = "focal_sam"
TITLE = "Focal-SAM (ICML 2025)"
SOURCE = "Focal-SAM, Figure 1 (flat head and flat tail, against ImbSAM's sharp head)"
SETTING = Setting("CIFAR-100-LT, imbalance factor 100, ResNet-32, logit-adjusted loss, 200 epochs, batch 64, "
                  "lr 0.1, weight decay 1e-3 (its repository's CIFAR script, cifar.sh); best test epoch, no TTA",
                  {"data.dataset": "cifar100", "split.imb_factor": 0.01, "model.arch": "resnet32",
                   "train.loss": "logit_adjusted", "train.epochs": 200, "train.batch_size": 64, "train.lr": 0.1,
                   "train.weight_decay": 0.001, "train.max_steps_per_epoch": 0},
                  evaluation=("best", False))


def _flatter(group, baseline):
    return Mechanism(PAPER, SOURCE, SETTING, f"flatter-{group}-than-{baseline}",
                     f"Focal-SAM lowers the {group} group's curvature λ_max (against {{baseline}})",
                     "lambda_max", "focal_sam", group, "less", baseline=baseline)


CLAIMS = (_flatter("many", "sgd"), _flatter("few", "sgd"), _flatter("many", "imbsam"))
