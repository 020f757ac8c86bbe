"""What a training run reads: the dataset's facts, checked before anything is written, the
fixed reconstruction images, and the train and validation streams of every input pipeline.

A run's train stream starts at the batch its first step reads (`start_step`), so a resumed
run reads what an uninterrupted one reads (pipeline.dataset.load's start_batch).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from facevae.model.callbacks import Throughput
from facevae.model.config import TrainConfig, TrainError
from facevae.pipeline import dataset, schema


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the trainer needs to know of the dataset, checked before anything is written."""

    manifest: schema.Manifest
    num_train: int
    steps_per_epoch: int
    eval_split: str | None
    eval_steps: int  # batches per evaluation; 0: the split is too small, no evaluation

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.manifest.image_shape


# --------------------------------------------------------------------------- data


def read_data(config: TrainConfig, replicas: int) -> DataFacts:
    """The dataset's facts the run needs; TrainError if it cannot train as configured."""
    batch_size = config.batch_size
    if batch_size % replicas:
        raise TrainError(
            f"`batch_size`={batch_size} does not split over {replicas} replicas: "
            f"use a multiple of {replicas}"
        )
    try:
        manifest = schema.Manifest.read(config.data_dir)
        num_train = manifest.num_examples("train")
    except schema.DatasetError as e:
        e.args = (f"`data_dir`={config.data_dir}: {e}",)
        raise
    if num_train < batch_size:
        raise TrainError(
            f"`batch_size`={batch_size} is more than the {num_train} training images: "
            "lower `batch_size`"
        )
    spe = config.steps_per_execution
    steps = config.steps_per_epoch or num_train // batch_size
    steps = max(steps // spe, 1) * spe  # whole executions: fit runs steps_per_execution at once
    eval_split = "validation" if manifest.has_split("validation") else None
    num_eval = manifest.num_examples(eval_split) if eval_split else 0
    # Replicas cannot share a last partial batch, and workers must run as many steps. The
    # count also tells keras where the split ends (its cardinality is unknown to it).
    eval_steps = num_eval // batch_size if replicas > 1 else math.ceil(num_eval / batch_size)
    return DataFacts(manifest, num_train, steps, eval_split, eval_steps)


def first_images(manifest: schema.Manifest, split: str, n: int) -> np.ndarray:
    """The first n images of a split, float32 (n, H, W, C): the fixed reconstruction set.

    Also the check that the images have the size dataset.json gives, and of the first
    training image, so such a dataset stops before anything is written.
    """
    try:
        with dataset.explain_corrupt_shards(manifest):
            for _ in dataset.examples(manifest, "train").take(1):
                pass
            images = [e["image"].numpy() for e in dataset.examples(manifest, split).take(n)]
    except tf.errors.InvalidArgumentError as e:
        height, width, channels = manifest.image_shape
        raise schema.DatasetError(
            f"`data_dir`={manifest.data_dir}: its images are not the {height}x{width}x"
            f"{channels} its dataset.json says ({e.message.splitlines()[0][:120]}): prepare "
            "it again",
            manifest.data_dir,
        ) from None
    return np.stack(images).astype(np.float32) / 255.0


def train_dataset(
    config: TrainConfig,
    facts: DataFacts,
    strategy: tf.distribute.Strategy,
    throughput: Throughput,
    start_step: int,
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """Each input pipeline reads its own part of the train split from the batch that
    training step `start_step` reads, its input wait timed."""

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_step = max(context.num_replicas_in_sync // context.num_input_pipelines, 1)
        return throughput.wrap(
            dataset.load(
                facts.manifest,
                "train",
                config.batch_size,
                training=True,
                cache=config.cache,
                shuffle_buffer=config.shuffle_buffer,
                seed=config.seed,
                flip=config.flip,
                input_context=context,
                start_batch=start_step * per_step,
            )
        )

    return strategy.distribute_datasets_from_function(make)


def eval_dataset(
    config: TrainConfig, facts: DataFacts, strategy: tf.distribute.Strategy
) -> tf.data.Dataset | tf.distribute.DistributedDataset | None:
    if not facts.eval_split or facts.eval_steps == 0:
        return None
    several = strategy.num_replicas_in_sync > 1

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return dataset.load(
            facts.manifest,
            facts.eval_split,
            config.batch_size,
            training=False,
            cache=config.cache,
            input_context=context,
            drop_remainder=several,
            repeat=several,
        )

    return strategy.distribute_datasets_from_function(make)
