"""The epoch loop: learning-rate schedule, per-epoch test evaluation, checkpoints and resume.

A run checkpoints at the end of every epoch into `resume_dir` (model, optimizer state and
schedule position, history). The data order and augmentation of an epoch derive from
(seed, epoch), so the checkpoint plus the epoch number restore everything: the same call
after an interruption (Ctrl-C, SIGTERM, kill -9) continues from the last finished epoch
and, on the CPU, ends with the same weights as an uninterrupted run. A checkpoint is only
reused by a run with the same configuration (its hash names the folder).

Runs started together (python -m imbsam.matrix) train in DVC's temporary experiment workspaces, which go
when the experiment ends: IMBSAM_RESUME_DIR puts the checkpoints elsewhere, and each run also keeps a
status file there (device, epoch, seconds per epoch) for the launcher to show.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from imbsam import registry
from imbsam.data.augment import TrainBatches
from imbsam.durations import format_duration
from imbsam.errors import InputError
from imbsam.evaluate import group_accuracy, logits, per_class_accuracy
from imbsam.files import atomic_path, write_text
from imbsam.models import create_model
from imbsam.optim import make_optimizer, make_train_step
from imbsam.schedules import epochs_at_zero, learning_rates


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result. `from_params` takes it from a validated params.yaml
    (imbsam.params), which states every value's checks and the paper's defaults."""

    optimizer: str
    seed: int
    arch: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    decay_bn: bool
    schedule: str
    max_steps_per_epoch: int
    optimizer_params: dict  # the optimizer's params.yaml group (imbsam/optimizers/<optimizer>.py)
    loss: str = "ce"
    loss_params: dict = None  # the loss's params.yaml group (imbsam/losses/<loss>.py)

    @classmethod
    def from_params(cls, params, optimizer, seed):
        train = params.train
        return cls(optimizer=optimizer, seed=seed, arch=params.model.arch, epochs=train.epochs,
                   batch_size=train.batch_size, lr=train.lr, momentum=train.momentum,
                   weight_decay=train.weight_decay, decay_bn=train.decay_bn, schedule=train.schedule,
                   max_steps_per_epoch=train.max_steps_per_epoch,
                   optimizer_params=getattr(params, optimizer).model_dump(), loss=train.loss,
                   loss_params=getattr(params, train.loss).model_dump())

    def step_options(self, class_counts, steps_per_epoch=None):
        """The optimizer's make_step options for a split with these per-class counts."""
        schedule = (self.epochs, steps_per_epoch) if steps_per_epoch else None
        params = registry.module("optimizers", self.optimizer).Params(**self.optimizer_params)
        return params.step_options(class_counts, schedule)

    def loss_options(self, class_counts):
        """The loss's make_loss options for a split with these per-class counts."""
        return registry.module("losses", self.loss).Params(**(self.loss_params or {})).loss_options(class_counts)

    def digest(self, data_fingerprint):
        text = json.dumps({"config": asdict(self), "data": data_fingerprint}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


RESUME_DIR_ENV = "IMBSAM_RESUME_DIR"


def resume_root():
    """Where unfinished runs checkpoint: IMBSAM_RESUME_DIR, else .resume in the working directory."""
    return Path(os.environ.get(RESUME_DIR_ENV) or ".resume")


def status_file(resume_dir, name):
    return Path(resume_dir) / "status" / f"{name}.json"


class _Checkpoints:
    """Atomic per-epoch checkpoints: the state file names the checkpoint it belongs to and is
    replaced last, so a kill at any moment leaves a consistent (older or newer) pair."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.state_file = self.folder / "state.json"

    def load_state(self):
        if not self.state_file.is_file():
            return None
        return json.loads(self.state_file.read_text())

    def save(self, epoch, network, optimizer, state, best_network_changed):
        names = {"train": f"epoch-{epoch:04d}.ckpt"}
        self._write(self.folder / names["train"], _state_parameters(network, optimizer))
        names["best"] = f"best-{epoch:04d}.ckpt" if best_network_changed else state.get("files", {}).get("best")
        if best_network_changed:
            self._write(self.folder / names["best"], list(network.get_parameters()))
        state = {**state, "files": names}
        write_text(self.state_file, json.dumps(state, indent=1))
        for stale in self.folder.glob("*.ckpt"):
            if stale.name not in names.values():
                stale.unlink()
        return state

    @staticmethod
    def _write(path, parameters):
        import mindspore as ms

        with atomic_path(path) as partial:
            ms.save_checkpoint(parameters, str(partial))


def _state_parameters(network, optimizer):
    """Network weights and BatchNorm statistics plus the optimizer's momentum buffers and step counter."""
    seen, parameters = set(), []
    for cell in (network, optimizer):
        for p in cell.get_parameters():
            if p.name not in seen:
                seen.add(p.name)
                parameters.append(p)
    return parameters


def _load_into(cells, checkpoint):
    import mindspore as ms

    values = ms.load_checkpoint(str(checkpoint))
    for cell in cells:
        ms.load_param_into_net(cell, values, strict_load=True)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (docker stop, a scheduler's preemption) ends the run like Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Steps timed (after the first, which compiles) before the total training time is estimated.
_ESTIMATE_AFTER = 5


def evaluate_epoch(network, split, batch_size):
    """Test accuracy without TTA (the authors' per-epoch selection criterion), per group, in percent."""
    summary = split["summary"]
    predictions = logits(network, split["test_images"], batch_size).argmax(axis=1)
    per_class = per_class_accuracy(predictions, split["test_labels"], summary["num_classes"])
    return group_accuracy(per_class, summary["groups"])


def train(config, split, out_dir, resume_dir, live_dir=None, device=None, kernels="auto", mode="graph",
          quick_run_hint="", log=print, progress=True, eval_batch_size=500):
    """Train one run; return its metadata (also written to out_dir/train.json).

    kernels: the convolution and BatchNorm kernels (imbsam.models.create_model); the device metadata says which ran.
    mode: the train step's execution mode (imbsam.optim.make_train_step): "graph" or "pynative".
    eval_batch_size: test images per forward pass of the per-epoch test (eval.batch_size): memory only.

    split: imbsam.data.load_split(...) output. out_dir receives model/last.ckpt, model/best.ckpt
    and train.json; resume_dir/<config hash> holds the per-epoch checkpoint until the run ends.
    """
    run = _Run(config, split, resume_dir, device, kernels, mode, log)
    run.resume(live_dir)
    run.start()
    with _sigterm_as_interrupt():
        try:
            for epoch in range(run.state["epoch"] + 1, config.epochs + 1):
                run.checkpoint(run.one_epoch(epoch, eval_batch_size, quick_run_hint, progress))
        except KeyboardInterrupt:
            done = run.state["epoch"]
            raise InputError(f"interrupted during epoch {done + 1}: run the same command again to resume after "
                             f"epoch {done} (checkpoint in {run.checkpoints.folder})") from None
    return run.finish(out_dir)


@dataclass(frozen=True)
class _Epoch:
    """A trained and tested epoch: its record (what dvclive logs and the history keeps) and its share of the
    run's totals."""

    record: dict
    images: int
    train_seconds: float
    started: float  # time.perf_counter() at its start


class _Run:
    """One run's parts and progress, in the steps train() takes: setup (here), resume, start, then one_epoch and
    checkpoint for each epoch left, and finish."""

    def __init__(self, config, split, resume_dir, device, kernels, mode, log):
        """Setup: the batches, the optimizer's and the loss's options (saying what is odd about them), the
        network, its loss, schedule and train step."""
        import mindspore as ms

        from imbsam.criteria import create_loss

        self.config, self.split, self.resume_dir, self.log = config, split, resume_dir, log
        summary = split["summary"]
        self.batches = TrainBatches(split["train_images"], split["train_labels"], config.batch_size, config.seed,
                                    config.max_steps_per_epoch)
        options = config.step_options(summary["class_counts"], self.batches.steps_per_epoch)
        self.optimizer = registry.module("optimizers", config.optimizer)
        self.loss = registry.module("losses", config.loss)
        self.tail_classes = options.get("tail_classes", [])
        _say_about_the_options(log, config, self.optimizer, options)
        self.checkpoints = _Checkpoints(Path(resume_dir) / config.digest(summary.get("md5")))

        ms.set_seed(config.seed)
        self.network = create_model(config.arch, summary["num_classes"], seed=config.seed, kernels=kernels,
                                    normalised_head=self.loss.NORMALISED_HEAD)
        self.loss_options = config.loss_options(summary["class_counts"])
        self.loss_fn = create_loss(config.loss, summary["num_classes"], self.loss_options)
        self.device = {**(device or {}), "mode": mode, "kernels": self.network.kernels}
        self.schedule = learning_rates(config.schedule, config.lr, config.epochs, self.batches.steps_per_epoch)
        self.base_optimizer = make_optimizer(self.network, self.schedule, config.momentum, config.weight_decay,
                                             config.decay_bn)
        self.step = make_train_step(self.network, self.loss_fn, self.base_optimizer, config.optimizer, mode=mode,
                                    **options)

    def resume(self, live_dir):
        """The weights and state after the last finished epoch of the checkpoint, if there is one; dvclive
        replays the epochs it already has."""
        config, state = self.config, self.checkpoints.load_state()
        if state:
            _load_into([self.network, self.base_optimizer], self.checkpoints.folder / state["files"]["train"])
            self.log(f"resuming {config.optimizer} seed {config.seed} after epoch {state['epoch']} of "
                     f"{config.epochs} from {self.checkpoints.folder}")
        else:
            state = {"epoch": 0, "history": [], "best_epoch": None, "best_acc": -1.0, "train_seconds": 0.0,
                     "wall_seconds": 0.0, "train_images": 0}
        self.state = state
        self.live = _Live(live_dir, state["history"]) if live_dir else None

    def start(self):
        """Say what trains, and how the schedule and the loss will behave; write the run's first status."""
        config, device, steps = self.config, self.device, self.batches.steps_per_epoch
        self.log(f"training {config.optimizer} seed {config.seed}: {config.arch}, {self.loss.LABEL} loss, "
                 f"{config.epochs} epochs x {steps} steps of {config.batch_size}, {len(self.tail_classes)} tail "
                 f"classes, device {device.get('target', '?')} ({device['mode']}, {device['kernels']} kernels)")
        _say_epochs_at_zero(self.log, config, epochs_at_zero(self.schedule, steps))
        if self.loss_options.get("weights_from_epoch", 0) > config.epochs:
            self.log(f"note: {config.loss}.drw_after={config.loss_params['drw_after']} is not below train.epochs="
                     f"{config.epochs}: this run never re-weights (LDAM without DRW); lower {config.loss}.drw_after")
        self.started, self.resumed_after = time.time(), self.state["epoch"]
        self.status = {"run": f"{config.optimizer}-{config.seed}", "pid": os.getpid(),
                       "device": device.get("slot") or device.get("target"), "epochs": config.epochs,
                       "epoch": self.state["epoch"], "epoch_seconds": None, "started_at": self.started,
                       "finished": False}
        self._write_status()

    def one_epoch(self, epoch, eval_batch_size, quick_run_hint, progress):
        """Train one epoch, then test without TTA; a few steps into the first, estimate the whole run's time."""
        from mindspore import Tensor
        from tqdm import tqdm

        config, steps = self.config, self.batches.steps_per_epoch
        started = time.perf_counter()
        self.loss_fn.start_epoch(epoch)
        losses, seen, step_ends = [], 0, []
        bar = tqdm(self.batches.epoch(epoch), total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="step",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        for i, (images, labels) in enumerate(bar):
            losses.append(self.step(Tensor(images), Tensor(labels)))
            seen += len(labels)
            if i % 10 == 9:
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{float(losses[-1].asnumpy()):.3f}", img_s=f"{seen / elapsed:.0f}")
            if epoch == 1 and i <= _ESTIMATE_AFTER:
                step_ends.append(time.perf_counter())
                if i == _ESTIMATE_AFTER:
                    _print_estimate(self.log, typical_step_seconds(step_ends), steps * config.epochs, quick_run_hint)
        train_loss = float(np.mean([value.asnumpy() for value in losses]))
        train_seconds = time.perf_counter() - started
        test = evaluate_epoch(self.network, self.split, eval_batch_size)
        record = {"epoch": epoch, "train/loss": train_loss, "lr": float(self.schedule[(epoch - 1) * steps]),
                  "train/img_per_s": seen / train_seconds, **{f"test/{k}": v for k, v in test.items()}}
        return _Epoch(record, seen, train_seconds, started)

    def checkpoint(self, epoch):
        """Keep a finished epoch: the state and checkpoint (a new best too), dvclive's curves, the status file."""
        record, state = epoch.record, self.state
        improved = record["test/all"] is not None and record["test/all"] > state["best_acc"]
        state = {**state, "epoch": record["epoch"], "history": [*state["history"], record],
                 "train_seconds": state["train_seconds"] + epoch.train_seconds,
                 "wall_seconds": state["wall_seconds"] + time.perf_counter() - epoch.started,
                 "train_images": state["train_images"] + epoch.images}
        if improved:
            state.update(best_epoch=record["epoch"], best_acc=record["test/all"])
        self.state = self.checkpoints.save(record["epoch"], self.network, self.base_optimizer, state, improved)
        if self.live:
            self.live.log(record)
        self._write_status(epoch=record["epoch"], epoch_seconds=time.perf_counter() - epoch.started)
        self.log(f"epoch {record['epoch']}/{self.config.epochs}: loss {record['train/loss']:.4f}, test acc "
                 f"{_pct(record['test/all'])} (many {_pct(record['test/many'])}, medium {_pct(record['test/medium'])}, "
                 f"few {_pct(record['test/few'])}), {record['train/img_per_s']:.0f} img/s")

    def finish(self, out_dir):
        """The last and best weights and train.json into out_dir; the checkpoint folder goes; the metadata."""
        import mindspore as ms

        config, state = self.config, self.state
        out_dir = Path(out_dir)
        (out_dir / "model").mkdir(parents=True, exist_ok=True)
        ms.save_checkpoint(list(self.network.get_parameters()), str(out_dir / "model" / "last.ckpt"))
        shutil.copyfile(self.checkpoints.folder / state["files"]["best"], out_dir / "model" / "best.ckpt")
        metadata = {
            "optimizer": config.optimizer, "label": self.optimizer.LABEL, "seed": config.seed, "arch": config.arch,
            "loss": config.loss,
            "epochs": config.epochs, "epochs_completed": state["epoch"], "last_epoch": state["epoch"],
            "best_epoch": state["best_epoch"], "best_test_acc_plain": state["best_acc"],
            "last_test_acc_plain": state["history"][-1]["test/all"],
            "steps_per_epoch": self.batches.steps_per_epoch, "max_steps_per_epoch": config.max_steps_per_epoch,
            "tail_classes": self.tail_classes,
            "train_seconds": round(state["train_seconds"], 3),
            "wall_time_s": round(state["wall_seconds"], 3),
            "train_img_per_s": round(state["train_images"] / max(state["train_seconds"], 1e-9), 2),
            "device": self.device, "config": asdict(config), "history": state["history"],
            # This process's training, in seconds since the epoch: a resumed run's part after `resumed_after_epoch`.
            "started_at": round(self.started, 3), "finished_at": round(time.time(), 3),
            "resumed_after_epoch": self.resumed_after,
        }
        (out_dir / "train.json").write_text(json.dumps(metadata, indent=1, sort_keys=True))
        shutil.rmtree(self.checkpoints.folder)
        self._write_status(finished=True)
        return metadata

    def _write_status(self, **changes):
        """The status file (status_file) a launcher of many runs shows, replaced whole."""
        self.status.update(changes)
        write_text(status_file(self.resume_dir, self.status["run"]), json.dumps(self.status, indent=1,
                                                                                sort_keys=True))


def _say_about_the_options(log, config, optimizer, options):
    """Before a run starts: an optimizer option that makes it another method, or a loss its defaults were not
    tuned with."""
    if "tail_classes" in options and not options["tail_classes"]:
        log(f"warning: no class has fewer than {config.optimizer}.eta={config.optimizer_params['eta']} training "
            f"images: {optimizer.LABEL} then has no tail class and no tail term (ImbSAM equals SGD, SSE-SAM SAM at "
            f"head_rho); raise {config.optimizer}.eta")
    tuned_with = getattr(optimizer, "TUNED_WITH_LOSS", None)
    if tuned_with and config.loss != tuned_with:
        log(f"note: {optimizer.LABEL}'s defaults come from its authors' runs with train.loss={tuned_with}; "
            f"this run uses train.loss={config.loss}")


def _say_epochs_at_zero(log, config, epochs):
    """Before a run starts: which epochs its schedule trains at learning rate 0, where SGD does not move."""
    if not epochs:
        return
    shown = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
    log(f"note: train.schedule={config.schedule} trains {shown} of {config.epochs} at learning rate 0, as the "
        "authors' schedule ends" + ("; for a run this short, -S train.schedule=step_cosine learns instead"
                                     if 2 * len(epochs) >= config.epochs else ""))


def typical_step_seconds(step_ends):
    """Median time between consecutive step ends: ImbSAM compiles its second graph at its first batch
    of the other kind (with or without a tail sample), and a mean would count that compile as training."""
    return float(np.median(np.diff(step_ends)))


def _print_estimate(log, per_step, total_steps, quick_run_hint):
    """Before a long run gets going, say how long it will take and how to run a short one instead."""
    total = per_step * total_steps
    log(f"\nestimated training time: {format_duration(total)} ({per_step:.2f} s/step, the median of steps "
        f"2-{_ESTIMATE_AFTER + 1}; per-epoch test evaluation not included)")
    if quick_run_hint and total > 3600:
        log(f"for a quick run instead: {quick_run_hint}")


def _pct(value):
    return "n/a" if value is None else f"{value:.2f}%"


class _Live:
    """Per-epoch metrics through dvclive, so `dvc plots` and `dvc exp show` see them.

    DVC deletes a stage's outputs before it re-runs it, so a resumed run replays the epochs
    it already has from the checkpoint's history before logging new ones.
    """

    def __init__(self, folder, history):
        from dvclive import Live

        self.live = Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None)
        for record in history:
            self.log(record)

    def log(self, record):
        for key, value in record.items():
            if key != "epoch" and value is not None:
                self.live.log_metric(key, value)
        self.live.next_step()
