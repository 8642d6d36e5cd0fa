"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory):
    """Factory: synthetic_archive(train_per_class=20, test_per_class=5, seed=0) -> (path, md5).

    Each argument set is written once per session and shared: treat the file as read-only and copy
    it before changing it.
    """
    from imbsam.synthetic import write_synthetic_archive

    made = {}

    def make(train_per_class=20, test_per_class=5, seed=0):
        key = (train_per_class, test_per_class, seed)
        if key not in made:
            path = tmp_path_factory.mktemp("synthetic") / "cifar-100-python.tar.gz"
            made[key] = (path, write_synthetic_archive(path, *key))
        return made[key]

    return make
