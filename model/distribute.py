"""Devices for training: tf.distribute strategies, the chief, mixed precision, and the
workarounds that several workers need.

make_strategy must run before anything else touches TensorFlow's devices:
MultiWorkerMirroredStrategy configures collective ops, and virtual CPUs are set up, only
while TensorFlow has not initialised its devices yet.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import keras
import tensorflow as tf

from facevae.model.config import TrainError


def make_strategy(name: str, logical_cpus: int = 0) -> tf.distribute.Strategy:
    """The tf.distribute strategy `name` (config.STRATEGIES), on `logical_cpus` virtual CPUs
    if more than 0; TrainError saying why it cannot be made."""
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
            f"`strategy`={name} `logical_cpus`={logical_cpus}: TensorFlow had set up its "
            f"devices already ({str(e).splitlines()[0]}); start a new process and create "
            "the strategy first"
        ) from None
    except ValueError as e:  # a TF_CONFIG that is not JSON, or names no such task
        raise TrainError(
            f"`strategy`=multi_worker: TF_CONFIG={os.environ.get('TF_CONFIG', '')[:80]!r} does "
            f"not describe this worker ({str(e).splitlines()[0][:120]}): see the README's "
            "two-worker example"
        ) from None
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            raise TrainError(f"`strategy`=tpu: no TPU found ({str(e).splitlines()[0]})") from None
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


@contextlib.contextmanager
def precision(policy: str) -> Iterator[None]:
    """The keras dtype policy for the block (it is global: a notebook's next call is clean)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32" if policy == "none" else policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def metrics_with_batch_axis(model: keras.Model, strategy: tf.distribute.Strategy) -> Iterator[None]:
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
def explain_lost_worker(strategy: tf.distribute.Strategy, ckpt_dir: str) -> Iterator[None]:
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
