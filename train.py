"""Train a VAE (or, with --mode ae, a plain autoencoder) on a prepared face dataset.

    python train.py --data_dir data/celeba96 --workdir runs/vae256
    python train.py --demo          # synthetic faces, no download: a few minutes on a CPU

Running the same command again resumes from the last checkpoint in --workdir; flags
not given on the command line take the values stored in its config.json.
"""

from model.console import peak_rss_mb, quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from model import workdir as wd
from model.grid import make_grid, save_grid
from model.networks import NetworkConfig
from model.vae import NON_FINITE_INPUT, VAE
from pipeline import dataset
from pipeline.atomic import fresh_temp_dir, move_into_place
from pipeline.schema import DatasetError

# Data.
flags.DEFINE_string("data_dir", None, "Prepared dataset (python -m tools.prepare_celeba).")
flags.DEFINE_string("cache", "auto", "Decoded-image cache: auto, memory, none or disk:<path>.")
flags.DEFINE_integer("shuffle_buffer", 10_000, "Examples in the training shuffle buffer.")
flags.DEFINE_bool("flip", False, "Random horizontal flips of training images.")
# Model.
flags.DEFINE_integer("z_dim", 256, "Latent dimensions.")
flags.DEFINE_list("filters", ["32", "64", "128", "256"], "Encoder conv filters (stride 2 each).")
flags.DEFINE_enum("norm", "batch", ["batch", "none"], "Normalisation after each convolution.")
flags.DEFINE_integer("dense_units", 0, "Extra Dense layer before the latent heads (0: none).")
flags.DEFINE_enum("mode", "vae", ["vae", "ae"], "vae, or ae: the same networks, no sampling/KL.")
flags.DEFINE_float("kl_weight", 6.5e-4, "Weight of mean KL per latent dim vs mean BCE per pixel.")
flags.DEFINE_integer("kl_warmup_steps", 0, "Steps of linear KL warm-up (0: none).")
flags.DEFINE_enum("reconstruction_loss", "bce", ["bce", "mse"], "Reconstruction loss per pixel.")
# Optimisation.
flags.DEFINE_integer("batch_size", 128, "Global batch size, split across replicas.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("epochs", 10, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch (0: one pass over the train split).")
flags.DEFINE_integer("seed", 0, "Seed of weights, shuffling and the fixed sample vectors.")
# Run.
flags.DEFINE_string("workdir", None, "Run directory: config, checkpoints, logs, samples, model.")
flags.DEFINE_bool("overwrite", False, "Start afresh in --workdir even if it holds another run.")
flags.DEFINE_enum(
    "strategy", "auto", ["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy; auto: mirrored on several GPUs, else default.",
)  # fmt: skip
flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into N logical devices (tests).")
flags.DEFINE_enum(
    "mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"], "Keras dtype policy."
)
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer("steps_per_execution", 1, "Train steps per call of the compiled function.")
flags.DEFINE_integer("checkpoint_every_steps", 1000, "Checkpoint every N steps (and each epoch).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints to keep.")
flags.DEFINE_integer("sample_every_epochs", 1, "Write a sample grid every N epochs.")
flags.DEFINE_integer("eval_every_epochs", 1, "Evaluate on the validation split every N epochs.")
flags.DEFINE_integer("log_every_steps", 50, "TensorBoard scalars every N steps.")
flags.DEFINE_bool("demo", False, "Train a small model on synthetic faces made on the spot.")
flags.DEFINE_integer("benchmark_steps", 0, "Time N train steps, print one JSON line and exit.")

FLAGS = flags.FLAGS


def positive(name: str, minimum: float = 1) -> None:
    flags.register_validator(
        name, lambda v: v >= minimum, message=f"--{name} must be at least {minimum}"
    )


for _name in ("shuffle_buffer", "z_dim", "batch_size", "epochs", "steps_per_execution",
              "checkpoint_every_steps", "keep_checkpoints", "sample_every_epochs",
              "eval_every_epochs", "log_every_steps"):  # fmt: skip
    positive(_name)
for _name in ("dense_units", "kl_warmup_steps", "steps_per_epoch", "logical_cpus",
              "benchmark_steps"):  # fmt: skip
    positive(_name, minimum=0)
flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be positive")
flags.register_validator("kl_weight", lambda v: v >= 0, "--kl_weight must be non-negative")

# Flags that steer this invocation only: never restored from a stored config.
INVOCATION_FLAGS = ("workdir", "overwrite", "demo", "benchmark_steps")
# Flags the --demo run sets unless given: small enough for faces in minutes on a laptop CPU.
DEMO_FLAGS = {
    "workdir": "runs/demo",
    "z_dim": 64,
    "filters": ["32", "64", "128", "256"],
    "batch_size": 64,
    "learning_rate": 2e-3,
    "epochs": 6,
    "kl_weight": 1e-3,
    "checkpoint_every_steps": 200,
}
DEMO_SOURCE_IMAGES = 4000
NUM_FIXED_SAMPLES = 64  # latent vectors decoded into every epoch's sample grid
NUM_FIXED_RECONSTRUCTIONS = 16
WARMUP_EXECUTIONS = 5  # untimed executions before --benchmark_steps


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    settings = resolve_settings()
    strategy = make_strategy(settings["strategy"], settings["logical_cpus"])
    replicas = strategy.num_replicas_in_sync
    check_settings(settings, replicas)
    if settings["mixed_precision"] != "none":
        keras.mixed_precision.set_global_policy(settings["mixed_precision"])
    keras.utils.set_random_seed(settings["seed"])

    # Data: each input pipeline reads its own part of the train split.
    data_dir, batch_size = settings["data_dir"], settings["batch_size"]
    num_train = dataset.num_examples(data_dir, "train")
    steps_per_epoch = settings["steps_per_epoch"] or num_train // batch_size
    eval_split = "validation" if has_split(data_dir, "validation") else None
    train_data = strategy.distribute_datasets_from_function(
        lambda ctx: dataset.load(
            data_dir, "train", batch_size, training=True, cache=settings["cache"],
            shuffle_buffer=settings["shuffle_buffer"], seed=settings["seed"],
            flip=settings["flip"], input_context=ctx,
        )
    )  # fmt: skip

    # Model and optimizer, created under the strategy so their variables are replicated.
    network = NetworkConfig(
        image_shape=dataset.image_shape(data_dir), filters=tuple(settings["filters"]),
        z_dim=settings["z_dim"], norm=settings["norm"], dense_units=settings["dense_units"],
    )  # fmt: skip
    model_config = {
        "network": network.to_dict(), "mode": settings["mode"],
        "kl_weight": settings["kl_weight"], "kl_warmup_steps": settings["kl_warmup_steps"],
        "reconstruction_loss": settings["reconstruction_loss"], "seed": settings["seed"],
    }  # fmt: skip
    with strategy.scope():
        model = VAE(**model_config)
        model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]))
    train_fn = make_step_fn(strategy, model.train_step, settings["jit_compile"])
    print(f"{model.name}: {model.count_params():,} parameters, {replicas} replica(s), "
          f"{num_train:,} train images, {steps_per_epoch} steps/epoch of {batch_size}")  # fmt: skip

    if settings["benchmark_steps"]:
        print(json.dumps(benchmark(model, train_fn, train_data, settings, strategy)))
        return

    # The workdir: config, checkpoints (resume), TensorBoard logs, sample grids. Under
    # multi_worker every worker saves (saving is collective), but only the chief's files
    # land in --workdir; the others write to a scratch folder removed at the end.
    chief = is_chief(strategy)
    workdir = settings["workdir"] if chief else tempfile.mkdtemp(prefix="facevae-worker-")
    prepare_workdir(workdir, settings, model_config)
    # The loop derives the epoch from the step; the variable records it in each checkpoint.
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(workdir, wd.CKPT_DIR), max_to_keep=settings["keep_checkpoints"]
    )
    latest = tf.train.latest_checkpoint(os.path.join(settings["workdir"], wd.CKPT_DIR))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        # The checkpoint restored the old learning rate; the flag (or stored config) rules.
        model.optimizer.learning_rate.assign(settings["learning_rate"])
        print(f"resumed from {latest} (step {step_of(model)})")
    writers = {
        split: tf.summary.create_file_writer(os.path.join(workdir, wd.LOGS_DIR, split))
        for split in ("train", "validation")
    }
    rng = np.random.default_rng(settings["seed"])
    fixed_z = rng.standard_normal((NUM_FIXED_SAMPLES, network.z_dim), dtype=np.float32)
    # (64, z_dim): the same vectors every epoch and every resume, so grids are comparable
    fixed_images = first_images(data_dir, eval_split or "train", NUM_FIXED_RECONSTRUCTIONS)
    eval_data = None
    if eval_split:
        eval_data = strategy.distribute_datasets_from_function(
            lambda ctx: dataset.load(
                data_dir, eval_split, batch_size, training=False, cache=settings["cache"],
                input_context=ctx, drop_remainder=replicas > 1,  # replicas cannot share a batch
            )
        )  # fmt: skip
        eval_fn = make_step_fn(strategy, model.test_step, settings["jit_compile"])

    # The loop: epochs of steps; the optimizer's step count carries across resumes.
    iterator = iter(train_data)
    for ep in range(step_of(model) // steps_per_epoch, settings["epochs"]):
        scalars = train_epoch(model, train_fn, iterator, ep, steps_per_epoch, settings, manager,
                              writers["train"])  # fmt: skip
        epoch.assign(ep + 1)
        step = step_of(model)
        manager.save(checkpoint_number=step)
        seconds = scalars.pop("seconds")
        write_scalars(writers["train"], step, scalars)  # the epoch's means
        summary = f"epoch {ep + 1}/{settings['epochs']}  train {format_logs(metric_values(model))}"
        if eval_data is not None and (ep + 1) % settings["eval_every_epochs"] == 0:
            eval_logs = evaluate(model, eval_fn, eval_data)
            if eval_logs is None:
                summary += f" | {eval_split} skipped: fewer images than --batch_size per replica"
            else:
                write_scalars(writers["validation"], step, eval_logs)
                summary += f" | {eval_split} {format_logs(eval_logs)}"
        if (ep + 1) % settings["sample_every_epochs"] == 0 or ep + 1 == settings["epochs"]:
            grid = write_samples(model, fixed_z, fixed_images, workdir, ep + 1)
            with writers["train"].as_default(step=step):
                tf.summary.image("samples", grid["samples"][None])
                tf.summary.image("reconstructions", grid["reconstructions"][None])
        print(f"{summary} | {seconds:.0f}s, {scalars['images_per_sec']:,.0f} img/s, "
              f"input wait {scalars['input_wait_fraction']:.0%}", flush=True)  # fmt: skip

    save_final(model, workdir)
    if not chief:
        shutil.rmtree(workdir)
        return
    print(f"done: {step_of(model)} steps; samples in {os.path.join(workdir, wd.SAMPLES_DIR)}, "
          f"model in {os.path.join(workdir, wd.MODEL_FILE)}")  # fmt: skip


# --------------------------------------------------------------------------- settings


def resolve_settings() -> dict:
    """Every flag's value: given on the command line > stored in the workdir > demo > default."""
    names = [f.name for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])]
    settings = {name: FLAGS[name].value for name in names}
    given = {name for name in names if FLAGS[name].present}
    if settings["demo"]:
        settings.update({k: v for k, v in DEMO_FLAGS.items() if k not in given})
    stored = {}
    if settings["workdir"] and os.path.isfile(wd.config_path(settings["workdir"])):
        stored = wd.read_config(settings["workdir"]).get("flags", {})
    if not settings["overwrite"]:
        settings.update({
            k: v for k, v in stored.items()
            if k in settings and k not in given and k not in INVOCATION_FLAGS
        })  # fmt: skip
    if settings["demo"] and "data_dir" not in given and not settings["data_dir"]:
        settings["data_dir"] = demo_data_dir()
    settings["filters"] = parse_filters(settings["filters"])
    return settings


def parse_filters(values: list[str]) -> list[int]:
    try:
        filters = [int(v) for v in values]
    except ValueError:
        sys.exit(f"--filters={','.join(values)}: give comma-separated integers, e.g. 32,64,128")
    if not filters or min(filters) < 1:
        sys.exit(f"--filters={','.join(values)}: give one or more positive integers")
    return filters


def check_settings(settings: dict, replicas: int) -> None:
    """Stops before any work on settings that cannot run, naming the flag and the fix."""
    if settings["batch_size"] % replicas:
        sys.exit(f"--batch_size={settings['batch_size']} does not split over {replicas} "
                 f"replicas: use a multiple of {replicas}")  # fmt: skip
    if not settings["benchmark_steps"] and not settings["workdir"]:
        sys.exit("--workdir is required: the run's checkpoints, logs and samples go there")
    if not settings["data_dir"]:
        sys.exit("--data_dir is required: prepare a dataset with `python -m tools.prepare_celeba "
                 "--src SRC --out DIR`, or run `python train.py --demo`")  # fmt: skip
    if settings["demo"] and not os.path.isfile(os.path.join(settings["data_dir"], "dataset.json")):
        make_demo_data(settings["data_dir"])
    try:
        num_train = dataset.num_examples(settings["data_dir"], "train")
    except DatasetError as e:
        sys.exit(f"--data_dir={settings['data_dir']}: {e}")
    if num_train < settings["batch_size"]:
        sys.exit(f"--batch_size={settings['batch_size']} is more than the {num_train} training "
                 "images: lower --batch_size")  # fmt: skip
    cache = settings["cache"]
    if cache not in ("auto", "memory", "none") and not cache.startswith("disk:"):
        sys.exit(f"--cache={cache}: use auto, memory, none or disk:<path>")


def prepare_workdir(workdir: str, settings: dict, model_config: dict) -> None:
    """Writes config.json; refuses to resume a run whose model config differs."""
    path = wd.config_path(workdir)
    if os.path.isfile(path) and not settings["overwrite"]:
        differences = wd.model_differences(wd.read_config(workdir)["model"], model_config)
        if differences:
            sys.exit(f"{path} holds a run with another model ({'; '.join(differences)}): use a "
                     "new --workdir, or --overwrite to start this one afresh")  # fmt: skip
    if settings["overwrite"]:
        for name in (wd.CKPT_DIR, wd.LOGS_DIR, wd.SAMPLES_DIR, wd.EXPORT_DIR, wd.MODEL_FILE):
            target = os.path.join(workdir, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    stored = {k: v for k, v in settings.items() if k not in INVOCATION_FLAGS}
    wd.write_config(workdir, {"flags": stored, "model": model_config})


# --------------------------------------------------------------------------- demo data


def demo_data_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "facevae", "synthetic96")


def make_demo_data(data_dir: str) -> None:
    """Synthetic source -> TFRecords through the same tools as real CelebA, once."""
    from tools import make_synthetic, prepare_celeba

    source = data_dir + "-source"
    print(f"demo: writing {DEMO_SOURCE_IMAGES} synthetic faces to {source}, then {data_dir}")
    make_synthetic.write_source(source, DEMO_SOURCE_IMAGES, seed=0, overwrite=True)
    prepare_celeba.prepare(source, data_dir, overwrite=True)
    shutil.rmtree(source)


# --------------------------------------------------------------------------- devices


def make_strategy(name: str, logical_cpus: int) -> tf.distribute.Strategy:
    if logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus
        )
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()  # name == "tpu"
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True but on the non-chief workers of a multi-worker cluster (TF_CONFIG)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def make_step_fn(strategy: tf.distribute.Strategy, step: Callable, jit_compile: bool) -> Callable:
    """A compiled function running `step` on every replica for each batch of a list."""
    replica_step = tf.function(step, jit_compile=jit_compile)

    @tf.function
    def run(batches):
        for batch in batches:  # a Python list: unrolled steps_per_execution times
            strategy.run(replica_step, args=(batch,))

    return run


# --------------------------------------------------------------------------- loop helpers


def train_epoch(
    model: VAE,
    train_fn: Callable,
    iterator: Iterator,
    epoch: int,
    steps_per_epoch: int,
    settings: dict,
    manager: tf.train.CheckpointManager,
    writer: tf.summary.SummaryWriter,
) -> dict[str, float]:
    """One epoch of steps (the rest of one after a resume); returns the epoch's scalars."""
    reset_metrics(model)
    start, waited, seen = time.perf_counter(), 0.0, 0
    first, step = epoch * steps_per_epoch, step_of(model)
    bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["img/s", "wait"])
    bar.update(step - first)
    while step - first < steps_per_epoch:
        n = min(settings["steps_per_execution"], steps_per_epoch - (step - first))
        t0 = time.perf_counter()
        batches = next_batches(iterator, n, settings["data_dir"])
        waited += time.perf_counter() - t0
        run_steps(train_fn, batches, step)
        logs = metric_values(model)  # reading the results waits for the steps
        # A skipped mixed_float16 step (loss scale too high) does not advance the count.
        previous, step = step, step_of(model)
        seen += n * settings["batch_size"]
        if not math.isfinite(logs["loss"]):
            stop_non_finite(step, n, manager, settings)
        scalars = epoch_scalars(model, seen, waited, time.perf_counter() - start)
        bar.update(step - first, [*logs.items(), ("img/s", scalars["images_per_sec"]),
                                  ("wait", scalars["input_wait_fraction"])])  # fmt: skip
        if crossed(previous, step, settings["log_every_steps"]):
            write_scalars(writer, step, {**logs, **scalars})
        if crossed(previous, step, settings["checkpoint_every_steps"]):
            manager.save(checkpoint_number=step)
    seconds = time.perf_counter() - start
    return {**metric_values(model), **epoch_scalars(model, seen, waited, seconds),
            "seconds": seconds}  # fmt: skip


def epoch_scalars(model: VAE, seen: int, waited: float, seconds: float) -> dict[str, float]:
    seconds = max(seconds, 1e-9)
    return {
        "learning_rate": learning_rate(model),
        "images_per_sec": seen / seconds,
        "input_wait_fraction": waited / seconds,
    }


def crossed(previous: int, step: int, every: int) -> bool:
    """True when the step count passed a multiple of `every` since `previous`."""
    return step // every > previous // every


def run_steps(train_fn: Callable, batches: list, step: int) -> None:
    """Runs the steps; NaN or Inf pixels in the input stop with the step and the fix."""
    try:
        train_fn(batches)
    except tf.errors.InvalidArgumentError as e:
        if NON_FINITE_INPUT not in e.message:
            raise
        sys.exit(f"step {step + 1}: {NON_FINITE_INPUT} Re-prepare --data_dir with "
                 "`python -m tools.prepare_celeba ... --overwrite`")  # fmt: skip


def next_batches(iterator: Iterator, n: int, data_dir: str) -> list:
    """The next n batches; a corrupt shard stops with the shard's name and the fix."""
    try:
        return [next(iterator) for _ in range(n)]
    except tf.errors.DataLossError as e:
        sys.exit(f"--data_dir={data_dir}: {dataset.explain_data_loss(data_dir, e)}")


def step_of(model: VAE) -> int:
    return int(model.optimizer.iterations.numpy())


def learning_rate(model: VAE) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def reset_metrics(model: VAE) -> None:
    for metric in model.metrics:
        metric.reset_state()


def metric_values(model: VAE) -> dict[str, float]:
    return {metric.name: float(metric.result()) for metric in model.metrics}


def format_logs(logs: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in logs.items())


def write_scalars(writer: tf.summary.SummaryWriter, step: int, values: dict[str, float]) -> None:
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)


def evaluate(model: VAE, eval_fn: Callable, eval_data: Iterable) -> dict[str, float] | None:
    """The metrics over one pass of the evaluation split, None if it gave no batch.

    Under several replicas the last partial batch is dropped, so a split smaller than the
    per-replica batch gives none. Train metrics are reset afterwards.
    """
    reset_metrics(model)
    batches = 0
    for batch in eval_data:
        eval_fn([batch])
        batches += 1
    logs = metric_values(model) if batches else None
    reset_metrics(model)
    return logs


def stop_non_finite(
    step: int, n: int, manager: tf.train.CheckpointManager, settings: dict
) -> NoReturn:
    where = f"at step {step}" if n == 1 else f"within steps {step - n + 1}-{step}"
    sys.exit(
        f"the loss became non-finite {where}. Kept the last good checkpoint "
        f"({manager.latest_checkpoint or 'none yet'}). Try a lower --learning_rate (now "
        f"{settings['learning_rate']:g}), --mixed_precision none (now "
        f"{settings['mixed_precision']}), or --kl_warmup_steps"
    )


def has_split(data_dir: str, split: str) -> bool:
    try:
        return dataset.num_examples(data_dir, split) > 0
    except DatasetError:
        return False


def first_images(data_dir: str, split: str, n: int) -> np.ndarray:
    """The first n images of a split as float32 (n, H, W, C): the fixed reconstruction set."""
    images = [e["image"].numpy() for e in dataset.examples(data_dir, split).take(n)]
    return np.stack(images).astype(np.float32) / 255.0


def write_samples(
    model: VAE, fixed_z: np.ndarray, fixed_images: np.ndarray, workdir: str, epoch: int
) -> dict[str, np.ndarray]:
    """Samples from the fixed vectors (the PNG of the epoch) and reconstructions, as grids."""
    samples = model.decode(tf.constant(fixed_z)).numpy()
    recon = model.reconstruct(tf.constant(fixed_images)).numpy()
    pairs = np.stack([fixed_images, recon], axis=1).reshape(-1, *fixed_images.shape[1:])
    save_grid(samples, os.path.join(workdir, wd.SAMPLES_DIR, f"epoch_{epoch:04d}.png"))
    return {"samples": make_grid(samples), "reconstructions": make_grid(pairs, cols=8)}


def save_final(model: VAE, workdir: str) -> None:
    """model.keras and a SavedModel of the decoder (z -> uint8 images), each written atomically."""
    tmp_model = os.path.join(workdir, ".tmp-" + wd.MODEL_FILE)
    model.save(tmp_model)
    os.replace(tmp_model, os.path.join(workdir, wd.MODEL_FILE))

    export = os.path.join(workdir, wd.EXPORT_DIR)
    tmp_export = fresh_temp_dir(export)
    tf.saved_model.save(DecoderExport(model), tmp_export)
    move_into_place(tmp_export, export)


class DecoderExport(tf.Module):
    """The serving signature: latent vectors (N, z_dim) -> uint8 images (N, H, W, C)."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, model.network.z_dim], tf.float32, name="z")],
        )

    def _serve(self, z):
        images = tf.cast(self.model.decode(z), tf.float32)  # (N, H, W, C) in [0, 1]
        return {"images": tf.cast(tf.round(images * 255.0), tf.uint8)}


# --------------------------------------------------------------------------- benchmark


def benchmark(
    model: VAE,
    train_fn: Callable,
    train_data: Iterable,
    settings: dict,
    strategy: tf.distribute.Strategy,
) -> dict:
    """Images/s, ms/step and input wait over --benchmark_steps after a warm-up."""
    iterator = iter(train_data)
    spe, batch_size = settings["steps_per_execution"], settings["batch_size"]
    for _ in range(WARMUP_EXECUTIONS):
        train_fn(next_batches(iterator, spe, settings["data_dir"]))
    float(model.metrics[0].result())  # wait for the warm-up to finish
    steps, waited, start = 0, 0.0, time.perf_counter()
    while steps < settings["benchmark_steps"]:
        t0 = time.perf_counter()
        batches = next_batches(iterator, spe, settings["data_dir"])
        waited += time.perf_counter() - t0
        train_fn(batches)
        float(model.metrics[0].result())  # as in training: one host sync per execution
        steps += spe
    seconds = time.perf_counter() - start
    gpus = tf.config.list_logical_devices("GPU")
    return {
        "benchmark": "train",
        "images_per_sec": round(steps * batch_size / seconds, 1),
        "ms_per_step": round(1000 * seconds / steps, 2),
        "input_wait_fraction": round(waited / seconds, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "device": gpus[0].name if gpus else "CPU",
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "batch_size": batch_size,
        "steps": steps,
        "image_shape": list(model.network.image_shape),
        "z_dim": model.network.z_dim,
        "mixed_precision": settings["mixed_precision"],
        "jit_compile": settings["jit_compile"],
    }


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
