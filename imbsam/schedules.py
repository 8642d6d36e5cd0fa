"""Learning-rate schedules, one learning rate per step (`train.schedule`).

- epoch_cosine_at_start: the authors' code. `CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0)` is
  stepped once at the start of every epoch's training, so epoch e (1-based) of E trains at
  lr * (1 + cos(pi * e / E)) / 2 throughout, and the last epoch at 0.
- step_cosine: a cosine from lr down towards 0 over all T steps, lr * (1 + cos(pi * t / T)) / 2 at step
  t = 0 .. T-1 (this project's schedule before it followed the authors').
"""

import numpy as np

from imbsam.params import SCHEDULES


def learning_rates(schedule, lr, epochs, steps_per_epoch):
    """float32 learning rate of every step of the run, epochs * steps_per_epoch of them."""
    if schedule == "epoch_cosine_at_start":
        epoch = np.arange(1, epochs + 1, dtype=np.float64)
        per_epoch = 0.5 * lr * (1.0 + np.cos(np.pi * epoch / epochs))
        return np.repeat(per_epoch, steps_per_epoch).astype(np.float32)
    if schedule == "step_cosine":
        total = epochs * steps_per_epoch
        t = np.arange(total, dtype=np.float64)
        return (0.5 * lr * (1.0 + np.cos(np.pi * t / total))).astype(np.float32)
    raise ValueError(f"train.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")


def epochs_at_zero(rates, steps_per_epoch):
    """The (1-based) epochs whose every step trains at learning rate 0, where SGD does not move."""
    per_epoch = np.asarray(rates).reshape(-1, steps_per_epoch)
    return [int(e) + 1 for e in np.flatnonzero(~per_epoch.any(axis=1))]
