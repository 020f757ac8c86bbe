"""Training as one library call: train_and_evaluate(config, workdir) (train.py is its CLI).

    from facevae.model.config import TrainConfig
    from facevae.model.trainer import train_and_evaluate

    result = train_and_evaluate(TrainConfig(data_dir="data/celeba96", epochs=2), "runs/vae")
    result.sample_grid  # 'runs/vae/samples/epoch_0002.png'

model.fit drives VAE.train_step. The callbacks of model/callbacks.py save checkpoints
(every checkpoint_every_steps steps and at each epoch end, finite weights only), write
TensorBoard scalars and images, draw the epoch's sample grid, stop on a non-finite loss,
measure images/s and the input wait, print progress, and stop cleanly on SIGINT/SIGTERM
with a checkpoint.

The same call on the same workdir resumes from its last checkpoint (or the one of
`resume_step`), also one saved mid-epoch, and continues the run as if it had never
stopped: the same step count and optimizer state, the next unseen batch of the input
stream (whose order is a function of the seed alone, see pipeline.dataset.load) and the
same sampling noise (drawn from the seed and the step). What a kill right after an
epoch's checkpoint left unwritten (its sample grid, its validation) is written first.

TensorBoard's HParams dashboard gets the run's settings as a session in logs/ when it
starts or resumes (one session per run, rewritten only when a setting changed), and its
Projector the test images' latent means at the end (logs/plugins/): model/dashboards.py
writes both, for the chief.

With strategy="multi_worker" every worker (TF_CONFIG) calls this function; only the chief
writes `workdir` (which all of them read: put it on shared storage), the others save into
a scratch folder that is removed at the end, since saving is collective.

One module, over 500 lines, because the fit driver's parts share one run's state (its model,
its callbacks, where it resumes); its inputs are model/training_data.py, its settings
model/config.py, its devices model/distribute.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from facevae.model import dashboards, distribute
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
    format_logs,
    logged_steps,
)
from facevae.model.config import JIT_COMPILE, TrainConfig, TrainError
from facevae.model.training_data import (
    DataFacts,
    eval_dataset,
    first_images,
    read_data,
    train_dataset,
)
from facevae.model.vae import NON_FINITE_INPUT, VAE, ModelConfig
from facevae.pipeline import dataset
from facevae.pipeline.progress import duration

NUM_FIXED_SAMPLES = 64  # latent vectors decoded into every epoch's sample grid
NUM_FIXED_RECONSTRUCTIONS = 16
# Settings that shape the input order: a resumed run that changes one reads another stream.
ORDER_SETTINGS = ("seed", "batch_size", "shuffle_buffer", "flip")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run left: its step count, the last epoch's logs and the files."""

    step: int
    epochs: int
    logs: dict[str, float]
    model_path: str | None
    sample_grid: str | None  # the newest samples/epoch_XXXX.png


# --------------------------------------------------------------------------- model


def build_model(
    config: TrainConfig, model_config: ModelConfig, strategy: tf.distribute.Strategy
) -> VAE:
    """The VAE and its optimizer, created under the strategy so their variables replicate."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = VAE(**{**model_config.to_dict(), "network": model_config.network})
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            jit_compile=JIT_COMPILE[config.jit_compile],
            steps_per_execution=config.steps_per_execution,
        )
        # The slots must exist before a checkpoint is restored into them.
        model.optimizer.build(model.trainable_variables)
    return model


@contextlib.contextmanager
def explain_non_finite_input(throughput: Throughput) -> Iterator[None]:
    """NaN or Inf pixels (the VAE's assertion) -> one TrainError naming the step and the fix."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        if NON_FINITE_INPUT not in e.message:
            raise
        raise TrainError(
            f"step {throughput.step + 1}: {NON_FINITE_INPUT} Prepare `data_dir` again"
        ) from None


@contextlib.contextmanager
def _explain_full_disk(workdir: str, checkpointer_latest) -> Iterator[None]:
    """A write that failed during training (a full disk under a sample grid, TensorBoard's
    event files, a cache) -> one TrainError naming the folder and how to continue."""
    try:
        yield
    except (OSError, tf.errors.ResourceExhaustedError, tf.errors.UnknownError) as e:
        message = str(e) if isinstance(e, OSError) else e.message
        if isinstance(e, tf.errors.OpError) and "space" not in message.lower():
            raise
        reason = "no space left" if "space" in message.lower() else message[:120]
        raise TrainError(
            f"could not write in {workdir} ({reason}); the last checkpoint is "
            f"{checkpointer_latest() or 'none yet'}: free space and run the same command "
            "again to continue from it"
        ) from None


def start_line(model: VAE, config: TrainConfig, facts: DataFacts, replicas: int) -> str:
    line = (
        f"{model.name}: {model.count_params():,} parameters, {replicas} replica(s), "
        f"{facts.num_train:,} train images, {facts.steps_per_epoch} steps/epoch of "
        f"{config.batch_size}, XLA {'on' if model.jit_compile else 'off'}"
    )
    if facts.steps_per_epoch != (config.steps_per_epoch or facts.num_train // config.batch_size):
        line += " (steps/epoch rounded to whole `steps_per_execution`)"
    if config.mode == "vae":
        # loss * H*W*C = sum BCE + beta * sum KL: the weight on the usual ELBO's KL term.
        line += f", kl_weight {config.kl_weight:g} = beta {model.config.beta:.3g} on the ELBO"
    return line


def _advice(config: TrainConfig) -> str:
    """What to change when training diverged, naming the settings that were in force."""
    return (
        f"Try a lower `learning_rate` (now {config.learning_rate:g}) or `kl_weight` (now "
        f"{config.kl_weight:g}), `mixed_precision` none (now {config.mixed_precision}), or "
        "`kl_warmup_steps`; resume from an earlier checkpoint with `resume_step`"
    )


# --------------------------------------------------------------------------- the run


def train_and_evaluate(
    config: TrainConfig,
    workdir: str,
    *,
    overwrite: bool = False,
    resume_step: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Trains (or resumes) the run in `workdir`; prints progress to stdout.

    Raises TrainError, wd.WorkdirError or DatasetError with a one-line message (settings
    that cannot run stop before anything is written), and Interrupted after SIGINT or
    SIGTERM (a checkpoint saved). `overwrite` replaces the run in `workdir`: the old one is
    kept aside until the new one's first checkpoint, and put back if it fails before.
    `resume_step` resumes from the kept checkpoint of that step instead of the latest, and
    deletes the later ones (a run that diverged goes back to before it did). `callbacks`
    are Keras callbacks of the caller's (a notebook's logging, a test's probe), called
    after the trainer's own and before the one that stops on a signal.
    """
    config.check()
    if resume_step is not None and (overwrite or resume_step < 0):
        raise TrainError(
            f"`resume_step`={resume_step}: give the step of a kept checkpoint (without "
            "`overwrite`, which starts afresh)"
        )
    strategy = distribute.make_strategy(config.strategy, config.logical_cpus)  # before TF
    facts = read_data(config, strategy.num_replicas_in_sync)
    model_config = config.model_config(facts.image_shape)
    fixed_images = first_images(
        facts.manifest, facts.eval_split or "train", NUM_FIXED_RECONSTRUCTIONS
    )
    chief = distribute.is_chief(strategy)
    if chief:
        wd.check_workdir(workdir)
    with Interrupts() as interrupts, wd.lock(workdir) if chief else contextlib.nullcontext():
        stored, replacement = _open_workdir(workdir, config, model_config, overwrite, chief)
        local = workdir if chief else tempfile.mkdtemp(prefix="facevae-worker-")
        try:
            if chief:
                wd.write_config(workdir, wd.RunConfig(config, model_config))
            with distribute.precision(config.mixed_precision):
                run = _Run(config, workdir, local, strategy, facts, model_config, fixed_images)
                run.extra_callbacks = list(callbacks)
                return run.train(interrupts, replacement, stored, resume_step)
        except BaseException:
            if replacement is not None:
                replacement.rollback()  # a no-op once the new run has its first checkpoint
            raise
        finally:
            if not chief:
                shutil.rmtree(local, ignore_errors=True)


def _open_workdir(
    workdir: str, config: TrainConfig, model_config: ModelConfig, overwrite: bool, chief: bool
) -> tuple[TrainConfig | None, wd.Replacement | None]:
    """Under the lock: repairs what a kill left, then moves the old run aside (overwrite) or
    checks that it is a run of this model. Returns the stored settings (None for a new run)
    and the replacement of an overwritten run. Non-chief workers only check."""
    if chief:
        for line in wd.recover(workdir):
            print(line)
    if overwrite:
        return None, wd.begin_overwrite(workdir) if chief else None
    if not os.path.lexists(wd.config_path(workdir)):
        return None, None
    stored = wd.read_config(workdir)
    differences = wd.model_differences(stored.model, model_config)
    if differences:
        raise TrainError(
            f"{wd.config_path(workdir)} holds a run with another model "
            f"({'; '.join(differences)}): use a new `workdir`, or `overwrite` to start "
            "this one afresh"
        )
    # mixed_float16 wraps Adam in a LossScaleOptimizer: its checkpoints do not restore
    # into the plain one, nor the other way round.
    before, now = stored.flags.mixed_precision, config.mixed_precision
    if "mixed_float16" in (before, now) and before != now:
        raise TrainError(
            f"{workdir} was trained with `mixed_precision` {before}, whose checkpoints "
            f"do not restore under {now}: resume with `mixed_precision` {before}, or start "
            "afresh with `overwrite`"
        )
    return stored.flags, None


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
        model_config: ModelConfig,
        fixed_images: np.ndarray,
    ) -> None:
        self.config, self.workdir, self.local, self.strategy = config, workdir, local, strategy
        self.facts, self.chief = facts, local == workdir
        self.model = build_model(config, model_config, strategy)
        self.throughput = Throughput(config.batch_size)
        self.eval_data = eval_dataset(config, facts, strategy)
        self.fixed_images = fixed_images
        self.scalars: ScalarLogger | None = None
        self.grids: SampleGrids | None = None
        self.extra_callbacks: list[keras.callbacks.Callback] = []

    def _open_outputs(self) -> None:
        """The HParams session, TensorBoard writers and the sample grids: opened once the run
        is restored, so a failed restore leaves no writer open (a notebook's next call
        starts clean)."""
        if not self.chief:
            return
        config = self.config
        hparams = dashboards.hparams_values(config, self.model.config, self.facts.manifest)
        dashboards.write_hparams(os.path.join(self.workdir, wd.LOGS_DIR), hparams)  # first
        rng = np.random.default_rng(config.seed)
        # (64, z_dim): the same vectors every epoch and every resume, so grids compare.
        fixed_z = rng.standard_normal((NUM_FIXED_SAMPLES, config.z_dim), dtype=np.float32)
        self.scalars = ScalarLogger(
            os.path.join(self.workdir, wd.LOGS_DIR), config.log_every_steps, self.throughput
        )
        self.grids = SampleGrids(
            self.model,
            fixed_z,
            self.fixed_images,
            os.path.join(self.workdir, wd.SAMPLES_DIR),
            self.scalars.writers["train"],
            config.sample_every_epochs,
            config.epochs,
            self.throughput,
        )

    def _restore(
        self, checkpointer: Checkpointer, stored: TrainConfig | None, resume_step: int | None
    ) -> tuple[int, int, int]:
        """Restores the checkpoint to resume from; returns (epoch, steps of it done, input
        steps read). (0, 0, 0) for a new run."""
        ckpt_dir = os.path.join(self.workdir, wd.CKPT_DIR)  # the chief's: every worker reads it
        path = tf.train.latest_checkpoint(ckpt_dir)
        if resume_step is not None:
            path = os.path.join(ckpt_dir, f"ckpt-{resume_step}")
            state = tf.train.get_checkpoint_state(ckpt_dir)
            paths = state.all_model_checkpoint_paths if state else []
            kept = sorted(int(p.rsplit("-", 1)[1]) for p in paths)
            if resume_step not in kept:
                raise TrainError(
                    f"`resume_step`={resume_step}: {ckpt_dir} keeps no checkpoint of that step; "
                    f"it keeps those of steps {kept or 'none'}"
                )
        if not path:
            return 0, 0, 0
        epoch, done, input_steps = checkpointer.restore(path)
        # The checkpoint restored the old learning rate; the config rules.
        self.model.optimizer.learning_rate.assign(self.config.learning_rate)
        step = _step(self.model)
        if resume_step is not None:
            dropped = checkpointer.drop_after(step) if self.chief else []
            if dropped:
                print(f"resume_step {step}: deleted the later {', '.join(dropped)}")
        part = f", {done} steps into epoch {epoch + 1}" if done else ""
        print(f"resumed from {path} (step {step}{part})", flush=True)
        if input_steps is None:  # a checkpoint of an earlier version: its steps are its reads
            input_steps = step
        changed = [
            f"`{name}` {getattr(stored, name)!r} -> {getattr(self.config, name)!r}"
            for name in ORDER_SETTINGS
            if stored is not None and getattr(stored, name) != getattr(self.config, name)
        ]
        if changed:
            print(
                f"resume: {', '.join(changed)}: the input order from here on differs from "
                "the stored run's (a resumed run matches an uninterrupted one only with "
                "these unchanged)"
            )
        if done >= self.facts.steps_per_epoch:  # fewer steps per epoch now: that one is over
            epoch, done = epoch + 1, 0
        return epoch, done, input_steps

    def train(
        self,
        interrupts: Interrupts,
        replacement: wd.Replacement | None,
        stored: TrainConfig | None,
        resume_step: int | None,
    ) -> TrainResult:
        config, facts, model, throughput = self.config, self.facts, self.model, self.throughput
        replicas = self.strategy.num_replicas_in_sync
        print(start_line(model, config, facts, replicas), flush=True)
        if facts.eval_split and facts.eval_steps == 0:
            print(
                f"{facts.eval_split} skipped: fewer images than `batch_size` "
                f"({config.batch_size}) with {replicas} replicas"
            )
        checkpointer = Checkpointer(
            model,
            os.path.join(self.local, wd.CKPT_DIR),
            config.keep_checkpoints,
            config.checkpoint_every_steps,
            throughput,
            advice=_advice(config),
            on_first_save=replacement.commit if replacement else None,
        )
        start = time.perf_counter()
        epoch, done, input_steps = self._restore(checkpointer, stored, resume_step)
        checkpointer.input_start = input_steps
        self._open_outputs()
        try:
            if done == 0 and epoch:
                self._write_owed(epoch, _step(model))
            history = self._fit(interrupts, checkpointer, epoch, done, input_steps)
        finally:
            if self.scalars:
                self.scalars.close()
        if interrupts.received is not None:  # a signal during the last step or validation
            saved = checkpointer.latest
            if saved is None or int(saved.rsplit("-", 1)[1]) != _step(model):
                saved = checkpointer.save_now()
            raise Interrupted(
                interrupts.received,
                f"after the last step ({_step(model)}); saved {saved}: run the same command "
                "to finish the run (write the final model)",
            )
        if history is None:
            print(
                f"nothing to train: the run has done its {config.epochs} epochs "
                "(raise `epochs` to train on)"
            )
        interrupts.detail = (
            f"while writing {wd.MODEL_FILE} after training; the checkpoints are kept: run "
            "the same command to write it"
        )
        wd.save_final(model, self.local)
        if self.chief:
            dashboards.projector_after_training(model, facts.manifest, self.workdir)
        return self._result(history, start)

    def _fit(
        self,
        interrupts: Interrupts,
        checkpointer: Checkpointer,
        epoch: int,
        done: int,
        input_steps: int,
    ) -> keras.callbacks.History | None:
        """model.fit over the epochs left: first the rest of an interrupted epoch, then the
        others, each fit on the input stream from the batch its first step reads."""
        config, facts, model, throughput = self.config, self.facts, self.model, self.throughput
        progress = ProgressLogger(
            config.epochs, config.log_every_steps, throughput, [m.name for m in model.metrics]
        )
        schedule = []
        if config.lr_schedule == "cosine":
            total = config.epochs * facts.steps_per_epoch
            schedule = [CosineLearningRate(config.learning_rate, total)]
        callbacks = [
            *schedule,
            throughput,
            NonFiniteLoss(throughput, lambda: checkpointer.latest, _advice(config)),
            checkpointer,
            *([self.scalars, self.grids] if self.chief else []),
            progress,
            *self.extra_callbacks,
            StopOnSignal(
                interrupts,
                checkpointer,
                throughput,
                save=not distribute.is_multi_worker(self.strategy),
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
        history = None
        ckpt_dir = os.path.join(self.workdir, wd.CKPT_DIR)
        interrupts.deferred = True
        try:
            with (
                dataset.explain_corrupt_shards(facts.manifest),
                explain_non_finite_input(throughput),
                _explain_full_disk(self.workdir, lambda: checkpointer.latest),
                distribute.explain_lost_worker(self.strategy, ckpt_dir),
                distribute.metrics_with_batch_axis(model, self.strategy),
            ):
                if done and epoch < config.epochs:  # first the rest of the interrupted epoch
                    remaining = facts.steps_per_epoch - done
                    # Whole executions only: after a change of steps_per_execution since the
                    # stop, the rest runs one step at a time, so the epoch ends where it should.
                    odd = remaining % config.steps_per_execution != 0
                    throughput.offset = done
                    with _steps_per_execution(model, 1 if odd else None):
                        history = model.fit(
                            self._train_data(input_steps + throughput.steps_run),
                            initial_epoch=epoch,
                            epochs=epoch + 1,
                            steps_per_epoch=remaining,
                            **fit_args,
                        )
                    epoch += 1
                if epoch < config.epochs and interrupts.received is None:
                    history = model.fit(
                        self._train_data(input_steps + throughput.steps_run),
                        initial_epoch=epoch,
                        epochs=config.epochs,
                        steps_per_epoch=facts.steps_per_epoch,
                        **fit_args,
                    )
        finally:
            interrupts.deferred = False
            progress.close()
        return history

    def _train_data(self, start_step: int):
        return train_dataset(self.config, self.facts, self.strategy, self.throughput, start_step)

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
                dataset.explain_corrupt_shards(self.facts.manifest),
                distribute.metrics_with_batch_axis(self.model, self.strategy),
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


@contextlib.contextmanager
def _steps_per_execution(model: VAE, steps: int | None) -> Iterator[None]:
    """model.fit with `steps` steps per execution for the block (None: as compiled)."""
    if steps is None or steps == model.steps_per_execution:
        yield
        return
    compiled = model.steps_per_execution
    model.steps_per_execution = steps
    model.make_train_function(force=True)
    try:
        yield
    finally:
        model.steps_per_execution = compiled
        model.make_train_function(force=True)


def _step(model: VAE) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))
