"""A synthetic stand-in for a dataset's archive (cifar-100-python.tar.gz by default, cifar-10-python.tar.gz), for
tests and offline smoke runs.

Same layout as the real archive (imbsam.datasets): for CIFAR-100 cifar-100-python/{train,test,meta}, for
CIFAR-10 cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}, in Python-2-style pickles whose
str keys load as bytes with encoding="bytes" and as str with encoding="latin1". The batch labels
start with "synthetic" so the pipeline can tell it apart and warn.

Each class is a mean colour plus a smooth pattern that is symmetric under a horizontal flip and
changes slowly under a 4-pixel shift, so a small network trained with crop + flip augmentation can
learn it; per-pixel noise and a per-image brightness jitter keep it from being trivial.

    python -m imbsam.synthetic OUT.tar.gz [--dataset cifar100|cifar10] [--train-per-class N] [--test-per-class M]
        [--seed S]

prints the archive's md5 on stdout (the value for data.md5).
"""

import argparse
import gzip
import io
import pickle
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np

from imbsam import datasets, registry
from imbsam.data.checksum import md5sum
from imbsam.datasets._cifar_python import SYNTHETIC_MARK

NUM_COARSE = 20  # CIFAR-100's superclasses
SIDE = 32
# Bounds keep the int16 arithmetic of _render far from overflow and the colours away from the clip.
COLOUR_RANGE = (56, 200)
PATTERN_AMPLITUDE = 32
NOISE_HALF_WIDTH = 24
BRIGHTNESS_JITTER = 12
CHUNK = 5000


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str (BINSTRING), as the real CIFAR pickles do.

    The C pickler has no per-type hook that emits raw opcodes, hence the pure-Python one.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2_pickle(obj):
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _class_templates(rng, num_classes):
    """(num_classes, 3, SIDE, SIDE) int16: colour plus two flip-symmetric low-frequency waves."""
    colours = rng.uniform(*COLOUR_RANGE, size=(num_classes, 3, 1, 1))
    y = np.arange(SIDE)[:, None]
    # Measured from the centre, so cos(... x_centred) is unchanged by a horizontal flip.
    x_centred = np.arange(SIDE)[None, :] - (SIDE - 1) / 2
    templates = np.repeat(colours, SIDE, axis=2).repeat(SIDE, axis=3)
    for _ in range(2):
        # Periods of 32 or 64 pixels: a 4-pixel crop shift moves the wave by at most 45 degrees.
        freq_y = rng.choice([0.5, 1.0], size=num_classes)[:, None, None]
        freq_x = rng.choice([0.5, 1.0], size=num_classes)[:, None, None]
        phase = rng.uniform(0, 2 * np.pi, size=num_classes)[:, None, None]
        wave = np.cos(2 * np.pi * freq_y * y / SIDE + phase) * np.cos(2 * np.pi * freq_x * x_centred / SIDE)
        channel_mix = rng.uniform(-1, 1, size=(num_classes, 3, 1, 1))
        templates += PATTERN_AMPLITUDE * channel_mix * wave[:, None]
    return np.rint(templates).astype(np.int16)


def _render(templates, labels, rng):
    """uint8 (N, 3072) rows (R, G, B planes, row-major), as in the real pickles."""
    rows = np.empty((len(labels), 3 * SIDE * SIDE), dtype=np.uint8)
    for start in range(0, len(labels), CHUNK):
        chunk = labels[start : start + CHUNK]
        images = templates[chunk].reshape(len(chunk), -1)
        images += rng.integers(-NOISE_HALF_WIDTH, NOISE_HALF_WIDTH + 1, size=images.shape, dtype=np.int16)
        images += rng.integers(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER + 1, size=(len(chunk), 1), dtype=np.int16)
        np.clip(images, 0, 255, out=images)
        rows[start : start + CHUNK] = images
    return rows


def _batch(name, templates, labels, rng, seed, layout):
    batch = {
        b"batch_label": f"{SYNTHETIC_MARK} {name} batch (imbsam.synthetic, seed {seed})".encode(),
        layout.label_key.encode(): labels.tolist(),
        b"filenames": [f"class_{label:03d}_s_{i:06d}.png".encode() for i, label in enumerate(labels)],
        b"data": _render(templates, labels, rng),
    }
    if layout.num_classes == 100:
        batch[b"coarse_labels"] = (labels // (layout.num_classes // NUM_COARSE)).tolist()
    return batch


def _batches(kind, names, templates, per_class, rng, seed, layout):
    """Every class per_class times, shuffled like the real files (so "the first count_c images of a class" is not
    a contiguous block), dealt over the batch files in order."""
    labels = rng.permutation(np.repeat(np.arange(layout.num_classes), per_class))
    parts = np.array_split(labels, len(names))
    titles = [kind] if len(names) == 1 else [f"{kind} {index} of {len(names)}" for index in range(1, len(names) + 1)]
    return {f"{layout.root}/{name}": _py2_pickle(_batch(title, templates, part, rng, seed, layout))
            for name, title, part in zip(names, titles, parts)}


def _meta(layout):
    meta = {layout.names_key.encode(): [f"class_{c:03d}".encode() for c in range(layout.num_classes)]}
    if layout.num_classes == 100:
        meta[b"coarse_label_names"] = [f"superclass_{c:02d}".encode() for c in range(NUM_COARSE)]
    return meta


def _add_member(tar, name, payload=None):
    info = tarfile.TarInfo(name)
    # Fixed metadata so the same seed gives a byte-identical archive.
    info.mtime = 0
    info.uname = info.gname = "root"
    if payload is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
    else:
        info.mode = 0o644
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


def write_synthetic_archive(path, train_per_class=None, test_per_class=100, seed=0, dataset="cifar100"):
    """Write an archive in `dataset`'s layout (imbsam.datasets) to path; return its md5 hex digest. Deterministic
    for a seed. train_per_class: the dataset's own (500 for CIFAR-100, 5000 for CIFAR-10) by default."""
    module = datasets.get(dataset)
    layout = module.LAYOUT
    train_per_class = module.TRAIN_PER_CLASS if train_per_class is None else train_per_class
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError("train_per_class and test_per_class must be >= 1")
    rng = np.random.default_rng(seed)
    templates = _class_templates(rng, layout.num_classes)
    members = {**_batches("training", layout.train, templates, train_per_class, rng, seed, layout),
               **_batches("testing", layout.test, templates, test_per_class, rng, seed, layout),
               f"{layout.root}/{layout.meta}": _py2_pickle(_meta(layout))}
    # filename="" and mtime=0 keep the gzip header free of the path and the time. Level 0 (stored
    # blocks, still a valid gzip) because noisy pixels barely compress and deflating them was the
    # slowest step by far.
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        _add_member(tar, layout.root)
        for name, payload in members.items():
            _add_member(tar, name, payload)
    return md5sum(path)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m imbsam.synthetic",
        description="Write a synthetic archive in a dataset's layout and print its md5 (the value for data.md5).",
    )
    parser.add_argument("out", help="archive to write, e.g. data/synthetic-cifar-100-python.tar.gz")
    parser.add_argument("--dataset", choices=registry.names("datasets"), default="cifar100")
    parser.add_argument("--train-per-class", type=int, help="default: the dataset's (500 CIFAR-100, 5000 CIFAR-10)")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.train_per_class is not None and args.train_per_class < 1) or args.test_per_class < 1:
        parser.error("--train-per-class and --test-per-class must be >= 1")
    md5 = write_synthetic_archive(args.out, args.train_per_class, args.test_per_class, args.seed, args.dataset)
    print(md5)
    print(f"wrote {args.out}: set data.dataset to {args.dataset}, data.url to its path and data.md5 to {md5} in "
          "params.yaml", file=sys.stderr)


if __name__ == "__main__":
    main()
