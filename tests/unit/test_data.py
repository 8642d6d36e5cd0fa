"""imbsam.data (split rule, groups, extraction, pickle reading, split files) and imbsam.synthetic."""

import io
import os
import pickle
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from imbsam.data.checksum import md5sum
from imbsam.data.loading import load_split
from imbsam.data.split import class_groups, longtail_counts, longtail_indices, safe_extract, write_split
from imbsam.datasets import cifar100
from imbsam.errors import InputError
from imbsam.synthetic import write_synthetic_archive

ARCHIVE_ROOT = cifar100.LAYOUT.root
TRAIN_MEMBER = f"{ARCHIVE_ROOT}/train"
META_MEMBER = f"{ARCHIVE_ROOT}/meta"
read_cifar100 = cifar100.read

REPO = Path(__file__).resolve().parents[2]


# The long-tail rule and the class groups


@pytest.mark.parametrize(
    ("imb_factor", "total", "tail", "many", "medium", "few"),
    [
        (0.01, 10847, 5, 35, 35, 30),
        (0.02, 12608, 10, 41, 41, 18),
        (0.1, 19573, 50, 69, 31, 0),
    ],
)
def test_exp_profile_matches_the_published_splits(imb_factor, total, tail, many, medium, few):
    counts = longtail_counts(100, 500, imb_factor)
    groups = class_groups(counts)
    assert (sum(counts), counts[0], counts[-1]) == (total, 500, tail)
    assert counts == sorted(counts, reverse=True)
    assert [len(groups[g]) for g in ("many", "medium", "few")] == [many, medium, few]
    assert sorted(groups["many"] + groups["medium"] + groups["few"]) == list(range(100))
    for members in groups.values():
        assert members == sorted(members)


def test_step_profile_halves_the_classes():
    counts = longtail_counts(100, 500, 0.01, profile="step")
    assert counts == [500] * 50 + [5] * 50
    groups = class_groups(counts)
    assert groups == {"many": list(range(50)), "medium": [], "few": list(range(50, 100))}


def test_imb_factor_one_is_balanced():
    assert longtail_counts(100, 500, 1) == [500] * 100


@pytest.mark.parametrize("imb_factor", [0, 1.5, -0.1, "0.01", True])
def test_bad_imb_factor_names_the_key_and_the_range(imb_factor):
    with pytest.raises(InputError, match=r"split\.imb_factor=.*\(0, 1\]"):
        longtail_counts(100, 500, imb_factor)


def test_unknown_profile_names_the_key_and_the_choices():
    with pytest.raises(InputError, match=r"split\.profile='linear' is not one of exp, step"):
        longtail_counts(100, 500, 0.01, profile="linear")


def test_class_groups_thresholds_are_strict_at_both_ends():
    groups = class_groups([101, 100, 20, 19], many_threshold=100, few_threshold=20)
    assert groups == {"many": [0], "medium": [1, 2], "few": [3]}


def test_class_groups_refuse_crossed_thresholds():
    with pytest.raises(InputError, match=r"split\.few_threshold=50 exceeds split\.many_threshold=10"):
        class_groups([5, 30, 60], many_threshold=10, few_threshold=50)


# Extraction


def _tar_gz(path, members):
    """members: (TarInfo, bytes or None) pairs."""
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name, payload=b"x"):
    return tarfile.TarInfo(name), payload


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize(
    ("member", "bad_name"),
    [
        (_file("../escaped"), "../escaped"),
        (_file("cifar-100-python/../../escaped"), "cifar-100-python/../../escaped"),
        (_file("/tmp/imbsam-absolute-member"), "/tmp/imbsam-absolute-member"),
        (_link("cifar-100-python/train", "../../escaped", tarfile.SYMTYPE), "cifar-100-python/train"),
        (_link("cifar-100-python/train", "/etc/passwd", tarfile.SYMTYPE), "cifar-100-python/train"),
        (_link("cifar-100-python/train", "../escaped", tarfile.LNKTYPE), "cifar-100-python/train"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"],
)
def test_safe_extract_refuses_members_escaping_the_destination(tmp_path, member, bad_name):
    archive = _tar_gz(tmp_path / "evil.tar.gz", [_file("cifar-100-python/meta"), member])
    dest = tmp_path / "a" / "b"
    dest.mkdir(parents=True)
    with pytest.raises(InputError, match=re.escape(f"refusing member '{bad_name}'")) as error:
        safe_extract(archive, dest)
    assert "dvc repro download" in str(error.value)
    assert not (tmp_path / "a" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not Path("/tmp/imbsam-absolute-member").exists()


def test_safe_extract_truncated_archive(tmp_path, synthetic_archive):
    good, _ = synthetic_archive()
    truncated = tmp_path / "cifar-100-python.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated or corrupt archive") as error:
        safe_extract(truncated, tmp_path / "out")
    assert str(truncated) in str(error.value) and "dvc repro download" in str(error.value)


@pytest.mark.parametrize("where", ["header", "middle"])
def test_safe_extract_corrupt_gzip(tmp_path, synthetic_archive, where):
    data = bytearray(synthetic_archive()[0].read_bytes())
    # The header's magic bytes, or stored deflate data whose damage only the gzip CRC reveals.
    position = 0 if where == "header" else len(data) // 2
    data[position : position + 16] = bytes(16)
    corrupt = tmp_path / "cifar-100-python.tar.gz"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputError, match=re.escape(f"{corrupt}: truncated or corrupt archive")):
        safe_extract(corrupt, tmp_path / "out")


# Reading the pickles


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, synthetic_archive):
    """Where the default synthetic archive was extracted (holding cifar-100-python/)."""
    path, _ = synthetic_archive()
    dest = tmp_path_factory.mktemp("extracted")
    safe_extract(path, dest)
    return dest


def test_synthetic_archive_reads_like_cifar100(extracted):
    data = read_cifar100(extracted)
    assert data["train_images"].shape == (2000, 3, 32, 32) and data["train_images"].dtype == np.uint8
    assert data["test_images"].shape == (500, 3, 32, 32) and data["test_images"].dtype == np.uint8
    assert np.bincount(data["train_labels"], minlength=100).tolist() == [20] * 100
    assert np.bincount(data["test_labels"], minlength=100).tolist() == [5] * 100
    assert data["class_names"][:2] == ["class_000", "class_001"] and len(data["class_names"]) == 100
    assert data["synthetic"] is True


def test_synthetic_pickles_have_the_real_layout(extracted):
    """Python 2 str keys: bytes with encoding="bytes", str with "latin1", as the real archive."""
    with open(extracted / TRAIN_MEMBER, "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")
    with open(extracted / TRAIN_MEMBER, "rb") as f:
        as_latin1 = pickle.load(f, encoding="latin1")
    keys = {"data", "fine_labels", "coarse_labels", "filenames", "batch_label"}
    assert set(as_bytes) == {k.encode() for k in keys} and set(as_latin1) == keys
    assert np.array_equal(as_bytes[b"data"], as_latin1["data"]) and as_latin1["data"].shape == (2000, 3072)
    assert as_latin1["batch_label"].startswith("synthetic")
    with open(extracted / META_MEMBER, "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert len(meta["fine_label_names"]) == 100 and len(meta["coarse_label_names"]) == 20


def _cifar_folder(tmp_path, train=None, test=None, meta=None):
    """cifar-100-python/ of valid little pickles (str keys, protocol 2); pass an object to replace one."""

    def batch(n):
        return {"data": np.zeros((n, 3072), np.uint8), "fine_labels": list(range(n)), "batch_label": "b"}

    folder = tmp_path / ARCHIVE_ROOT
    folder.mkdir()
    objects = {
        "train": batch(100) if train is None else train,
        "test": batch(100) if test is None else test,
        "meta": {"fine_label_names": [f"c{i}" for i in range(100)]} if meta is None else meta,
    }
    for name, obj in objects.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    return folder


def test_plain_protocol2_pickles_read(tmp_path):
    data = read_cifar100(_cifar_folder(tmp_path).parent)
    assert data["train_images"].shape == (100, 3, 32, 32) and data["synthetic"] is False


@pytest.mark.parametrize(
    ("member", "obj", "message"),
    [
        ("train", {"data": np.zeros((100, 3072), np.uint8), "labels": [0] * 100}, "missing key.*fine_labels"),
        ("train", {"fine_labels": [0] * 100}, "missing key.*data"),
        ("train", {"data": np.zeros((100, 3000), np.uint8), "fine_labels": [0] * 100}, r"shape \(100, 3000\)"),
        ("test", {"data": np.zeros((100, 3072), np.float32), "fine_labels": [0] * 100}, "float32"),
        ("train", {"data": np.zeros((100, 3072), np.uint8), "fine_labels": [0] * 99 + [100]}, "fine label 100"),
        ("test", {"data": np.zeros((100, 3072), np.uint8), "fine_labels": [0] * 99}, "99 fine_labels for 100"),
        ("train", [1, 2, 3], "holds a list"),
        ("meta", {"fine_label_names": ["a"] * 10}, "10 fine_label_names"),
        ("meta", {"coarse_label_names": ["a"] * 20}, "no fine_label_names"),
    ],
)
def test_bad_pickles_name_the_file_and_the_problem(tmp_path, member, obj, message):
    folder = _cifar_folder(tmp_path, **{member: obj})
    with pytest.raises(InputError, match=message) as error:
        read_cifar100(tmp_path)
    assert str(folder / member) in str(error.value)


def test_missing_pickle(tmp_path):
    folder = _cifar_folder(tmp_path)
    (folder / "test").unlink()
    with pytest.raises(InputError, match=f"{folder / 'test'} not found"):
        read_cifar100(tmp_path)


def test_truncated_pickle(tmp_path):
    folder = _cifar_folder(tmp_path)
    (folder / "train").write_bytes((folder / "train").read_bytes()[:1000])
    with pytest.raises(InputError, match="not a readable CIFAR-100 pickle"):
        read_cifar100(tmp_path)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    witness = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {witness}",))

    _cifar_folder(tmp_path, train={"data": Payload(), "fine_labels": []})
    with pytest.raises(InputError, match=r"references (posix|os)\.system"):
        read_cifar100(tmp_path)
    assert not witness.exists()


# Selecting and writing the split


def test_longtail_indices_take_the_first_images_of_each_class_in_file_order():
    labels = np.array([1, 0, 1, 0, 2, 1, 0, 2])
    assert longtail_indices(labels, [2, 3, 1]).tolist() == [1, 3, 0, 2, 5, 4]


def test_longtail_indices_seeded_shuffle_is_within_class_and_repeatable():
    labels = np.repeat(np.arange(3), 50)
    first = longtail_indices(labels, [10, 5, 2], shuffle_seed=7)
    assert np.array_equal(first, longtail_indices(labels, [10, 5, 2], shuffle_seed=7))
    assert not np.array_equal(first, longtail_indices(labels, [10, 5, 2]))
    assert np.bincount(labels[first]).tolist() == [10, 5, 2]


def test_longtail_indices_refuse_a_class_with_too_few_images():
    with pytest.raises(InputError, match="class 1 has 1 training images but the split asks for 2"):
        longtail_indices(np.array([0, 0, 1]), [2, 2])


def _write_small_split(out_dir, **overrides):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [30, 20, 10, 5])
    kwargs = {
        "imb_factor": 0.1,
        "profile": "exp",
        "shuffle_seed": None,
        "many_threshold": 25,
        "few_threshold": 8,
        "synthetic": True,
        **overrides,
    }
    return write_split(
        out_dir,
        rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8),
        labels,
        rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8),
        np.arange(8) % 4,
        ["a", "b", "c", "d"],
        **kwargs,
    )


def test_write_split_is_byte_identical_twice_and_round_trips(tmp_path):
    _write_small_split(tmp_path / "one" / "split")
    _write_small_split(tmp_path / "two" / "split")
    names = sorted(p.name for p in (tmp_path / "one" / "split").iterdir())
    assert names == ["summary.json", "test_images.npy", "test_labels.npy", "train_images.npy", "train_labels.npy"]
    for name in names:
        assert (tmp_path / "one" / "split" / name).read_bytes() == (tmp_path / "two" / "split" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["split"]

    split = load_split(tmp_path / "one" / "split")
    summary = split["summary"]
    assert split["train_images"].shape == (65, 3, 32, 32) and split["train_images"].dtype == np.uint8
    assert split["train_labels"].dtype == np.int32 and split["test_labels"].dtype == np.int32
    assert summary["class_counts"] == [30, 20, 10, 5]
    assert summary["groups"] == {"many": [0], "medium": [1, 2], "few": [3]}
    assert (summary["train_total"], summary["test_total"], summary["num_classes"]) == (65, 8, 4)
    assert summary["synthetic"] is True and summary["shuffle_seed"] is None
    for name, md5 in summary["md5"].items():
        assert md5sum(tmp_path / "one" / "split" / name) == md5


def test_write_split_replaces_an_old_split_and_fails_without_touching_it(tmp_path):
    out = tmp_path / "split"
    _write_small_split(out, imb_factor=0.5)
    _write_small_split(out, imb_factor=0.2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert b'"imb_factor": 0.2' in before["summary.json"]
    with pytest.raises(InputError):
        _write_small_split(out, many_threshold=5, few_threshold=8)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_load_split_missing_says_how_to_make_it(tmp_path):
    with pytest.raises(InputError, match=r"missing .*train_images\.npy.*run `dvc repro split`"):
        load_split(tmp_path / "split")


# The synthetic archive


def test_synthetic_archive_is_deterministic_per_seed(tmp_path, synthetic_archive):
    path, md5 = synthetic_archive(train_per_class=3, test_per_class=1, seed=5)
    again = write_synthetic_archive(tmp_path / "again.tar.gz", 3, 1, seed=5)
    other = write_synthetic_archive(tmp_path / "other.tar.gz", 3, 1, seed=6)
    assert again == md5 == md5sum(path) and other != md5
    assert (tmp_path / "again.tar.gz").read_bytes() == path.read_bytes()


def test_synthetic_cli_prints_the_md5(tmp_path):
    out = tmp_path / "not-yet" / "s.tar.gz"
    result = subprocess.run(
        [sys.executable, "-m", "imbsam.synthetic", str(out), "--train-per-class", "2", "--test-per-class", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == md5sum(out)
    assert "data.md5" in result.stderr


def _crop_and_flip(images, rng, pad=4):
    """The training augmentation: random 32x32 crop of the zero-padded image, random horizontal flip."""
    n, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    out = np.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip][..., ::-1]
    return out


def test_synthetic_images_stay_learnable_under_crop_and_flip(tmp_path, synthetic_archive):
    """Nearest class mean on raw pixels, test images cropped and flipped: far above 1% chance."""
    path, _ = synthetic_archive(train_per_class=50, test_per_class=10)
    safe_extract(path, tmp_path)
    data = read_cifar100(tmp_path)
    train = data["train_images"].reshape(5000, -1).astype(np.float32)
    means = np.stack([train[data["train_labels"] == c].mean(0) for c in range(100)])
    test = _crop_and_flip(data["test_images"], np.random.default_rng(0)).reshape(1000, -1).astype(np.float32)
    distances = (means**2).sum(1)[None] - 2 * test @ means.T
    accuracy = (distances.argmin(1) == data["test_labels"]).mean()
    assert accuracy > 0.25
