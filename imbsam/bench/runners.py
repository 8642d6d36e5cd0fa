"""What the step benchmark's workers measure (imbsam.bench.step plans the rows, imbsam.bench.worker runs each in
its own process): every runner is built from a row's options and has describe() -> what the main process prints,
step(i) -> (images, result), which may return before the work is done, and sync(result), which waits for it."""

import itertools
import os

import numpy as np

from imbsam import registry
from imbsam.bench.twin import torch_resnet
from imbsam.bench.workload import NUM_CLASSES, PAPER, SEED, longtail_dataset
from imbsam.kernels.environment import ONEDNN_ISA_ENV, restore_user_environment


class _MindSporeRun:
    """Shared set-up: device, network and batches; `describe` reports what the main process prints."""

    def __init__(self, options):
        from imbsam.device.target import setup

        self.device = setup(options["device"], options["mode"])
        import mindspore as ms
        from mindspore import Tensor

        from imbsam.models import create_model

        self.ms = ms
        self.network = create_model(options["arch"], NUM_CLASSES, seed=SEED, kernels=options["kernels"])
        self.network.set_train(True)
        rng = np.random.default_rng(SEED)
        self.batch_size = options["batch_size"]
        self.images = Tensor(rng.standard_normal((self.batch_size, 3, 32, 32)).astype(np.float32))
        self.labels = [Tensor(batch) for batch in options["labels"]]

    def describe(self):
        return {**self.device, "threads": self.ms.get_context("runtime_num_threads"), "kernels": self.network.kernels,
                "parameters": sum(p.size for p in self.network.trainable_params())}

    def peak_device_mib(self):
        """What MindSpore's allocator held at most on the accelerator; None on the CPU, whose figure is the RSS."""
        if self.device["target"] == "CPU":
            return None
        return self.ms.runtime.max_memory_allocated() / 2**20


class MindSporeStep(_MindSporeRun):
    def __init__(self, options):
        super().__init__(options)
        from imbsam.criteria import create_loss
        from imbsam.optim import make_optimizer, make_train_step

        train = PAPER["train"]
        self.optimizer = make_optimizer(self.network, train["lr"], train["momentum"], train["weight_decay"])
        name = options["optimizer"]
        step_options = registry.module("optimizers", name).Params(**PAPER[name]).step_options(longtail_dataset()[1])
        # The paper's loss as training builds it.
        loss_fn = create_loss(train["loss"], NUM_CLASSES, {})
        self.train_step = make_train_step(self.network, loss_fn, self.optimizer, name, mode=self.device["mode"],
                                          **step_options)

    def step(self, i):
        return self.batch_size, self.train_step(self.images, self.labels[i])

    def sync(self, loss):
        loss.asnumpy()
        # The loss is ready before the optimizer's update; the first weight is written by it.
        self.optimizer.parameters[0].asnumpy()


class MindSporePass(_MindSporeRun):
    """One forward (train mode, BatchNorm updating) or forward+backward as make_train_step computes it:
    a Cell, so graph mode compiles it as it compiles the step."""

    def __init__(self, options):
        super().__init__(options)
        import mindspore as ms
        from mindspore import Tensor, nn

        from imbsam.criteria import create_loss
        from imbsam.optim import WeightedGradients, make_optimizer

        # One update at learning rate 0 leaves the weights as they are but stores them as training does:
        # on a network no optimizer ever wrote, ResNet-32's passes ran about 25% faster than in training.
        optimizer = make_optimizer(self.network, 0.0, momentum=0.0, weight_decay=0.0)
        optimizer(tuple(ms.ops.zeros_like(p) for p in optimizer.parameters))
        self.uniform = Tensor(np.full(self.batch_size, 1.0 / self.batch_size, dtype=np.float32))
        loss_fn = create_loss(PAPER["train"]["loss"], NUM_CLASSES, {})
        if options["pass"] == "forward":
            self.run = _forward_cell(nn, self.network, loss_fn)
        else:
            # The very Cell the train step differentiates with, so the floor is the step's own pass.
            gradients = WeightedGradients(self.network, loss_fn, optimizer.parameters)
            self.run = lambda images, labels, weights: gradients(images, labels, ms.mutable((weights,)))[1][0]

    def step(self, i):
        return self.batch_size, self.run(self.images, self.labels[i], self.uniform)

    def sync(self, result):
        # Backward runs from the loss to the input: the first layer's gradient is its last result.
        (result[0] if isinstance(result, tuple) else result).asnumpy()


class MindSporeEvaluation(_MindSporeRun):
    """The per-epoch test pass: eval mode (BatchNorm reading its running statistics), batches of
    eval.batch_size, as imbsam.train evaluates after every epoch."""

    def __init__(self, options):
        super().__init__({**options, "batch_size": PAPER["eval"]["batch_size"]})
        self.network.set_train(False)

    def step(self, i):
        return self.batch_size, self.network(self.images)

    def sync(self, result):
        result.asnumpy()


def _forward_cell(nn, network, loss_fn):
    class Forward(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.network = network
            self.loss_fn = loss_fn

        def construct(self, images, labels, sample_weights):
            return (self.loss_fn(self.network(images), labels) * sample_weights).sum()

    return Forward()


class InputPipeline:
    """TrainBatches over random uint8 images with the long-tailed labels.

    Each timed loop reads a freshly started stream and closes it at the end: its producer thread
    must neither work while other rows are timed nor start a loop with batches already made."""

    def __init__(self, options):
        from imbsam.data.augment import TrainBatches

        labels = longtail_dataset()[0]
        images = np.random.default_rng(SEED).integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        self.batches = TrainBatches(images, labels, options["batch_size"], SEED)
        self.epochs = itertools.count(1)
        self.stream = None

    def _fresh_stream(self):
        for epoch in self.epochs:
            yield from self.batches.epoch(epoch)

    def describe(self):
        return {}

    def step(self, i):
        if self.stream is None:
            self.stream = self._fresh_stream()
        images, _ = next(self.stream)
        return len(images), None

    def sync(self, result):
        self.stream.close()  # stops the producer thread
        self.stream = None


class TorchSGD:
    """The same network's SGD step in PyTorch on the CPU, with MindSpore's thread count and the user's
    environment: not imbsam's CPU defaults, which this process inherits (an AVX2 cap slowed PyTorch's
    128-channel convolution 1.3x)."""

    def __init__(self, options):
        restore_user_environment(options["environment"])
        import torch

        torch.set_num_threads(options["threads"])
        torch.manual_seed(SEED)
        self.torch = torch
        self.network = torch_resnet(torch, options["arch"]).train()
        train = PAPER["train"]
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=train["lr"], momentum=train["momentum"],
                                         weight_decay=train["weight_decay"])
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.batch_size = options["batch_size"]
        self.images = torch.randn(self.batch_size, 3, 32, 32)
        self.labels = [torch.from_numpy(batch.astype(np.int64)) for batch in options["labels"]]

    def describe(self):
        return {"torch": self.torch.__version__, "threads": self.torch.get_num_threads(),
                "isa": self.torch.backends.cpu.get_cpu_capability(),
                "onednn_max_cpu_isa": os.environ.get(ONEDNN_ISA_ENV),
                "parameters": sum(p.numel() for p in self.network.parameters())}

    def step(self, i):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.network(self.images), self.labels[i])
        loss.backward()
        self.optimizer.step()
        return self.batch_size, loss

    def sync(self, loss):
        loss.item()
