"""The input pipeline: seeded random crop + flip + normalisation on whole batches.

Augmentation is one NumPy gather per batch (no per-image Python or PIL work), built in a
background thread so the next batch is ready when the step asks for it. The randomness of
an epoch is a function of (seed, epoch) alone, so a resumed run sees the same batches.
"""

import queue
import threading

import numpy as np

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2023, 0.1994, 0.2010], dtype=np.float32)
PAD = 4
SIZE = 32


def normalize(images):
    """uint8 NCHW images -> float32, scaled to [0, 1] then standardised per channel."""
    scale = (1.0 / (255.0 * STD)).reshape(1, 3, 1, 1)
    shift = (MEAN / STD).reshape(1, 3, 1, 1)
    return np.asarray(images, dtype=np.float32) * scale - shift


def augment(padded, indices, rng):
    """Random 32x32 crops of the zero-padded images at `indices`, each flipped with probability 1/2."""
    n = len(indices)
    top = rng.integers(0, 2 * PAD + 1, n)
    left = rng.integers(0, 2 * PAD + 1, n)
    flip = rng.random(n) < 0.5
    offsets = np.arange(SIZE)
    rows = top[:, None] + offsets
    cols = left[:, None] + np.where(flip[:, None], SIZE - 1 - offsets, offsets)
    channels = np.arange(3)
    return padded[indices[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None],
                  cols[:, None, None, :]]


class TrainBatches:
    """Shuffled, augmented, normalised training batches; the last partial batch is kept (PyTorch's default)."""

    def __init__(self, images, labels, batch_size, seed, max_steps_per_epoch=0, prefetch=4):
        self.padded = np.pad(np.asarray(images), ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
        self.labels = np.asarray(labels, dtype=np.int32)
        self.batch_size = batch_size
        self.seed = seed
        self.prefetch = prefetch
        full = -(-len(self.labels) // batch_size)
        self.steps_per_epoch = min(full, max_steps_per_epoch) if max_steps_per_epoch > 0 else full

    def _batches(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.labels))
        for step in range(self.steps_per_epoch):
            indices = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield normalize(augment(self.padded, indices, rng)), self.labels[indices]

    def epoch(self, epoch):
        """Iterate over one epoch's (images float32 NCHW, labels int32), produced ahead in a thread."""
        ready = queue.Queue(maxsize=self.prefetch)
        done = object()
        stop = threading.Event()

        def put(item):
            # Gives up once the consumer has gone, so an epoch abandoned midway leaves no thread blocked.
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for batch in self._batches(epoch):
                    if not put(batch):
                        return
            finally:
                put(done)

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            while (batch := ready.get()) is not done:
                yield batch
        finally:
            stop.set()
