"""95% percentile-bootstrap intervals of balanced group accuracies and of their differences between optimizers.

What varies in a result is the test set (which images of each class were drawn) and the training seed. The two
are crossed, not nested: every seed is evaluated on the same test images. So one replicate draws, once, each
class's test images with replacement (as many as the class has: stratified, so the balanced accuracy keeps every
class) and, independently, the seeds with replacement; every optimizer is scored on that same image draw and those
same seeds, which pairs them: a difference between two optimizers loses the noise they share.

With one seed the interval covers the test set's noise only; with a few seeds the seed part rests on a few
values and is crude. Each interval is a separate 95% statement, not a family-wise one.
"""

import numpy as np

RESAMPLES = 2000
SEED = 0
CONFIDENCE = 0.95
GROUPS = ("many", "medium", "few", "all")


def _group_accuracy(per_class, groups):
    """(..., classes) per-class accuracies -> (..., 4) balanced accuracies in percent; a class absent from the
    test labels (NaN) is left out, as imbsam.evaluate does, and an empty group is NaN."""
    columns = [np.asarray(groups.get(name, ()), dtype=np.int64) for name in GROUPS[:-1]]
    columns.append(np.arange(per_class.shape[-1]))
    with np.errstate(invalid="ignore"):
        return np.stack([100.0 * np.nanmean(per_class[..., index], axis=-1) if index.size
                         else np.full(per_class.shape[:-1], np.nan) for index in columns], axis=-1)


class Bootstrap:
    """Group accuracies of several optimizers over the same seeds and test images, and their replicates.

    series: {name: [predicted classes of seed 1, seed 2, ...]}, every name with the same seeds in the same order
    (a name is typically an optimizer, or an optimizer under one evaluation protocol); labels: the test labels in
    the same order as every prediction array; groups: {"many": [classes], "medium": [...], "few": [...]}.
    """

    def __init__(self, series, labels, groups, num_classes, resamples=RESAMPLES, seed=SEED):
        labels = np.asarray(labels, dtype=np.int64)
        counts = {len(runs) for runs in series.values()}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"every series needs the same number of seeds (at least one), got {sorted(counts)}")
        self.seeds, self.resamples, self.seed = counts.pop(), resamples, seed
        names = self.names = list(series)
        correct = np.stack([np.asarray(run).reshape(-1) == labels for name in names for run in series[name]])
        # (names x seeds, images). float32 counts drawn images exactly; accuracies are divided in float64, so that an
        # interval with no spread is its estimate to the last bit.
        correct = correct.astype(np.float32)
        rng = np.random.default_rng(seed)
        per_class = np.full((resamples, len(correct), num_classes), np.nan)
        point = np.full((len(correct), num_classes), np.nan)
        for cls in range(num_classes):
            members = np.flatnonzero(labels == cls)
            if not members.size:
                continue
            # How often each of the class's images is drawn in each replicate: a stratified resample.
            draws = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size), size=resamples)
            drawn_right = draws.astype(np.float32) @ correct[:, members].T
            per_class[:, :, cls] = drawn_right.astype(np.float64) / members.size
            point[:, cls] = correct[:, members].sum(axis=1, dtype=np.float64) / members.size
        shape = (len(names), self.seeds, len(GROUPS))
        self._point = dict(zip(names, _group_accuracy(point, groups).reshape(shape)))
        self._replicates = dict(zip(names, _group_accuracy(per_class, groups)
                                    .reshape(resamples, *shape).transpose(1, 0, 2, 3)))
        self._seed_draws = rng.integers(0, self.seeds, size=(resamples, self.seeds))

    def _over_drawn_seeds(self, values, group):
        """Per replicate, the mean over its drawn seeds of per-seed values (resamples, seeds, groups)."""
        return np.take_along_axis(values[:, :, GROUPS.index(group)], self._seed_draws, axis=1).mean(axis=1)

    def _estimate(self, values, point, group):
        estimate = float(point[:, GROUPS.index(group)].mean())
        if np.isnan(estimate):
            return None
        tail = 100 * (1 - CONFIDENCE) / 2
        low, high = np.percentile(self._over_drawn_seeds(values, group), [tail, 100 - tail])
        return estimate, float(low), float(high)

    def accuracy(self, name, group):
        """(mean over seeds, low, high) of the balanced accuracy (%) of `group`; None for an empty group."""
        return self._estimate(self._replicates[name], self._point[name], group)

    def difference(self, name, baseline, group):
        """(mean over seeds, low, high) of accuracy(name) - accuracy(baseline), seed by seed on the same images."""
        return self._estimate(self._replicates[name] - self._replicates[baseline],
                              self._point[name] - self._point[baseline], group)

    def replicates(self, name, group):
        """The resampled accuracies of `group` (one per replicate): what the interval is the percentiles of."""
        return self._over_drawn_seeds(self._replicates[name], group)
