"""The Keras callbacks of a training run (model/trainer.py lists them for model.fit).

fit calls them in list order, and every callback sees the same `logs` dict, so the first,
Throughput, adds what the later ones read: the learning rate, images/s and the fraction of
the time spent waiting for input, besides the global and in-epoch step counts it keeps:

    Throughput -> NonFiniteLoss -> Checkpointer -> ScalarLogger -> SampleGrids
      -> ProgressLogger -> StopOnSignal

NonFiniteLoss comes before Checkpointer so a step that made the loss NaN is never saved;
StopOnSignal comes last so the epoch's outputs are written before it stops a run.

One module, over 500 lines, because the callbacks of one fit work together: they share
Throughput's counts and the `logs` it fills, in the order drawn above.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import keras
import numpy as np
import tensorflow as tf

from facevae.model.config import TrainError
from facevae.model.grid import make_grid, save_grid
from facevae.pipeline import files
from facevae.pipeline.progress import Console, duration

RATE_KEYS = ("learning_rate", "images_per_sec", "input_wait_fraction")
VALIDATION_PREFIX = "val_"  # keras' prefix of the validation metrics in the epoch logs
LIVE_REDRAW_SECONDS = 0.1


class Interrupted(Exception):  # noqa: N818 - it is not an error: the user asked to stop
    """SIGINT or SIGTERM stopped the run; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int, detail: str) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} {detail}")


def crossed(previous: int, step: int, every: int) -> bool:
    """True when the step count passed a multiple of `every` since `previous`."""
    return step // every > previous // every


def format_logs(logs: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in logs.items())


def _ordered(values: dict[str, float], order: tuple[str, ...]) -> dict[str, float]:
    """`values` with the names in `order` first, in that order (keras sorts its logs)."""
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(values.items(), key=lambda item: rank.get(item[0], len(rank))))


def metric_logs(logs: dict[str, Any], order: tuple[str, ...] = ()) -> dict[str, float]:
    """The model's training metrics in `logs`: no validation and no rate entries."""
    values = {
        k: float(v)
        for k, v in logs.items()
        if not k.startswith(VALIDATION_PREFIX) and k not in RATE_KEYS
    }
    return _ordered(values, order)


def validation_logs(logs: dict[str, Any], order: tuple[str, ...] = ()) -> dict[str, float]:
    """The validation metrics in `logs`, under the training metrics' names."""
    n = len(VALIDATION_PREFIX)
    values = {k[n:]: float(v) for k, v in logs.items() if k.startswith(VALIDATION_PREFIX)}
    return _ordered(values, order)


def logged_steps(folder: str, tag: str) -> set[int]:
    """The steps at which the TensorBoard event files in `folder` hold a value of `tag`.

    A file cut short by a kill reads up to its last whole record.
    """
    steps: set[int] = set()
    if not os.path.isdir(folder):
        return steps
    for name in sorted(os.listdir(folder)):
        if not name.startswith("events.out.tfevents."):
            continue
        try:
            for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                if any(value.tag == tag for value in event.summary.value):
                    steps.add(int(event.step))
        except tf.errors.DataLossError:
            continue
    return steps


# --------------------------------------------------------------------------- step counts, rates


class Throughput(keras.callbacks.Callback):
    """Counts steps and adds learning_rate, images_per_sec, input_wait_fraction to the logs.

    `offset` is set by the trainer before a fit that finishes an interrupted epoch: the steps
    of that epoch a previous run did. Input wait comes from `wrap`, which times each request
    for a batch: the time from asking the pipeline for it to getting it, summed.
    """

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.offset = 0
        self.step = 0  # optimizer steps so far (the global step)
        self.previous_step = 0  # the global step at the previous batch end
        self.steps_run = 0  # train steps this process ran, in every fit: batches it read
        self.epoch_step = 0  # steps of the current epoch so far, offset included
        self.epoch_steps = 0  # steps the current epoch will have
        self.seconds = 0.0  # seconds of the current epoch in this process
        self.waited = 0.0  # seconds spent waiting for input, in total
        self._start = (0.0, 0.0, 0)  # time, waited and epoch_step at the epoch's start
        self._train_rates: dict[str, float] | None = None  # the epoch's, before validation

    # Input timing.

    def wrap(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """`ds` with every request for an element timed into `self.waited`.

        The first dataset of the zip stamps the time a batch is asked for; zip then pulls
        the batch from `ds`'s prefetch buffer, waiting if it is empty; the map after it runs
        in the consumer's call, so the difference is the wait. No prefetch may follow it.
        """
        asked = tf.data.Dataset.from_tensors(0).repeat().map(lambda _: tf.timestamp())

        def timed(asked_at: tf.Tensor, batch: Any) -> Any:
            wait = tf.py_function(self._add_wait, [tf.timestamp() - asked_at], tf.float64)
            with tf.control_dependencies([wait]):
                return tf.nest.map_structure(tf.identity, batch)

        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False
        return tf.data.Dataset.zip((asked, ds)).map(timed).with_options(options)

    def _add_wait(self, seconds: tf.Tensor) -> tf.Tensor:
        self.waited += float(seconds)
        return seconds

    # Counts.

    def read_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def rates(self) -> dict[str, float]:
        start, waited, first = self._start
        seconds = max(time.perf_counter() - start, 1e-9)
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        return {
            "learning_rate": lr,
            "images_per_sec": (self.epoch_step - first) * self.batch_size / seconds,
            "input_wait_fraction": min((self.waited - waited) / seconds, 1.0),
        }

    @property
    def at_epoch_end(self) -> bool:
        return self.epoch_step >= self.epoch_steps

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.step = self.previous_step = self.read_step()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_step = self.offset
        self.epoch_steps = self.offset + self.params["steps"]
        self._start = (time.perf_counter(), self.waited, self.offset)
        self._train_rates = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        # fit validates before on_epoch_end: the epoch's rates end with its last train step.
        if self._train_rates is None:
            self._train_rates = self.rates()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.previous_step, self.step = self.step, self.read_step()
        self.steps_run += self.offset + batch + 1 - self.epoch_step
        self.epoch_step = self.offset + batch + 1
        if logs is not None:
            logs.update(self.rates())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds = time.perf_counter() - self._start[0]
        if logs is not None:
            logs.update(self._train_rates or self.rates())
        self.offset = 0


class CosineLearningRate(keras.callbacks.Callback):
    """Sets Adam's learning rate before each step from keras' CosineDecay of the global step.

    A callback rather than a schedule inside the optimizer: a schedule replaces the optimizer's
    learning-rate variable, so checkpoints of the two kinds would not restore into each other
    and --lr_schedule could not change on resume. The step is the optimizer's, so a resumed
    run continues on the curve (one over the run's current --epochs: more epochs on resume
    stretch it). With steps_per_execution N the rate changes every N steps.
    """

    def __init__(self, learning_rate: float, total_steps: int) -> None:
        super().__init__()
        self.schedule = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        optimizer.learning_rate.assign(self.schedule(optimizer.iterations))


# --------------------------------------------------------------------------- stops


class NonFiniteLoss(keras.callbacks.Callback):
    """Stops at the step where the loss became NaN or Inf, before anything saves it."""

    def __init__(self, throughput: Throughput, latest: Callable[[], str | None], advice: str):
        super().__init__()
        self.throughput, self.latest, self.advice = throughput, latest, advice

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss):
            return
        step, n = self.throughput.step, max(self.throughput.step - self.throughput.previous_step, 1)
        where = f"at step {step}" if n == 1 else f"within steps {step - n + 1}-{step}"
        raise TrainError(
            f"the loss became non-finite {where}. Kept the last good checkpoint "
            f"({self.latest() or 'none yet'}). {self.advice}"
        )


class Interrupts:
    """SIGINT and SIGTERM as a request to stop at the next step (see StopOnSignal).

    Inside `with Interrupts() as interrupts:` a signal only sets `received` while
    `deferred` is true (during model.fit); otherwise, or at a second signal, it raises
    Interrupted at once. Outside the main thread (no signal handlers) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferred = False
        self.detail = "before training started; nothing was saved: run the same command again"
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.deferred and self.received is None:
            self.received = signum
            return
        raise Interrupted(signum, self.detail)


class StopOnSignal(keras.callbacks.Callback):
    """Saves a checkpoint after a SIGINT/SIGTERM and stops the run with Interrupted.

    At a batch end it saves the epoch so far; at an epoch end the epoch's own checkpoint
    was just saved. `save=False` (several workers, whose saves are collective) stops at
    the last checkpoint instead.
    """

    def __init__(
        self, interrupts: Interrupts, checkpointer: Checkpointer, throughput: Throughput, save: bool
    ) -> None:
        super().__init__()
        self.interrupts, self.checkpointer, self.throughput = interrupts, checkpointer, throughput
        self.save = save

    def _stop(self, saved: str | None) -> None:
        signum = self.interrupts.received
        step = self.throughput.step
        if saved:
            where = f"saved {saved}"
        else:
            where = f"the last checkpoint is {self.checkpointer.latest or 'none yet'}"
        raise Interrupted(signum, f"at step {step}; {where}: run the same command to resume")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.interrupts.received is not None:
            self._stop(self.checkpointer.save_now() if self.save else None)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.interrupts.received is not None:
            self._stop(self.checkpointer.latest if self.save else None)


# --------------------------------------------------------------------------- checkpoints


class Checkpointer(keras.callbacks.Callback):
    """tf.train.CheckpointManager saves every `every_steps` steps and at each epoch end.

    A checkpoint holds the model, the optimizer (step count, slots, learning rate), `epoch`
    (epochs completed), `epoch_step` (steps of the next epoch already run) and
    `input_steps` (training steps' worth of batches read from the input stream), so a run
    resumes mid-epoch at the same step, with the same optimizer state and the next unseen
    batch. Only finite weights are saved: every weight and optimizer slot is checked on the
    device first, and a non-finite one stops the run (TrainError naming the checkpoint
    kept and `advice`). `on_first_save` runs once, after the first checkpoint this run
    writes (--overwrite commits there).
    """

    def __init__(
        self,
        vae: keras.Model,
        directory: str,
        keep: int,
        every_steps: int,
        throughput: Throughput,
        advice: str = "",
        on_first_save: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.vae, self.directory = vae, directory
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_step")
        self.input_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_steps")
        self.checkpoint = tf.train.Checkpoint(
            model=vae,
            optimizer=vae.optimizer,
            epoch=self.epoch,
            epoch_step=self.epoch_step,
            input_steps=self.input_steps,
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)
        self.every_steps, self.throughput, self.advice = every_steps, throughput, advice
        self.on_first_save = on_first_save
        self.input_start = 0  # input_steps when this process started: its stream's start
        variables = [*vae.weights, *vae.optimizer.variables]
        floats = [v for v in variables if keras.backend.is_float_dtype(v.dtype)]
        self._all_finite = tf.function(
            lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in floats])
        )

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self, path: str) -> tuple[int, int, int | None]:
        """Loads a checkpoint; returns (epochs completed, steps of the next epoch done,
        input steps read, None for a checkpoint of an earlier version that kept none).

        One that this model cannot take (damaged, saved under another --mixed_precision,
        whose optimizer has another structure, or by an older version) stops in one line.
        """
        status = None
        try:
            has_input = any(
                name.startswith("input_steps/") for name, _ in tf.train.list_variables(path)
            )
            objects = {"model": self.vae, "optimizer": self.vae.optimizer}
            objects.update(epoch=self.epoch, epoch_step=self.epoch_step)
            if has_input:
                objects["input_steps"] = self.input_steps
            status = tf.train.Checkpoint(**objects).restore(path)
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            if status is not None:  # else its warnings at exit would bury the one line
                status.expect_partial()
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise TrainError(
                f"{path} cannot be restored into this model ({reason}): resume with the "
                "settings it was saved with (e.g. the stored `mixed_precision`), or start "
                "afresh with `overwrite`"
            ) from None
        input_steps = int(self.input_steps.numpy()) if has_input else None
        return int(self.epoch.numpy()), int(self.epoch_step.numpy()), input_steps

    def drop_after(self, step: int) -> list[str]:
        """Deletes the checkpoints of steps after `step` (a run resumed from an earlier
        one continues from there); returns their paths."""
        later = [p for p in self.manager.checkpoints if int(p.rsplit("-", 1)[1]) > step]
        kept = [p for p in self.manager.checkpoints if p not in later]
        for path in later:
            for name in tf.io.gfile.glob(path + ".*"):
                tf.io.gfile.remove(name)
        names = [os.path.basename(p) for p in kept]  # relative: the workdir can move
        tf.compat.v1.train.update_checkpoint_state(
            self.directory, names[-1] if names else "", names
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=self.manager._max_to_keep
        )
        return later

    def save(self) -> str:
        step = self.throughput.step
        if not bool(self._all_finite()):
            raise TrainError(
                f"the weights became non-finite (NaN or Inf) by step {step}; they were not "
                f"saved: the last good checkpoint is {self.latest or 'none yet'}. {self.advice}"
            )
        self.input_steps.assign(self.input_start + self.throughput.steps_run)
        try:
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            reason = e.strerror if isinstance(e, OSError) else e.message.rsplit("; ", 1)[-1]
            raise TrainError(
                f"could not write the checkpoint of step {step} in {self.directory} "
                f"({reason[:120]}); the last one is {self.latest or 'none yet'}: free space "
                "and run the same command again to continue from it"
            ) from None
        for name in [*tf.io.gfile.glob(path + ".*"), os.path.join(self.directory, "checkpoint")]:
            files.fsync_file(name)  # a machine's crash keeps the checkpoint the index names
        files.fsync_dir(self.directory)
        if self.on_first_save is not None:
            first, self.on_first_save = self.on_first_save, None
            first()
        return path

    def save_now(self) -> str:
        """A checkpoint of the epoch so far (the run stops between two steps)."""
        self.epoch_step.assign(self.throughput.epoch_step)
        return self.save()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.assign(epoch)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        t = self.throughput
        # The last step of an epoch is saved by on_epoch_end, as the epoch's checkpoint.
        if crossed(t.previous_step, t.step, self.every_steps) and not t.at_epoch_end:
            self.save_now()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.assign(epoch + 1)
        self.epoch_step.assign(0)
        self.save()


class StepTimer(keras.callbacks.Callback):
    """The one step timer: wall and CPU time of the steps after `warmup` (tracing, XLA
    compilation and pipeline start-up), and the input wait meanwhile; it stops fit after
    `timed` more steps. `warmup` and `timed` are whole executions of steps_per_execution
    steps (fit calls on_train_batch_end once per execution)."""

    def __init__(self, warmup: int, timed: int, throughput: Throughput | None = None) -> None:
        super().__init__()
        self.warmup, self.timed, self.throughput = warmup, timed, throughput
        self.steps = 0
        self.start = self.cpu_start = self.waited_start = 0.0
        self.seconds = self.cpu_seconds = self.waited = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if logs and "loss" in logs:
            float(logs["loss"])  # the logs were read into Python: the steps have finished
        done = batch + 1  # keras passes the last step of the execution
        now, cpu = time.perf_counter(), time.process_time()
        waited = self.throughput.waited if self.throughput else 0.0
        if done == self.warmup:
            self.start, self.cpu_start, self.waited_start = now, cpu, waited
        elif done > self.warmup:
            self.steps = done - self.warmup
            self.seconds, self.cpu_seconds = now - self.start, cpu - self.cpu_start
            self.waited = waited - self.waited_start
            if self.steps >= self.timed:
                self.model.stop_training = True

    def result(self, batch_size: int) -> dict[str, float]:
        """images/s, ms/step, CPU ms/step and the input wait share of the timed steps."""
        seconds, steps = max(self.seconds, 1e-9), max(self.steps, 1)
        return {
            "images_per_sec": steps * batch_size / seconds,
            "ms_per_step": 1000 * seconds / steps,
            "cpu_ms_per_step": 1000 * self.cpu_seconds / steps,
            "input_wait_fraction": min(self.waited / seconds, 1.0),
            "steps": self.steps,
        }


# --------------------------------------------------------------------------- TensorBoard


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars under logs/train and logs/validation.

    train: the metrics (running means of the epoch), learning_rate, images_per_sec and
    input_wait_fraction every `every_steps` steps, and the epoch's means at its end;
    validation: the metrics at each evaluated epoch's end. The tags are the names in the logs.
    The last validation values are also the run's metrics in TensorBoard's HParams dashboard
    (model/dashboards.py writes the session, in logs/, that names them).
    """

    def __init__(self, logdir: str, every_steps: int, throughput: Throughput) -> None:
        super().__init__()
        self.logdir = logdir
        self.writers = {
            split: tf.summary.create_file_writer(os.path.join(logdir, split))
            for split in ("train", "validation")
        }
        self.every_steps, self.throughput = every_steps, throughput

    def write(self, split: str, step: int, values: dict[str, float]) -> None:
        with self.writers[split].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        t = self.throughput
        if crossed(t.previous_step, t.step, self.every_steps) and not t.at_epoch_end:
            self.write("train", t.step, {k: v for k, v in (logs or {}).items() if k[:4] != "val_"})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        step = self.throughput.step
        self.write("train", step, {**metric_logs(logs), **{k: logs[k] for k in RATE_KEYS}})
        if validation_logs(logs):
            self.write("validation", step, validation_logs(logs))
        self.flush()

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class SampleGrids(keras.callbacks.Callback):
    """Each `every_epochs`-th and the last epoch: samples/epoch_XXXX.png and TensorBoard images.

    The PNG decodes the same latent vectors every epoch; TensorBoard also gets "samples"
    and "reconstructions" (fixed images beside their reconstructions) under logs/train.
    """

    def __init__(
        self,
        vae: keras.Model,
        fixed_z: np.ndarray,
        fixed_images: np.ndarray,
        samples_dir: str,
        writer: tf.summary.SummaryWriter,
        every_epochs: int,
        epochs: int,
        throughput: Throughput,
    ) -> None:
        super().__init__()
        self.vae = vae
        self.fixed_z, self.fixed_images = fixed_z, fixed_images  # (N, z_dim), (M, H, W, C)
        self.samples_dir, self.writer = samples_dir, writer
        self.every_epochs, self.epochs, self.throughput = every_epochs, epochs, throughput
        self.last_path: str | None = None

    def due(self, epoch_number: int) -> bool:
        return epoch_number % self.every_epochs == 0 or epoch_number == self.epochs

    def path(self, epoch_number: int) -> str:
        return os.path.join(self.samples_dir, f"epoch_{epoch_number:04d}.png")

    def write(self, epoch_number: int, step: int) -> str:
        samples = self.vae.decode(tf.constant(self.fixed_z)).numpy()  # (N, H, W, C)
        recon = self.vae.reconstruct(tf.constant(self.fixed_images)).numpy()
        pairs = np.stack([self.fixed_images, recon], axis=1)  # (M, 2, H, W, C)
        pairs = pairs.reshape(-1, *self.fixed_images.shape[1:])  # image, reconstruction, ...
        self.last_path = save_grid(samples, self.path(epoch_number))
        with self.writer.as_default(step=step):
            tf.summary.image("samples", make_grid(samples)[None])
            tf.summary.image("reconstructions", make_grid(pairs, cols=8)[None])
        self.writer.flush()
        return self.last_path

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.due(epoch + 1):
            self.write(epoch + 1, self.throughput.step)


# --------------------------------------------------------------------------- console


class ProgressLogger(keras.callbacks.Callback):
    """The console: a live bar on a terminal, plain lines anywhere else (pipeline.progress's
    Console draws both).

    On a terminal the bar is redrawn in place at most every 0.1 s. Into a file or pipe
    (nohup, CI, a scheduler's log) it writes one line every `every_steps` steps and none
    in between: no escape codes, carriage returns or backspaces. Both print one line per
    epoch with the epoch's means (the numbers TensorBoard gets), validation and speed.
    """

    def __init__(
        self,
        epochs: int,
        every_steps: int,
        throughput: Throughput,
        metric_names: tuple[str, ...] = (),
        stream: TextIO | None = None,
    ) -> None:
        super().__init__()
        self.epochs, self.every_steps, self.throughput = epochs, every_steps, throughput
        self.order = tuple(metric_names)  # the order the metrics are printed in
        self.console = Console(stream or sys.stdout, every=LIVE_REDRAW_SECONDS)
        self._epoch = 0

    def _seconds_left(self, logs: dict) -> float:
        t, rate = self.throughput, logs.get("images_per_sec", 0.0)
        return (t.epoch_steps - t.epoch_step) * t.batch_size / rate if rate else 0.0

    def _status(self, logs: dict) -> str:
        return (
            f"{format_logs(metric_logs(logs, self.order))} | "
            f"{logs.get('images_per_sec', 0.0):,.0f} img/s, input wait "
            f"{logs.get('input_wait_fraction', 0.0):.0%}, ETA {duration(self._seconds_left(logs))}"
        )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        t, logs = self.throughput, logs or {}
        head = f"epoch {self._epoch + 1}/{self.epochs}"
        if not self.console.tty:
            if crossed(t.previous_step, t.step, self.every_steps) and not t.at_epoch_end:
                self.console.line(
                    f"{head} step {t.epoch_step}/{t.epoch_steps}  {self._status(logs)}"
                )
            return
        if not self.console.due(force=t.at_epoch_end):
            return
        filled = int(20 * t.epoch_step / max(t.epoch_steps, 1))
        self.console.bar(
            f"{head} [{'#' * filled}{'.' * (20 - filled)}] {t.epoch_step}/{t.epoch_steps} "
            f"ETA {duration(self._seconds_left(logs))}, {logs.get('images_per_sec', 0.0):,.0f} "
            f"img/s | {format_logs(metric_logs(logs, self.order))}"
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        line = (
            f"epoch {epoch + 1}/{self.epochs}  train {format_logs(metric_logs(logs, self.order))}"
        )
        if validation_logs(logs):
            line += f" | validation {format_logs(validation_logs(logs, self.order))}"
        line += (
            f" | {self.throughput.seconds:.0f}s, {logs.get('images_per_sec', 0.0):,.0f} img/s, "
            f"input wait {logs.get('input_wait_fraction', 0.0):.0%}"
        )
        self.console.line(line)

    def close(self) -> None:
        """Ends a bar an error left on the screen, so the message starts on its own line."""
        self.console.end_bar()
