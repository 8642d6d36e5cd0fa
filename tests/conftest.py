"""Fixtures shared by the test modules."""

import pytest

# Before any test imports MindSpore: imbsam's CPU environment (imbsam.kernels.environment.prepare_environment).
import imbsam  # noqa: F401


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory):
    """Factory: synthetic_archive(train_per_class=20, test_per_class=5, seed=0, dataset="cifar100") -> (path, md5).

    Each argument set is written once per session and shared: treat the file as read-only and copy
    it before changing it.
    """
    from imbsam.synthetic import write_synthetic_archive

    made = {}

    def make(train_per_class=20, test_per_class=5, seed=0, dataset="cifar100"):
        from imbsam import datasets

        key = (train_per_class, test_per_class, seed, dataset)
        if key not in made:
            path = tmp_path_factory.mktemp("synthetic") / datasets.get(dataset).ARCHIVE
            made[key] = (path, write_synthetic_archive(path, *key))
        return made[key]

    return make


@pytest.fixture(scope="session")
def synthetic_split(tmp_path_factory, synthetic_archive):
    """Factory: synthetic_split(train_per_class, test_per_class, imb_factor=1.0) -> folder of a written split."""
    from imbsam.data.split import build_split

    made = {}

    def make(train_per_class=20, test_per_class=5, imb_factor=1.0):
        key = (train_per_class, test_per_class, imb_factor)
        if key not in made:
            archive, _ = synthetic_archive(train_per_class, test_per_class)
            made[key] = tmp_path_factory.mktemp("split") / "split"
            build_split(archive, made[key], imb_factor=imb_factor)
        return made[key]

    return make
