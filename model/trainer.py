"""Training as one library call: TrainConfig and train_and_evaluate (train.py is its CLI).

    from facevae.model.trainer import TrainConfig, train_and_evaluate

    result = train_and_evaluate(TrainConfig(data_dir="data/celeba96", epochs=2), "runs/vae")
    result.sample_grid  # 'runs/vae/samples/epoch_0002.png'

model.fit drives VAE.train_step. The callbacks of model/callbacks.py save checkpoints
(every checkpoint_every_steps steps and at each epoch end), write TensorBoard scalars and
images, draw the epoch's sample grid, stop on a non-finite loss, measure images/s and the
input wait, print progress, and stop cleanly on SIGINT/SIGTERM with a checkpoint.

The same call on the same workdir resumes from its last checkpoint, also one saved
mid-epoch: a first fit finishes the interrupted epoch, a second runs the rest, with the
same step count and optimizer state. What a kill right after an epoch's checkpoint left
unwritten (its sample grid, its validation) is written first.

With strategy="multi_worker" every worker (TF_CONFIG) calls this function; only the chief
writes `workdir` (which all of them read: put it on shared storage), the others save into
a scratch folder that is removed at the end, since saving is collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facevae.model import workdir as wd
from facevae.model.callbacks import (
    Checkpointer,
    CosineLearningRate,
    Interrupted,
    Interrupts,
    NonFiniteLoss,
    ProgressLogger,
    SampleGrids,
    ScalarLogger,
    StopOnSignal,
    Throughput,
    TrainError,
    format_logs,
    logged_steps,
)
from facevae.model.console import duration, peak_rss_mb
from facevae.model.networks import NORMS, NetworkConfig
from facevae.model.vae import MODES, NON_FINITE_INPUT, RECONSTRUCTION_LOSSES, VAE
from facevae.pipeline import dataset
from facevae.pipeline.schema import PREPARE_HINT, DatasetError

__all__ = [
    "Interrupted",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "benchmark",
    "make_strategy",
    "train_and_evaluate",
]

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
LR_SCHEDULES = ("constant", "cosine")
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}  # keras compile's values
NUM_FIXED_SAMPLES = 64  # latent vectors decoded into every epoch's sample grid
NUM_FIXED_RECONSTRUCTIONS = 16
WARMUP_EXECUTIONS = 5  # untimed executions before a benchmark


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run. train.py's flags have the same names and defaults.

    config.json stores it under "flags"; `check()` says what cannot run before any work.
    """

    # Data.
    data_dir: str = ""
    cache: str = "auto"  # auto, memory, none or disk:<path>
    shuffle_buffer: int = 10_000
    flip: bool = False
    # Model.
    z_dim: int = 256
    filters: tuple[int, ...] = (32, 64, 128, 256)
    norm: str = "batch"
    dense_units: int = 0
    mode: str = "vae"
    # The original recipe's fact * mean(1 + log var - mu^2 - var) = 6.5e-4 has no 1/2: it is
    # 1.3e-3 on the mean KL (beta = kl_weight * H*W*C / z_dim on the ELBO, 0.14 at z_dim 256).
    kl_weight: float = 1.3e-3
    kl_warmup_steps: int = 0
    reconstruction_loss: str = "bce"
    # Optimisation.
    batch_size: int = 128  # global, split across replicas
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": to 0 at the last of epochs * steps_per_epoch
    epochs: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the train split
    seed: int = 0
    # Devices and speed.
    strategy: str = "auto"
    logical_cpus: int = 0
    mixed_precision: str = "none"
    jit_compile: str = "auto"  # auto (XLA on GPU/TPU, not on CPU), true or false
    steps_per_execution: int = 1
    # Outputs.
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    sample_every_epochs: int = 1
    eval_every_epochs: int = 1
    log_every_steps: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        if isinstance(self.jit_compile, bool):  # config.json of earlier versions
            object.__setattr__(self, "jit_compile", str(self.jit_compile).lower())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict such as config.json's "flags"; other keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["filters"] = list(self.filters)
        return values

    def check(self) -> None:
        """Raises TrainError naming the first setting that cannot run, and the fix."""
        minimum = {
            "dense_units": 0,
            "kl_warmup_steps": 0,
            "steps_per_epoch": 0,
            "logical_cpus": 0,
            "seed": 0,
        }
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                raise TrainError(f"--{f.name}={value!r}: give an integer")
            if f.type == "int" and value < minimum.get(f.name, 1):
                raise TrainError(f"--{f.name}={value}: must be at least {minimum.get(f.name, 1)}")
        if not self.filters or any(not isinstance(v, int) or v < 1 for v in self.filters):
            raise TrainError(f"--filters={_join(self.filters)}: give one or more positive integers")
        if not (
            isinstance(self.kl_weight, (int, float))
            and math.isfinite(self.kl_weight)
            and self.kl_weight >= 0
        ):
            raise TrainError(f"--kl_weight={self.kl_weight}: give a finite number >= 0")
        if not (
            isinstance(self.learning_rate, (int, float))
            and math.isfinite(self.learning_rate)
            and self.learning_rate > 0
        ):
            raise TrainError(f"--learning_rate={self.learning_rate}: give a finite number > 0")
        for name, choices in (
            ("norm", NORMS),
            ("mode", MODES),
            ("strategy", STRATEGIES),
            ("reconstruction_loss", RECONSTRUCTION_LOSSES),
            ("mixed_precision", MIXED_PRECISION),
            ("jit_compile", tuple(JIT_COMPILE)),
            ("lr_schedule", LR_SCHEDULES),
        ):
            if getattr(self, name) not in choices:
                raise TrainError(f"--{name}={getattr(self, name)}: use one of {', '.join(choices)}")
        if self.cache not in ("auto", "memory", "none") and not (
            self.cache.startswith("disk:") and len(self.cache) > 5
        ):
            raise TrainError(f"--cache={self.cache}: use auto, memory, none or disk:<path>")
        if not self.data_dir:
            raise TrainError(
                "--data_dir is required: prepare a dataset with `python -m tools.prepare_celeba "
                "--src SRC --out DIR`, or run `python train.py --demo`"
            )


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run left: its step count, the last epoch's logs and the files."""

    step: int
    epochs: int
    logs: dict[str, float]
    model_path: str | None
    sample_grid: str | None  # the newest samples/epoch_XXXX.png


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the trainer needs to know of --data_dir, checked before anything is written."""

    image_shape: tuple[int, int, int]
    num_train: int
    steps_per_epoch: int
    eval_split: str | None
    eval_steps: int  # batches per evaluation; 0: the split is too small, no evaluation


def _join(values: Any) -> str:
    return ",".join(str(v) for v in values)


# --------------------------------------------------------------------------- devices


def make_strategy(name: str, logical_cpus: int = 0) -> tf.distribute.Strategy:
    """The tf.distribute strategy; create it before anything else touches TensorFlow devices.

    MultiWorkerMirroredStrategy configures collective ops, and virtual CPUs are set up,
    only while TensorFlow has not initialised its devices yet.
    """
    try:
        if logical_cpus:
            cpu = tf.config.list_physical_devices("CPU")[0]
            wanted = [tf.config.LogicalDeviceConfiguration()] * logical_cpus
            if tf.config.get_logical_device_configuration(cpu) != wanted:
                tf.config.set_logical_device_configuration(cpu, wanted)
        if name == "multi_worker":
            return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:
        raise TrainError(
            f"--strategy={name} --logical_cpus={logical_cpus}: TensorFlow had set up its "
            f"devices already ({str(e).splitlines()[0]}); start a new process and create "
            "the strategy first"
        ) from None
    except ValueError as e:  # a TF_CONFIG that is not JSON, or names no such task
        raise TrainError(
            f"--strategy=multi_worker: TF_CONFIG={os.environ.get('TF_CONFIG', '')!r} does "
            f"not describe this worker ({str(e).splitlines()[0]}): see the README's two-worker "
            "example"
        ) from None
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            raise TrainError(f"--strategy=tpu: no TPU found ({str(e).splitlines()[0]})") from None
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.cluster_resolver.cluster_spec().as_dict()
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True but on the non-chief workers of a multi-worker cluster (TF_CONFIG)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type or task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


# --------------------------------------------------------------------------- data


def check_data(config: TrainConfig, replicas: int) -> DataFacts:
    """The facts of --data_dir the run needs; TrainError if it cannot train as configured."""
    data_dir, batch_size = config.data_dir, config.batch_size
    if batch_size % replicas:
        raise TrainError(
            f"--batch_size={batch_size} does not split over {replicas} replicas: "
            f"use a multiple of {replicas}"
        )
    try:
        num_train = dataset.num_examples(data_dir, "train")
        image_shape = dataset.image_shape(data_dir)
    except DatasetError as e:
        raise TrainError(f"--data_dir={data_dir}: {e}") from None
    if num_train < batch_size:
        raise TrainError(
            f"--batch_size={batch_size} is more than the {num_train} training images: "
            "lower --batch_size"
        )
    spe = config.steps_per_execution
    steps = config.steps_per_epoch or num_train // batch_size
    steps = max(steps // spe, 1) * spe  # whole executions: fit runs steps_per_execution at once
    num_eval = _num_examples(data_dir, "validation")
    eval_split = "validation" if num_eval else None
    # Replicas cannot share a last partial batch, and workers must run as many steps. The
    # count also tells keras where the split ends (its cardinality is unknown to it).
    eval_steps = num_eval // batch_size if replicas > 1 else math.ceil(num_eval / batch_size)
    return DataFacts(image_shape, num_train, steps, eval_split, eval_steps)


def _num_examples(data_dir: str, split: str) -> int:
    try:
        return dataset.num_examples(data_dir, split)
    except DatasetError:
        return 0


def first_images(data_dir: str, split: str, n: int) -> np.ndarray:
    """The first n images of a split, float32 (n, H, W, C): the fixed reconstruction set.

    Also the check that the images have the size dataset.json gives, and of the first
    training image, so such a dataset stops before anything is written.
    """
    try:
        with dataset.explain_corrupt_shards(data_dir):
            for _ in dataset.examples(data_dir, "train").take(1):
                pass
            images = [e["image"].numpy() for e in dataset.examples(data_dir, split).take(n)]
    except tf.errors.InvalidArgumentError as e:
        height, width, channels = dataset.image_shape(data_dir)
        raise TrainError(
            f"--data_dir={data_dir}: its images are not the {height}x{width}x{channels} its "
            f"dataset.json says ({e.message.splitlines()[0]}): re-prepare it with "
            f"`{PREPARE_HINT.format(data_dir=data_dir)} --overwrite`"
        ) from None
    return np.stack(images).astype(np.float32) / 255.0


def train_dataset(
    config: TrainConfig, strategy: tf.distribute.Strategy, throughput: Throughput
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """Each input pipeline reads its own part of the train split, its input wait timed."""

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return throughput.wrap(
            dataset.load(
                config.data_dir,
                "train",
                config.batch_size,
                training=True,
                cache=config.cache,
                shuffle_buffer=config.shuffle_buffer,
                seed=config.seed,
                flip=config.flip,
                input_context=context,
            )
        )

    return strategy.distribute_datasets_from_function(make)


def eval_dataset(
    config: TrainConfig, strategy: tf.distribute.Strategy, facts: DataFacts
) -> tf.data.Dataset | tf.distribute.DistributedDataset | None:
    if not facts.eval_split or facts.eval_steps == 0:
        return None
    several = strategy.num_replicas_in_sync > 1

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return dataset.load(
            config.data_dir,
            facts.eval_split,
            config.batch_size,
            training=False,
            cache=config.cache,
            input_context=context,
            drop_remainder=several,
            repeat=several,
        )

    return strategy.distribute_datasets_from_function(make)


# --------------------------------------------------------------------------- model


def model_config(config: TrainConfig, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The VAE's arguments, as config.json's "model"; TrainError if the shapes cannot fit."""
    try:
        network = NetworkConfig(
            image_shape=image_shape,
            filters=config.filters,
            z_dim=config.z_dim,
            norm=config.norm,
            dense_units=config.dense_units,
        )
    except ValueError as e:
        raise TrainError(f"--filters={_join(config.filters)}: {e}") from None
    return {
        "network": network.to_dict(),
        "mode": config.mode,
        "kl_weight": config.kl_weight,
        "kl_warmup_steps": config.kl_warmup_steps,
        "reconstruction_loss": config.reconstruction_loss,
        "seed": config.seed,
    }


def build_model(
    config: TrainConfig, model_cfg: dict[str, Any], strategy: tf.distribute.Strategy
) -> VAE:
    """The VAE and its optimizer, created under the strategy so their variables replicate."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = VAE(**model_cfg)
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            jit_compile=JIT_COMPILE[config.jit_compile],
            steps_per_execution=config.steps_per_execution,
        )
        # The slots must exist before a checkpoint is restored into them.
        model.optimizer.build(model.trainable_variables)
    return model


@contextlib.contextmanager
def _precision(policy: str) -> Iterator[None]:
    """The keras dtype policy for the block (it is global: a notebook's next call is clean)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32" if policy == "none" else policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def _metrics_with_batch_axis(model: VAE, strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Gives the step's scalar metrics a batch axis of 1 under several workers.

    Keras 3 reduces the step outputs of MultiWorkerMirroredStrategy with
    strategy.reduce("MEAN", value, axis=0), which fails on scalars (keras-team/keras#20585).
    fit's epoch logs read the metrics themselves and stay scalars.
    """
    if not is_multi_worker(strategy):
        yield
        return
    train_step, test_step = model.train_step, model.test_step
    model.train_step = lambda data: {k: tf.reshape(v, [1]) for k, v in train_step(data).items()}
    model.test_step = lambda data: {k: tf.reshape(v, [1]) for k, v in test_step(data).items()}
    try:
        yield
    finally:
        del model.train_step, model.test_step


@contextlib.contextmanager
def _explain_lost_worker(strategy: tf.distribute.Strategy, ckpt_dir: str) -> Iterator[None]:
    """A worker of the cluster that stopped -> one TrainError saying how to resume."""
    try:
        yield
    except tf.errors.UnavailableError:
        if not is_multi_worker(strategy):
            raise
        raise TrainError(
            "another worker of the cluster stopped, so this one cannot go on: start every "
            "worker again with the same command; the run resumes from the last "
            f"checkpoint ({tf.train.latest_checkpoint(ckpt_dir) or 'none yet'})"
        ) from None


@contextlib.contextmanager
def _explain_non_finite_input(throughput: Throughput) -> Iterator[None]:
    """NaN or Inf pixels (the VAE's assertion) -> one TrainError naming the step and the fix."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        if NON_FINITE_INPUT not in e.message:
            raise
        raise TrainError(
            f"step {throughput.step + 1}: {NON_FINITE_INPUT} Re-prepare --data_dir with "
            "`python -m tools.prepare_celeba ... --overwrite`"
        ) from None


def _start_line(model: VAE, config: TrainConfig, facts: DataFacts, replicas: int) -> str:
    line = (
        f"{model.name}: {model.count_params():,} parameters, {replicas} replica(s), "
        f"{facts.num_train:,} train images, {facts.steps_per_epoch} steps/epoch of "
        f"{config.batch_size}, XLA {'on' if model.jit_compile else 'off'}"
    )
    if facts.steps_per_epoch != (config.steps_per_epoch or facts.num_train // config.batch_size):
        line += " (steps/epoch rounded to whole --steps_per_execution)"
    if config.mode == "vae":
        # loss * H*W*C = sum BCE + beta * sum KL: the weight on the usual ELBO's KL term.
        beta = config.kl_weight * math.prod(facts.image_shape) / config.z_dim
        line += f", kl_weight {config.kl_weight:g} = beta {beta:.3g} on the ELBO"
    return line


# --------------------------------------------------------------------------- the run


def train_and_evaluate(
    config: TrainConfig, workdir: str, *, overwrite: bool = False
) -> TrainResult:
    """Trains (or resumes) the run in `workdir`; prints progress to stdout.

    Raises TrainError, wd.WorkdirError or DatasetError with a one-line message (settings
    that cannot run stop before anything is written), and Interrupted after SIGINT or
    SIGTERM (a checkpoint saved). `overwrite` replaces the run in `workdir`: the old one is
    kept aside until the new one's first checkpoint, and put back if it fails before.
    """
    config.check()
    strategy = make_strategy(config.strategy, config.logical_cpus)  # before other TF calls
    facts = check_data(config, strategy.num_replicas_in_sync)
    model_cfg = model_config(config, facts.image_shape)
    fixed_images = first_images(
        config.data_dir, facts.eval_split or "train", NUM_FIXED_RECONSTRUCTIONS
    )
    chief = is_chief(strategy)
    if chief:
        wd.check_workdir(workdir)
    with Interrupts() as interrupts, wd.lock(workdir) if chief else contextlib.nullcontext():
        replacement = _open_workdir(workdir, model_cfg, config.mixed_precision, overwrite, chief)
        local = workdir if chief else tempfile.mkdtemp(prefix="facevae-worker-")
        try:
            if chief:
                wd.write_config(workdir, {"flags": config.to_dict(), "model": model_cfg})
            with _precision(config.mixed_precision):
                run = _Run(config, workdir, local, strategy, facts, model_cfg, fixed_images)
                return run.train(interrupts, replacement, resume=not overwrite)
        except BaseException:
            if replacement is not None:
                replacement.rollback()  # a no-op once the new run has its first checkpoint
            raise
        finally:
            if not chief:
                shutil.rmtree(local, ignore_errors=True)


def _open_workdir(
    workdir: str, model_cfg: dict[str, Any], mixed_precision: str, overwrite: bool, chief: bool
) -> wd.Replacement | None:
    """Under the lock: repairs what a kill left, then moves the old run aside (overwrite) or
    checks that it is a run of this model. Non-chief workers only check."""
    if chief:
        for line in wd.recover(workdir):
            print(line)
    if overwrite:
        return wd.begin_overwrite(workdir) if chief else None
    if os.path.lexists(wd.config_path(workdir)):
        stored = wd.read_config(workdir)
        differences = wd.model_differences(stored["model"], model_cfg)
        if differences:
            raise TrainError(
                f"{wd.config_path(workdir)} holds a run with another model "
                f"({'; '.join(differences)}): use a new --workdir, or --overwrite to start "
                "this one afresh"
            )
        # mixed_float16 wraps Adam in a LossScaleOptimizer: its checkpoints do not restore
        # into the plain one, nor the other way round.
        before = stored["flags"].get("mixed_precision", "none")
        if "mixed_float16" in (before, mixed_precision) and before != mixed_precision:
            raise TrainError(
                f"{workdir} was trained with --mixed_precision {before}, whose checkpoints "
                f"do not restore under {mixed_precision}: resume with --mixed_precision "
                f"{before}, or start afresh with --overwrite"
            )
    return None


class _Run:
    """One call's model, data and callbacks. `workdir` is the run's folder, which every
    worker reads; `local` is where this process writes (workdir, or a worker's scratch)."""

    def __init__(
        self,
        config: TrainConfig,
        workdir: str,
        local: str,
        strategy: tf.distribute.Strategy,
        facts: DataFacts,
        model_cfg: dict[str, Any],
        fixed_images: np.ndarray,
    ) -> None:
        self.config, self.workdir, self.local, self.strategy = config, workdir, local, strategy
        self.facts, self.chief = facts, local == workdir
        self.model = build_model(config, model_cfg, strategy)
        self.throughput = Throughput(config.batch_size)
        self.train_data = train_dataset(config, strategy, self.throughput)
        self.eval_data = eval_dataset(config, strategy, facts)
        rng = np.random.default_rng(config.seed)
        # (64, z_dim): the same vectors every epoch and every resume, so grids compare.
        fixed_z = rng.standard_normal((NUM_FIXED_SAMPLES, config.z_dim), dtype=np.float32)
        self.scalars = self.grids = None
        if self.chief:
            self.scalars = ScalarLogger(
                os.path.join(workdir, wd.LOGS_DIR), config.log_every_steps, self.throughput
            )
            self.grids = SampleGrids(
                self.model,
                fixed_z,
                fixed_images,
                os.path.join(workdir, wd.SAMPLES_DIR),
                self.scalars.writers["train"],
                config.sample_every_epochs,
                config.epochs,
                self.throughput,
            )

    def train(
        self, interrupts: Interrupts, replacement: wd.Replacement | None, resume: bool
    ) -> TrainResult:
        config, facts, model, throughput = self.config, self.facts, self.model, self.throughput
        replicas = self.strategy.num_replicas_in_sync
        print(_start_line(model, config, facts, replicas), flush=True)
        if facts.eval_split and facts.eval_steps == 0:
            print(
                f"{facts.eval_split} skipped: fewer images than --batch_size "
                f"({config.batch_size}) with {replicas} replicas"
            )
        checkpointer = Checkpointer(
            model,
            os.path.join(self.local, wd.CKPT_DIR),
            config.keep_checkpoints,
            config.checkpoint_every_steps,
            throughput,
            on_first_save=replacement.commit if replacement else None,
        )
        epoch, done = 0, 0
        latest = tf.train.latest_checkpoint(os.path.join(self.workdir, wd.CKPT_DIR))
        if resume and latest:
            epoch, done = checkpointer.restore(latest)
            # The checkpoint restored the old learning rate; the config rules.
            model.optimizer.learning_rate.assign(config.learning_rate)
            step = _step(model)
            part = f", {done} steps into epoch {epoch + 1}" if done else ""
            print(f"resumed from {latest} (step {step}{part})", flush=True)
            if done >= facts.steps_per_epoch:  # fewer steps per epoch now: that one is over
                epoch, done = epoch + 1, 0
            if done == 0 and epoch:
                self._write_owed(epoch, _step(model))
        progress = ProgressLogger(
            config.epochs, config.log_every_steps, throughput, [m.name for m in model.metrics]
        )
        advice = (
            f"Try a lower --learning_rate (now {config.learning_rate:g}), --mixed_precision "
            f"none (now {config.mixed_precision}), or --kl_warmup_steps"
        )
        schedule = []
        if config.lr_schedule == "cosine":
            schedule = [
                CosineLearningRate(config.learning_rate, config.epochs * facts.steps_per_epoch)
            ]
        callbacks = [
            *schedule,
            throughput,
            NonFiniteLoss(throughput, lambda: checkpointer.latest, advice),
            checkpointer,
            *([self.scalars, self.grids] if self.chief else []),
            progress,
            StopOnSignal(
                interrupts, checkpointer, throughput, save=not is_multi_worker(self.strategy)
            ),
        ]
        fit_args = {
            "validation_data": self.eval_data,
            "validation_steps": facts.eval_steps,
            "validation_freq": config.eval_every_epochs,
            "callbacks": callbacks,
            "verbose": 0,
            "shuffle": False,
        }
        start, history = time.perf_counter(), None
        interrupts.deferred = True
        try:
            with (
                dataset.explain_corrupt_shards(config.data_dir),
                _explain_non_finite_input(throughput),
                _explain_lost_worker(self.strategy, os.path.join(self.workdir, wd.CKPT_DIR)),
                _metrics_with_batch_axis(model, self.strategy),
            ):
                if done and epoch < config.epochs:  # first the rest of the interrupted epoch
                    throughput.offset = done
                    history = model.fit(
                        self.train_data,
                        initial_epoch=epoch,
                        epochs=epoch + 1,
                        steps_per_epoch=facts.steps_per_epoch - done,
                        **fit_args,
                    )
                    epoch += 1
                if epoch < config.epochs:
                    history = model.fit(
                        self.train_data,
                        initial_epoch=epoch,
                        epochs=config.epochs,
                        steps_per_epoch=facts.steps_per_epoch,
                        **fit_args,
                    )
        finally:
            interrupts.deferred = False
            progress.close()
            if self.scalars:
                self.scalars.close()
        if history is None:
            print(
                f"nothing to train: the run has done its {config.epochs} epochs "
                "(raise --epochs to train on)"
            )
        interrupts.detail = (
            f"while writing {wd.MODEL_FILE} after training; the checkpoints are kept: run "
            "the same command to write it"
        )
        wd.save_final(model, self.local)
        return self._result(history, start)

    def _write_owed(self, epoch: int, step: int) -> None:
        """The outputs of epoch `epoch` (numbered from 1) that a kill right after its
        checkpoint left unwritten: its sample grid and its validation."""
        config = self.config
        if self.grids and self.grids.due(epoch) and not os.path.isfile(self.grids.path(epoch)):
            path = self.grids.write(epoch, step)
            print(f"wrote {path}, which the previous run stopped before writing")
        validation = os.path.join(self.workdir, wd.LOGS_DIR, "validation")
        if (
            self.eval_data is not None
            and epoch % config.eval_every_epochs == 0
            and step not in logged_steps(validation, "loss")  # every worker reads workdir
        ):
            with (
                dataset.explain_corrupt_shards(config.data_dir),
                _metrics_with_batch_axis(self.model, self.strategy),
            ):
                logs = self.model.evaluate(
                    self.eval_data, steps=self.facts.eval_steps, verbose=0, return_dict=True
                )
            if self.scalars:
                self.scalars.write("validation", step, logs)
                self.scalars.flush()
            print(
                f"epoch {epoch}: validation {format_logs(logs)} (owed: the previous run "
                "stopped before writing it)"
            )

    def _result(self, history: keras.callbacks.History | None, start: float) -> TrainResult:
        logs = {k: float(v[-1]) for k, v in history.history.items()} if history else {}
        step = _step(self.model)
        grids = sorted(glob.glob(os.path.join(self.workdir, wd.SAMPLES_DIR, "epoch_*.png")))
        grid = grids[-1] if grids and self.chief else None
        model_path = os.path.join(self.workdir, wd.MODEL_FILE) if self.chief else None
        where = f"model {model_path}; samples {grid}" if self.chief else "the chief saved them"
        print(
            f"done: step {step}, {self.config.epochs} epochs, this run "
            f"{duration(time.perf_counter() - start)}; {where}",
            flush=True,
        )
        return TrainResult(step, self.config.epochs, logs, model_path, grid)


def _step(model: VAE) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


# --------------------------------------------------------------------------- benchmark


class _Stopwatch(keras.callbacks.Callback):
    """Times the steps after `warmup` (tracing, XLA compilation and pipeline start-up)."""

    def __init__(self, warmup: int, throughput: Throughput) -> None:
        super().__init__()
        self.warmup, self.throughput = warmup, throughput
        self.start = self.waited = self.seconds = 0.0
        self.steps = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # The logs were read into Python: the steps so far have finished.
        now = time.perf_counter()
        if batch + 1 == self.warmup:
            self.start, self.waited = now, self.throughput.waited
        elif batch + 1 > self.warmup:
            self.seconds, self.steps = now - self.start, batch + 1 - self.warmup


def benchmark(config: TrainConfig, steps: int) -> dict[str, Any]:
    """Training images/s, ms/step and input wait over `steps` steps after a warm-up.

    The real pipeline and model under model.fit, as in training; nothing is written.
    """
    config.check()
    strategy = make_strategy(config.strategy, config.logical_cpus)
    facts = check_data(config, strategy.num_replicas_in_sync)
    model_cfg = model_config(config, facts.image_shape)
    spe = config.steps_per_execution
    warmup, timed = WARMUP_EXECUTIONS * spe, math.ceil(steps / spe) * spe
    with _precision(config.mixed_precision):
        model = build_model(config, model_cfg, strategy)
        throughput = Throughput(config.batch_size)
        train_data = train_dataset(config, strategy, throughput)
        print(_start_line(model, config, facts, strategy.num_replicas_in_sync), flush=True)
        stopwatch = _Stopwatch(warmup, throughput)
        with (
            dataset.explain_corrupt_shards(config.data_dir),
            _explain_non_finite_input(throughput),
            _metrics_with_batch_axis(model, strategy),
        ):
            model.fit(
                train_data,
                epochs=1,
                steps_per_epoch=warmup + timed,
                verbose=0,
                shuffle=False,
                callbacks=[throughput, stopwatch],
            )
    seconds = max(stopwatch.seconds, 1e-9)
    gpus = tf.config.list_logical_devices("GPU")
    return {
        "benchmark": "train",
        "images_per_sec": round(stopwatch.steps * config.batch_size / seconds, 1),
        "ms_per_step": round(1000 * seconds / max(stopwatch.steps, 1), 2),
        "input_wait_fraction": round((throughput.waited - stopwatch.waited) / seconds, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "device": gpus[0].name if gpus else "CPU",
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "batch_size": config.batch_size,
        "steps": stopwatch.steps,
        "steps_per_execution": spe,
        "image_shape": list(facts.image_shape),
        "z_dim": config.z_dim,
        "mixed_precision": config.mixed_precision,
        "jit_compile": bool(model.jit_compile),
    }
