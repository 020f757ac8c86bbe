"""Training throughput of the VAE's custom train_step against the original recipe's setup.

    python -m tools.bench_train [--batch_size 128] [--steps 20] [--z_dim 256]

Prints one JSON line: images/s and peak RSS of each variant, and the speed-ups over the
baseline. Variants (each in a fresh process, so peak RSS is its own):

- custom: VAE.train_step in a tf.function, fed by tf.data from a uint8 tensor cached in
  memory and cast to float32 per batch, like the real pipeline.
- custom_xla: the same step compiled with XLA (jit_compile=True).
- custom_bf16: the custom step under the mixed_bfloat16 policy (bfloat16 convolutions,
  float32 weights and losses); fast on CPUs with AVX512_BF16 / AMX and on TPUs.
- baseline: the original recipe: a Functional keras model (same encoder and decoder, BCE on
  the logits plus the weighted KL as a second output's loss) trained by model.fit on an
  in-RAM float32 numpy array.

Random images: the speed of a step does not depend on the pixel values.
"""

import os

from model.console import Progress, peak_rss_mb, quiet_tensorflow

# quiet_tensorflow() sets TF_CPP_MIN_LOG_LEVEL; the worker processes must not inherit it
# (it means "the user chose", and they would print TensorFlow's start-up lines).
_USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import concurrent.futures
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from model.networks import NetworkConfig, build_decoder, build_encoder
from model.vae import VAE, Sampling

VARIANTS = ("custom", "custom_xla", "custom_bf16", "baseline")
LEARNING_RATE = 1e-3

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 128, "Images per training step.")
flags.DEFINE_integer("steps", 20, "Timed training steps per variant, after the warm-up.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps first (tracing, XLA compilation).")
flags.DEFINE_integer("z_dim", 256, "Latent dimensions of the (otherwise default) model.")
flags.DEFINE_integer("num_images", 512, "Random images held in memory and cycled through.")
flags.DEFINE_list("variants", list(VARIANTS), f"Variants to run, any of {', '.join(VARIANTS)}.")


def _random_images(num_images: int, shape: tuple[int, int, int]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (num_images, *shape), dtype=np.uint8)


def bench_custom(
    network: NetworkConfig,
    batch_size: int,
    steps: int,
    warmup_steps: int,
    num_images: int,
    jit_compile: bool,
    precision: str = "float32",
) -> dict[str, float]:
    """images/s and peak RSS of VAE.train_step on a cached uint8 tf.data pipeline.

    precision is a keras dtype policy; it is set globally, so call this in its own process.
    """
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    pixels = tf.constant(_random_images(num_images, network.image_shape))
    dataset = (
        tf.data.Dataset.from_tensor_slices(pixels)
        .cache()
        .repeat()
        .shuffle(num_images)
        .batch(batch_size, drop_remainder=True)
        .map(lambda x: tf.cast(x, tf.float32) / 255.0, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = VAE(network)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    step = tf.function(model.train_step, jit_compile=jit_compile)
    batches = iter(dataset)
    for _ in range(warmup_steps):
        float(step(next(batches))["loss"])
    label = f"custom {precision}{' xla' if jit_compile else ''}"
    progress = Progress(steps, label, unit="step")
    start = time.perf_counter()
    for _ in range(steps):
        logs = step(next(batches))
        progress.update()
    float(logs["loss"])  # waits for the last step
    elapsed = time.perf_counter() - start
    progress.close()
    return {"images_per_s": steps * batch_size / elapsed, "peak_rss_mb": peak_rss_mb()}


class _KLDivergence(keras.layers.Layer):
    """Per-image mean KL of N(mean, exp(log_var)) from N(0, I), for the baseline's 2nd output."""

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        z_mean, z_log_var = inputs
        kl = -0.5 * (1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var))
        return tf.reduce_mean(kl, axis=1)  # (B,)


def _pass_through(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    del y_true  # the KL output is the loss itself
    return y_pred


class _EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch after the warm-up ones (the first traces the step)."""

    def __init__(self, progress: Progress, steps_per_epoch: int, warmup_epochs: int) -> None:
        super().__init__()
        self.progress, self.steps_per_epoch = progress, steps_per_epoch
        self.warmup_epochs = warmup_epochs
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch >= self.warmup_epochs:
            self.seconds.append(time.perf_counter() - self.start)
            self.progress.update(self.steps_per_epoch)


def bench_baseline(
    network: NetworkConfig, batch_size: int, steps: int, warmup_steps: int, num_images: int
) -> dict[str, float]:
    """images/s and peak RSS of the original recipe: Functional model, fit on float32 numpy.

    Whole epochs are timed, so steps and warmup_steps are rounded up to whole epochs of
    num_images // batch_size steps.
    """
    keras.utils.set_random_seed(0)
    images = _random_images(num_images, network.image_shape).astype(np.float32) / 255.0
    steps_per_epoch = num_images // batch_size
    timed_epochs = math.ceil(steps / steps_per_epoch)
    warmup_epochs = math.ceil(warmup_steps / steps_per_epoch)
    encoder, decoder = build_encoder(network), build_decoder(network)
    inputs = keras.Input(network.image_shape)
    z_mean, z_log_var = encoder(inputs)
    logits = decoder(Sampling()([z_mean, z_log_var]))
    kl = _KLDivergence()([z_mean, z_log_var])
    model = keras.Model(inputs, {"logits": logits, "kl": kl})
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={"logits": keras.losses.BinaryCrossentropy(from_logits=True), "kl": _pass_through},
        loss_weights={"logits": 1.0, "kl": VAE().kl_weight},
    )
    progress = Progress(timed_epochs * steps_per_epoch, "baseline", unit="step")
    timer = _EpochTimer(progress, steps_per_epoch, warmup_epochs)
    model.fit(
        images,
        {"logits": images, "kl": np.zeros(num_images, np.float32)},
        batch_size=batch_size,
        epochs=warmup_epochs + timed_epochs,
        callbacks=[timer],
        verbose=0,
    )
    progress.close()
    timed_images = timed_epochs * steps_per_epoch * batch_size
    return {"images_per_s": timed_images / sum(timer.seconds), "peak_rss_mb": peak_rss_mb()}


def run_variant(variant: str, **kwargs: Any) -> dict[str, float]:
    """One variant's numbers; call it in a fresh process for a meaningful peak RSS."""
    if variant == "baseline":
        return bench_baseline(**kwargs)
    precision = "mixed_bfloat16" if variant == "custom_bf16" else "float32"
    return bench_custom(**kwargs, jit_compile=variant == "custom_xla", precision=precision)


def _in_fresh_process(function: Callable[..., dict], *args: Any, **kwargs: Any) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        ours = os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None) if _USER_TF_LOG_LEVEL is None else None
        try:
            future = pool.submit(function, *args, **kwargs)  # starts the worker
        finally:
            if ours is not None:
                os.environ["TF_CPP_MIN_LOG_LEVEL"] = ours
        return future.result()


def benchmark(
    variants: list[str],
    batch_size: int,
    steps: int,
    warmup_steps: int,
    z_dim: int,
    num_images: int,
) -> dict[str, Any]:
    """The JSON report: each variant's numbers and speed-ups over the baseline."""
    network = NetworkConfig(z_dim=z_dim)
    report: dict[str, Any] = {
        "benchmark": "train",
        "image_shape": list(network.image_shape),
        "z_dim": z_dim,
        "batch_size": batch_size,
        "steps": steps,
        "cpu_count": multiprocessing.cpu_count(),
        "devices": [d.device_type for d in tf.config.list_physical_devices()],
    }
    for variant in variants:
        report[variant] = _in_fresh_process(
            run_variant,
            variant,
            network=network,
            batch_size=batch_size,
            steps=steps,
            warmup_steps=warmup_steps,
            num_images=num_images,
        )
    if "baseline" in report:
        base = report["baseline"]["images_per_s"]
        for variant in ("custom", "custom_xla", "custom_bf16"):
            if variant in report:
                report[f"speedup_{variant}"] = report[variant]["images_per_s"] / base
    return report


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.variants) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}.")
    for name in ("batch_size", "steps", "z_dim"):
        if FLAGS[name].value <= 0:
            raise app.UsageError(f"--{name}={FLAGS[name].value}: give a positive integer.")
    if FLAGS.warmup_steps < 1:
        raise app.UsageError("--warmup_steps: give at least 1 (the first step traces).")
    if FLAGS.num_images < FLAGS.batch_size:
        raise app.UsageError(
            f"--num_images={FLAGS.num_images} is below --batch_size={FLAGS.batch_size}; raise it."
        )
    report = benchmark(
        FLAGS.variants,
        FLAGS.batch_size,
        FLAGS.steps,
        FLAGS.warmup_steps,
        FLAGS.z_dim,
        FLAGS.num_images,
    )
    summary = ", ".join(
        f"{v} {report[v]['images_per_s']:.1f} img/s" for v in FLAGS.variants if v in report
    )
    print(f"bench_train: {summary}", file=sys.stderr)
    print(json.dumps(report))


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
