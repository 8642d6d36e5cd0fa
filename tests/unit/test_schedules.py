"""train.schedule: the learning rate of every step against each schedule's formula."""

import numpy as np
import pytest

from imbsam.schedules import SCHEDULES, epochs_at_zero, learning_rates


def test_the_authors_schedule_holds_each_epochs_rate_and_ends_at_zero():
    lr, epochs, steps = 0.01, 5, 7
    rates = learning_rates("epoch_cosine_at_start", lr, epochs, steps)
    assert rates.shape == (epochs * steps,) and rates.dtype == np.float32
    for step, rate in enumerate(rates):
        epoch = step // steps + 1  # CosineAnnealingLR stepped at the start of epoch e: lr(1 + cos(pi e / E)) / 2
        assert rate == pytest.approx(lr * (1 + np.cos(np.pi * epoch / epochs)) / 2, abs=1e-9), step
    assert np.all(rates[-steps:] == 0.0)
    assert epochs_at_zero(rates, steps) == [epochs]


def test_step_cosine_starts_at_lr_and_decays_every_step():
    lr, epochs, steps = 0.01, 4, 25
    rates = learning_rates("step_cosine", lr, epochs, steps)
    total = epochs * steps
    np.testing.assert_allclose(rates, lr * (1 + np.cos(np.pi * np.arange(total) / total)) / 2, rtol=1e-6)
    assert rates[0] == pytest.approx(lr) and np.all(np.diff(rates) < 0) and rates[-1] > 0
    assert epochs_at_zero(rates, steps) == []


@pytest.mark.parametrize(("epochs", "zero"), [(1, [1]), (2, [2]), (200, [200])])
def test_a_short_run_of_the_authors_schedule_trains_half_or_all_of_it_at_zero(epochs, zero):
    rates = learning_rates("epoch_cosine_at_start", 0.01, epochs, 3)
    assert epochs_at_zero(rates, 3) == zero
    if epochs == 2:
        assert rates[0] == pytest.approx(0.005)


def test_an_unknown_schedule_is_refused():
    assert SCHEDULES == ("epoch_cosine_at_start", "step_cosine")
    with pytest.raises(ValueError, match="train.schedule='linear'"):
        learning_rates("linear", 0.01, 2, 2)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_optimizer_applies_each_steps_rate(schedule):
    """The rate SGD applies, not the array it is given: three steps of imbsam.optim's SGD under each schedule
    (3 epochs of 1 step) against imbsam.reference's float64 SGD taking the formula's rates one by one. The
    authors' schedule's last step is at rate 0 and moves no weight."""
    from imbsam import reference
    from imbsam.check_host.correctness import device_run, worst_error

    epochs = 3
    # Epoch e (1-based) of the authors'; step s (0-based) of step_cosine, over epochs x 1 steps.
    formula = [0.1 * (1 + np.cos(np.pi * (e + 1 if schedule == "epoch_cosine_at_start" else e) / epochs)) / 2
               for e in range(epochs)]
    batches = reference.make_batches()
    ours = device_run("sgd", batches, lrs=learning_rates(schedule, 0.1, epochs, 1))
    expected = reference.run("sgd", batches, lrs=formula)
    worst, where = worst_error(ours, expected, 1e-4, 1e-6)
    assert worst <= 1e-4, where
    # A rate one step off would not match: the reference with the rates shifted by one step differs.
    shifted = reference.run("sgd", batches, lrs=[formula[0], *formula[:-1]])
    assert worst_error(ours, shifted, 1e-4, 1e-6)[0] > 1e-3
    if schedule == "epoch_cosine_at_start":
        assert all(np.array_equal(ours[-2][1][key], ours[-1][1][key]) for key in reference.PARAM_KEYS)
