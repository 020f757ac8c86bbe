"""Training throughput, like with like: the library of tools/bench_train.

    python -m tools.bench_train [--data_dir data/celeba96] [--batch_size 128] [--steps 20]
        [--rounds 3] [--variants seed_keras_bn,seed,fit,train_py]
        [--mixed_precision mixed_float16] [--jit_compile true] [--steps_per_execution 4]

Prints one JSON line per variant: images/s, ms/step, peak RSS, training FLOPs per image
(counted from the layer shapes) and the share of an fp32 matmul peak that this tool measures
itself on the same machine. Variants, each in a fresh process (so peak RSS is its own):

- seed_keras_bn: the original recipe's setup: a Functional keras model (the same encoder
  and decoder, BCE on the logits plus the weighted KL as a second output's loss) trained by
  model.fit on float32 images held in RAM, with Keras' own (unfused) BatchNormalization.
- seed: the same with our networks (fused BatchNormalization).
- fit: our VAE (VAE.train_step) under model.fit on the training tf.data pipeline
  (pipeline.dataset.load), as train.py feeds it.
- train_py: `python train.py --benchmark_steps N`, its one JSON line re-read.

Each variant line carries speed-ups over both seed-style baselines measured in the same
run, and cpu_ms_per_step: CPU seconds of the whole process (every thread) per timed step,
the steadier figure on a shared machine (busy neighbours stretch wall time, not the work);
train.py reports none. On a shared machine, give --rounds > 1: the variants then run
interleaved (all of round 1, then all of round 2, ...) and each reports its best round, so a
busy spell slows every variant alike. Without --data_dir a small synthetic dataset is made
in a temp folder.

Each variant runs in a fresh process (spawn), so its peak RSS is its own.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facevae.model import distribute, networks, trainer, training_data
from facevae.model.callbacks import StepTimer, Throughput
from facevae.model.config import JIT_COMPILE, TrainConfig, TrainError
from facevae.model.console import quiet_tensorflow
from facevae.model.networks import NetworkConfig, build_decoder, build_encoder
from facevae.model.vae import VAE, Sampling
from facevae.pipeline import dataset, prepare, schema, synthetic
from facevae.pipeline.bench import peak_rss_mb

VARIANTS = ("seed_keras_bn", "seed", "fit", "train_py")
BASELINES = ("seed_keras_bn", "seed")
LEARNING_RATE = 1e-3
MATMUL_SIZE = 2048  # of the square fp32 matmul that measures the peak

# --------------------------------------------------------------------------- FLOPs and peak


def training_flops_per_image(network: NetworkConfig) -> int:
    """Multiply-add FLOPs (2 per MAC) of one training image through convolutions and Dense.

    Forward, plus the two backward products of each layer (gradients of its input and of its
    kernel), less the input gradient of the first convolution (the images need none).
    BatchNorm, activations, the loss and the optimizer are left out: a few percent.
    """
    encoder, decoder = build_encoder(network), build_decoder(network)
    forward, first = 0, None
    for layer in encoder.layers + decoder.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, height, width, _ = layer.input.shape  # the product runs over the input grid
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
        elif isinstance(layer, keras.layers.Dense):
            height = width = 1
        else:
            continue
        flops = 2 * height * width * math.prod(layer.kernel.shape)
        forward += flops
        first = flops if first is None else first
    return 3 * forward - (first or 0)


def matmul_peak_gflops(seconds: float = 1.0, size: int = MATMUL_SIZE) -> float:
    """Best fp32 GFLOP/s of TensorFlow's (size x size) @ (size x size) over about `seconds`.

    A square product keeps every core busy; the convolutions' own im2col shapes, e.g.
    (128 * 24 * 24, 288) @ (288, 64), ran on one thread here and would understate the peak.
    """
    a = tf.random.stateless_normal((size, size), seed=(0, 1))
    b = tf.random.stateless_normal((size, size), seed=(0, 2))
    matmul = tf.function(tf.linalg.matmul)
    matmul(a, b).numpy()  # traces, warms the kernel
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


# --------------------------------------------------------------------------- variants


def _timing(timer: StepTimer, batch_size: int) -> dict[str, float]:
    """A variant's numbers from the shared step timer, and this process's peak RSS."""
    result = timer.result(batch_size)
    return {
        "images_per_s": result["images_per_sec"],
        "ms_per_step": result["ms_per_step"],
        "cpu_ms_per_step": result["cpu_ms_per_step"],
        "peak_rss_mb": peak_rss_mb(),
    }


class _KLDivergence(keras.layers.Layer):
    """Per-image mean KL of N(mean, exp(log_var)) from N(0, I), for the baseline's 2nd output."""

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        z_mean, z_log_var = inputs
        kl = -0.5 * (1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var))
        return tf.reduce_mean(kl, axis=1)  # (B,)


def _pass_through(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    del y_true  # the KL output is the loss itself
    return y_pred


def _images_in_ram(data_dir: str, num_images: int) -> np.ndarray:
    """The first num_images training images as one float32 array (N, H, W, C) in [0, 1]."""
    manifest = schema.Manifest.read(data_dir)
    batches = dataset.load(manifest, "train", num_images, training=False, cache="none")
    return next(iter(batches)).numpy()


def bench_seed(
    network: NetworkConfig,
    data_dir: str,
    batch_size: int,
    steps: int,
    warmup_steps: int,
    num_images: int,
    keras_bn: bool,
) -> dict[str, float]:
    """The original recipe: a Functional model trained by fit on float32 images in RAM."""
    if keras_bn:  # this process only: the networks as they were, with Keras' own layer
        networks.BatchNormalization = keras.layers.BatchNormalization
    keras.utils.set_random_seed(0)
    images = _images_in_ram(data_dir, num_images)  # (N, H, W, C) float32
    images = images[: len(images) // batch_size * batch_size]  # whole batches only
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
    timer = StepTimer(warmup_steps, steps)
    steps_per_epoch = len(images) // batch_size
    model.fit(
        images,
        {"logits": images, "kl": np.zeros(len(images), np.float32)},
        batch_size=batch_size,
        epochs=math.ceil((warmup_steps + steps) / steps_per_epoch),
        callbacks=[timer],
        verbose=0,
    )
    return _timing(timer, batch_size)


def bench_fit(
    network: NetworkConfig,
    data_dir: str,
    batch_size: int,
    steps: int,
    warmup_steps: int,
    mixed_precision: str,
    steps_per_execution: int,
    jit_compile: str,
) -> dict[str, float]:
    """Our VAE under model.fit on the training pipeline, as train.py feeds it."""
    if mixed_precision != "none":
        keras.mixed_precision.set_global_policy(mixed_precision)
    keras.utils.set_random_seed(0)
    manifest = schema.Manifest.read(data_dir)
    train_data = dataset.load(manifest, "train", batch_size, training=True, seed=0)
    model = VAE(network, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        steps_per_execution=steps_per_execution,
        jit_compile=JIT_COMPILE[jit_compile],
    )
    warmup_calls = math.ceil(warmup_steps / steps_per_execution)
    timed_calls = math.ceil(steps / steps_per_execution)
    timer = StepTimer(warmup_calls * steps_per_execution, timed_calls * steps_per_execution)
    model.fit(
        train_data,
        epochs=1,
        steps_per_epoch=(warmup_calls + timed_calls) * steps_per_execution,
        shuffle=False,  # the pipeline shuffles
        callbacks=[timer],
        verbose=0,
    )
    return _timing(timer, batch_size)


def bench_train_py(
    network: NetworkConfig,
    data_dir: str,
    batch_size: int,
    steps: int,
    mixed_precision: str,
    steps_per_execution: int,
    jit_compile: str,
) -> dict[str, Any]:
    """train.py's own benchmark (`--benchmark_steps`): train_steps, the real pipeline
    and model under fit, as training runs them; its RSS is this process's."""
    config = TrainConfig(
        data_dir=data_dir,
        batch_size=batch_size,
        z_dim=network.z_dim,
        filters=network.filters,
        mixed_precision=mixed_precision,
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    with contextlib.redirect_stdout(sys.stderr):  # its start line; stdout is for JSON
        report = train_steps(config, steps)
    return {
        "images_per_s": report["images_per_sec"],
        "ms_per_step": report["ms_per_step"],
        "cpu_ms_per_step": None,  # train.py reports none
        "peak_rss_mb": report["peak_rss_mb"],
        "train_py": report,
    }


def run_variant(variant: str, **kwargs: Any) -> dict[str, Any]:
    """One variant's numbers; call it in a fresh process for a meaningful peak RSS."""
    if variant in BASELINES:
        return bench_seed(**kwargs, keras_bn=variant == "seed_keras_bn")
    if variant == "fit":
        return bench_fit(**kwargs)
    return bench_train_py(**kwargs)


def _in_fresh_process(function: Callable[..., dict], *args: Any, **kwargs: Any) -> dict:
    """function(*args, **kwargs) in a new process (spawn: its own TensorFlow and peak RSS),
    TensorFlow's start-up lines quieted there as in a command line."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=context, initializer=quiet_tensorflow
    ) as pool:
        return pool.submit(function, *args, **kwargs).result()


# --------------------------------------------------------------------------- the report


@contextlib.contextmanager
def dataset_dir(data_dir: str | None, synthetic_images: int, size: int) -> Iterator[str]:
    """data_dir itself, or a synthetic dataset of synthetic_images faces made in a temp dir."""
    if data_dir:
        yield data_dir
        return
    with tempfile.TemporaryDirectory(prefix="bench_train-data-") as root:
        source, out = os.path.join(root, "source"), os.path.join(root, "data")
        print(f"making {synthetic_images} synthetic faces", file=sys.stderr)
        synthetic.write_source(source, synthetic_images, seed=0, verbose=False)
        prepare.prepare(source, out, size=size, verbose=False)
        yield out


def _kwargs(variant: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The arguments run_variant passes to this variant's bench_* function."""
    common = {key: settings[key] for key in ("network", "data_dir", "batch_size", "steps")}
    ours = {key: settings[key] for key in ("mixed_precision", "steps_per_execution", "jit_compile")}
    if variant in BASELINES:
        extra = {"warmup_steps": settings["warmup_steps"], "num_images": settings["num_images"]}
    elif variant == "fit":
        extra = {"warmup_steps": settings["warmup_steps"], **ours}
    else:
        extra = ours
    return {**common, **extra}


def benchmark(variants: list[str], rounds: int, **settings: Any) -> list[dict[str, Any]]:
    """One report per variant: its best round, FLOP rate, share of peak and speed-ups."""
    network: NetworkConfig = settings["network"]
    flops = training_flops_per_image(network)
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    peak = 0.0
    for _ in range(rounds):
        peak = max(peak, matmul_peak_gflops(0.5))
        for variant in variants:
            runs[variant].append(
                _in_fresh_process(run_variant, variant, **_kwargs(variant, settings))
            )
    best = {v: max(r, key=lambda run: run["images_per_s"]) for v, r in runs.items()}
    reports = []
    for variant in variants:
        run = best[variant]
        cpus = [r["cpu_ms_per_step"] for r in runs[variant] if r["cpu_ms_per_step"] is not None]
        cpu = min(cpus, default=None)
        gflops = run["images_per_s"] * flops / 1e9
        report = {
            "benchmark": "train",
            "variant": variant,
            "images_per_s": round(run["images_per_s"], 1),
            "ms_per_step": round(run["ms_per_step"], 2),
            "cpu_ms_per_step": None if cpu is None else round(cpu, 1),
            "peak_rss_mb": round(run["peak_rss_mb"], 1),
            "flops_per_image": flops,
            "gflops_per_s": round(gflops, 1),
            "matmul_peak_gflops": round(peak, 1),
            "share_of_peak": round(gflops / peak, 4),
            "rounds_images_per_s": [round(r["images_per_s"], 1) for r in runs[variant]],
            "batch_size": settings["batch_size"],
            "steps": settings["steps"],
            "image_shape": list(network.image_shape),
            "z_dim": network.z_dim,
            "filters": list(network.filters),
            "mixed_precision": "none" if variant in BASELINES else settings["mixed_precision"],
            "steps_per_execution": 1 if variant in BASELINES else settings["steps_per_execution"],
            "jit_compile": "false" if variant in BASELINES else settings["jit_compile"],
            "cpu_count": os.cpu_count(),
            "devices": sorted({d.device_type for d in tf.config.list_physical_devices()}),
        }
        for baseline in BASELINES:
            if baseline in best and baseline != variant:
                ratio = run["images_per_s"] / best[baseline]["images_per_s"]
                report[f"speedup_vs_{baseline}"] = round(ratio, 3)
        if "train_py" in run:
            report["train_py"] = run["train_py"]
        reports.append(report)
    return reports


# --------------------------------------------------------------------------- train.py's benchmark


WARMUP_EXECUTIONS = 5  # untimed executions before train_steps' timed ones


def train_steps(config: TrainConfig, steps: int) -> dict[str, Any]:
    """Training images/s, ms/step and input wait over `steps` steps after a warm-up.

    The real pipeline and model under model.fit, as in training; nothing is written.
    """
    config.check()
    if steps < 1:
        raise TrainError(f"`benchmark_steps`={steps}: give 1 or more steps to time")
    strategy = distribute.make_strategy(config.strategy, config.logical_cpus)
    facts = training_data.read_data(config, strategy.num_replicas_in_sync)
    spe = config.steps_per_execution
    timed = math.ceil(steps / spe) * spe
    with distribute.precision(config.mixed_precision):
        model = trainer.build_model(config, config.model_config(facts.image_shape), strategy)
        throughput = Throughput(config.batch_size)
        train_data = training_data.train_dataset(config, facts, strategy, throughput, 0)
        print(trainer.start_line(model, config, facts, strategy.num_replicas_in_sync), flush=True)
        timer = StepTimer(WARMUP_EXECUTIONS * spe, timed, throughput)
        with (
            dataset.explain_corrupt_shards(facts.manifest),
            trainer.explain_non_finite_input(throughput),
            distribute.metrics_with_batch_axis(model, strategy),
        ):
            model.fit(
                train_data,
                epochs=1,
                steps_per_epoch=WARMUP_EXECUTIONS * spe + timed,
                verbose=0,
                shuffle=False,
                callbacks=[throughput, timer],
            )
    result = timer.result(config.batch_size)
    gpus = tf.config.list_logical_devices("GPU")
    return {
        "benchmark": "train",
        "images_per_sec": round(result["images_per_sec"], 1),
        "ms_per_step": round(result["ms_per_step"], 2),
        "input_wait_fraction": round(result["input_wait_fraction"], 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "device": gpus[0].name if gpus else "CPU",
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "batch_size": config.batch_size,
        "steps": result["steps"],
        "steps_per_execution": spe,
        "image_shape": list(facts.image_shape),
        "z_dim": config.z_dim,
        "mixed_precision": config.mixed_precision,
        "jit_compile": bool(model.jit_compile),
    }
