"""The tf.data input pipeline: a prepared dataset directory -> batches of float32 images.

A prepared dataset is a folder of TFRecord shards beside `dataset.json`, read once into a
schema.Manifest that every function here takes. `load` builds, for training:

    shard files -> parallel interleaved reads, in a fixed order -> [this pipeline's part]
      -> parse + decode whole chunks (uint8) -> cache -> shuffle -> repeat -> batch
      -> random flip -> float32 / 255 on whole batches -> prefetch

Everything before the cache runs in a fixed order, so a disk cache filled by a training
run holds the same order an evaluation expects.

Without a cache, the shard order is shuffled every epoch, the shuffle buffer holds the
serialized records instead and decoding happens on the final batches: encoded JPEG
records are several times smaller than decoded pixels, so host memory stays flat
(bounded by the buffer, not the dataset) and no unbatch/rebatch is needed. Evaluation
reads every example once, in a fixed order, and keeps the last partial batch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf
from absl import logging

from facevae.pipeline import schema

AUTOTUNE = tf.data.AUTOTUNE
# Records parsed and decoded per map call before caching: parsing and decoding a
# batch is ~2x faster than one example per call (measured on 96x96 JPEG records).
_DECODE_CHUNK = 256
# Shards read at once: more open shards mix the record order better before the
# shuffle buffer; each costs one 256 KB read buffer.
_CYCLE_LENGTH = 8
# cache="auto" caches in memory when the decoded split needs at most this share of free RAM.
_AUTO_CACHE_FRACTION = 0.5
_CACHE_MODES = ("auto", "memory", "none", "disk:<path>")
# Linux's memory figures; module constants so tests can point them elsewhere.
_MEMINFO = "/proc/meminfo"
_CGROUP_MAX = "/sys/fs/cgroup/memory.max"
_CGROUP_CURRENT = "/sys/fs/cgroup/memory.current"


# --------------------------------------------------------------------------- damaged shards


def verify(manifest: schema.Manifest) -> None:
    """Checks every shard's size and sha256 against the manifest; DatasetError if any differ.

    Use it when reading stops with a DataLossError ("corrupted record at ..."), which
    TensorFlow reports without naming the file.
    """
    bad = []
    for name, split in manifest.splits.items():
        for shard in split.shards:
            path = os.path.join(manifest.data_dir, shard.name)
            if not os.path.isfile(path):
                bad.append(f"{path} (split {name!r}) is missing")
            elif os.path.getsize(path) != shard.bytes:
                bad.append(f"{path} has {os.path.getsize(path)} bytes, expected {shard.bytes}")
            elif schema.file_sha256(path) != shard.sha256:
                bad.append(f"{path} has a different sha256 than the manifest (corrupt)")
    if bad:
        raise schema.DatasetError(
            f"{len(bad)} shard(s) do not match {manifest.path}: {'; '.join(bad)}. "
            "Prepare the dataset again",
            manifest.data_dir,
        )
    logging.info("verified every shard of %s against its manifest", manifest.data_dir)


def explain_data_loss(manifest: schema.Manifest, error: Exception) -> schema.DatasetError:
    """The DatasetError to raise for a DataLossError met while reading the dataset.

    TensorFlow's "corrupted record at N" names no file: `verify` finds the shard whose
    bytes differ from the manifest. When every shard matches, the error quotes
    TensorFlow's message.

        except tf.errors.DataLossError as e:
            raise dataset.explain_data_loss(manifest, e) from e
    """
    try:
        verify(manifest)
    except schema.DatasetError as named:
        return named
    message = getattr(error, "message", None) or str(error)
    return schema.DatasetError(
        f"reading {manifest.data_dir} failed ({message}), though every shard matches "
        f"{manifest.path}: prepare the dataset again",
        manifest.data_dir,
    )


@contextlib.contextmanager
def explain_corrupt_shards(manifest: schema.Manifest) -> Iterator[None]:
    """Turns a DataLossError raised inside the block into a DatasetError naming the shard.

    Wrap every reader of the dataset's shards (iterating a dataset, `model.fit`,
    `model.evaluate`, ...) so a corrupt record gives one line with the file and the fix
    instead of TensorFlow's anonymous "corrupted record at N".

        with dataset.explain_corrupt_shards(manifest):
            model.fit(dataset.load(manifest, "train", 64, training=True), ...)
    """
    try:
        yield
    except tf.errors.DataLossError as e:
        raise explain_data_loss(manifest, e) from e


# --------------------------------------------------------------------------- cache choice


def _available_memory() -> int | None:
    """Bytes of RAM this process can still use: MemAvailable, capped by a cgroup v2 limit.

    None when no source answers: macOS's os.sysconf raises ValueError for
    SC_AVPHYS_PAGES and there is no /proc there; Windows has no os.sysconf.
    """
    available = None
    with contextlib.suppress(AttributeError, OSError, ValueError):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:  # MemAvailable also counts reclaimable page cache, unlike SC_AVPHYS_PAGES
        with open(_MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:  # containers: the cgroup limit, not the host's RAM, is what counts
        with open(_CGROUP_MAX) as f:
            limit = f.read().strip()
        with open(_CGROUP_CURRENT) as f:
            used = int(f.read())
        if limit != "max":
            left = int(limit) - used
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return available


def resolve_cache(cache: str, manifest: schema.Manifest, split: str) -> str:
    """Checks a cache mode and turns "auto" into "memory" or "none", logging why."""
    if cache in ("memory", "none") or (cache.startswith("disk:") and cache[5:]):
        return cache
    if cache != "auto":
        raise ValueError(f"cache={cache!r} is not one of {', '.join(_CACHE_MODES)}")
    needed = manifest.num_examples(split) * math.prod(manifest.image_shape)
    available = _available_memory()
    if available is None:
        logging.info(
            "cache=auto chose 'none' for split %r: available RAM cannot be measured on this "
            "system (decoded uint8 images need %.2f GB); pass cache='memory' to cache anyway",
            split,
            needed / 1e9,
        )
        return "none"
    choice = "memory" if needed <= _AUTO_CACHE_FRACTION * available else "none"
    logging.info(
        "cache=auto chose %r for split %r: decoded uint8 images need %.2f GB, %.2f GB of RAM "
        "available (memory when it needs at most %d%%)",
        choice,
        split,
        needed / 1e9,
        available / 1e9,
        _AUTO_CACHE_FRACTION * 100,
    )
    return choice


def _disk_cache_file(cache: str, manifest: schema.Manifest, split: str, variant: str) -> str:
    """A cache file prefix under the `disk:` folder, unique to this split's content.

    The split's fingerprint (its shards' sha256s) is part of the name, so a re-prepared
    dataset never reuses a stale cache and several datasets can share one folder.
    """
    folder = cache[len("disk:") :]
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{split}-{manifest.split(split).fingerprint}-{variant}")


# --------------------------------------------------------------------------- decoding


def _decoder(fmt: str, shape: tuple[int, int, int]) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function from (B,) encoded strings to (B, H, W, C) uint8 images."""
    height, width, channels = shape
    if fmt == "raw":

        def decode_raw(encoded: tf.Tensor) -> tf.Tensor:
            pixels = tf.io.decode_raw(encoded, tf.uint8)  # (B, H * W * C)
            return tf.reshape(pixels, [-1, height, width, channels])

        return decode_raw
    if fmt not in ("jpeg", "png"):
        raise schema.DatasetError(f"image format {fmt!r} is not one of {schema.FORMATS}")
    if fmt == "jpeg":
        # TF's default DCT is libjpeg's fast one (off by up to 15 levels from what PIL
        # decodes); the accurate one is bit-exact with PIL and measured no slower.
        decode_one = functools.partial(tf.io.decode_jpeg, dct_method="INTEGER_ACCURATE")
    else:
        decode_one = tf.io.decode_png

    def decode_images(encoded: tf.Tensor) -> tf.Tensor:
        # ensure_shape turns an image of another size into an error, not a bad batch.
        return tf.map_fn(
            lambda e: tf.ensure_shape(decode_one(e, channels=channels), shape),
            encoded,
            fn_output_signature=tf.TensorSpec(shape, tf.uint8),
        )  # (B, H, W, C)

    return decode_images


def _parser(
    manifest: schema.Manifest, with_labels: bool
) -> Callable[[tf.Tensor], tf.Tensor | tuple[tf.Tensor, tf.Tensor]]:
    """(B,) serialized records -> uint8 images (B, H, W, C) [, float32 attributes (B, A)]."""
    decode = _decoder(manifest.image_format, manifest.image_shape)
    full_spec = schema.feature_spec(len(manifest.attribute_names))
    keys = [schema.KEY_ENCODED] + ([schema.KEY_ATTRIBUTES] if with_labels else [])
    spec = {key: full_spec[key] for key in keys}  # parse only what the model needs

    def parse(serialized: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, spec)
        images = decode(parsed[schema.KEY_ENCODED])  # (B, H, W, C) uint8
        if not with_labels:
            return images
        return images, tf.cast(parsed[schema.KEY_ATTRIBUTES], tf.float32)  # (B, A)

    return parse


# --------------------------------------------------------------------------- pipeline


def _records(
    files: list[str],
    compression: str | None,
    *,
    shuffle_files: bool,
    seed: int | None,
    input_context: tf.distribute.InputContext | None,
    deterministic: bool,
) -> tf.data.Dataset:
    """Serialized records of the split, or of this input pipeline's part of it.

    `deterministic` fixes the interleaved order even when the pipeline's options allow
    out-of-order elements (an unseeded training run).
    """
    pipelines = input_context.num_input_pipelines if input_context else 1
    part = input_context.input_pipeline_id if input_context else 0
    by_shard = pipelines > 1 and len(files) >= pipelines
    by_example = pipelines > 1 and not by_shard
    ds = tf.data.Dataset.from_tensor_slices(files)
    if by_shard:
        ds = ds.shard(pipelines, part)
    # Sharding by example needs the same record order in every pipeline: no file shuffle then.
    if shuffle_files and not by_example:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression or ""),
        cycle_length=min(len(files), _CYCLE_LENGTH),
        num_parallel_calls=AUTOTUNE,
        deterministic=True if by_example or deterministic else None,
    )
    if by_example:
        ds = ds.shard(pipelines, part)
    return ds


def _flip_some(images: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """Mirrors the images where `flip` (B,) is true, keeping the batch order.

    Partitioning and reversing only the flipped half is ~10x faster than a
    broadcast tf.where over the whole uint8 batch, which cost more than decoding.
    """
    which = tf.cast(flip, tf.int32)  # (B,)
    kept, flipped = tf.dynamic_partition(images, which, 2)
    positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), which, 2)
    mirrored = tf.dynamic_stitch(positions, [kept, tf.reverse(flipped, axis=[2])])
    return tf.ensure_shape(mirrored, images.shape)  # (B, H, W, C)


def _flip(ds: tf.data.Dataset, seed: int | None, with_labels: bool) -> tf.data.Dataset:
    """Flips a random half of each batch left-right; seeded, and different every epoch."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def flip(batch: Any, pair: tf.Tensor) -> Any:
        images = batch[0] if with_labels else batch  # (B, H, W, C) uint8
        coins = tf.random.stateless_uniform(tf.shape(images)[:1], seed=pair) < 0.5  # (B,)
        flipped = _flip_some(images, coins)
        return (flipped, batch[1]) if with_labels else flipped

    return tf.data.Dataset.zip((ds, seeds)).map(flip, num_parallel_calls=AUTOTUNE)


def _to_float(
    images: tf.Tensor, labels: tf.Tensor | None = None
) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    images = tf.cast(images, tf.float32) / 255.0  # (B, H, W, C) in [0, 1]
    return images if labels is None else (images, labels)


def _cache(
    ds: tf.data.Dataset,
    mode: str,
    manifest: schema.Manifest,
    split: str,
    with_labels: bool,
    input_context: tf.distribute.InputContext | None,
) -> tf.data.Dataset:
    """Caches decoded examples in memory or in a file named for exactly this content."""
    if mode == "memory":
        return ds.cache()
    variant = "labels" if with_labels else "images"  # another element structure, another file
    if input_context is not None and input_context.num_input_pipelines > 1:
        variant += f"-part{input_context.input_pipeline_id}of{input_context.num_input_pipelines}"
    return ds.cache(_disk_cache_file(mode, manifest, split, variant))


def load(
    manifest: schema.Manifest,
    split: str,
    batch_size: int,
    *,
    training: bool,
    cache: str = "auto",
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    repeat: bool | None = None,
    with_labels: bool = False,
    flip: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Batches of float32 images (B, H, W, C) in [0, 1], or (images, attributes (B, A) of 0/1).

    Args:
      manifest: the prepared dataset's (schema.Manifest.read(data_dir)).
      split: a split in the manifest, e.g. "train" or "validation".
      batch_size: the global batch; with `input_context` each pipeline yields its
        per-replica share.
      training: shuffle (records, and the shard order when nothing is cached; again every
        epoch), flip if asked, repeat and drop the last partial batch by default. Otherwise one
        pass in a fixed order.
      cache: "memory" (decoded uint8), "disk:<folder>", "none" or "auto" (memory when the
        decoded split fits comfortably in RAM).
      shuffle_buffer: examples in the shuffle buffer (training only).
      seed: makes the shuffles and flips reproducible; each epoch still differs.
      repeat: repeat forever; defaults to `training`.
      with_labels: also yield the attributes; the dataset must have some.
      flip: random horizontal flips (training only).
      input_context: from `tf.distribute` (`distribute_datasets_from_function`): read this
        pipeline's disjoint part, by shard when there are enough shards, else by example.
      drop_remainder: drop the last partial batch; defaults to `training`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    files = manifest.shard_paths(split)
    if with_labels and not manifest.attribute_names:
        raise schema.DatasetError(
            f"with_labels needs attributes, but {manifest.path} lists none: prepare a source "
            "with attribute labels (e.g. CelebA's list_attr_celeba.txt)",
            manifest.data_dir,
            reprepare=False,
        )
    mode = resolve_cache(cache, manifest, split)
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    parse = _parser(manifest, with_labels)
    # What is cached must come in one fixed order: a disk cache filled by a training run is
    # read by later evaluations, and the shuffle after the cache still mixes every epoch.
    cached = mode != "none"
    records = _records(
        files,
        manifest.compression,
        shuffle_files=training and not cached,
        seed=seed,
        input_context=input_context,
        deterministic=cached,
    )
    if not cached:
        # Shuffle the small encoded records and decode whole final batches (module docstring).
        if training:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            records = records.repeat()
        ds = records.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(parse, num_parallel_calls=AUTOTUNE)
    else:
        ds = records.batch(_DECODE_CHUNK).map(
            parse, num_parallel_calls=AUTOTUNE, deterministic=True
        )
        ds = ds.unbatch()
        ds = _cache(ds, mode, manifest, split, with_labels, input_context)
        if training:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if flip and training:
        ds = _flip(ds, seed, with_labels)
    ds = ds.map(_to_float, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    return ds.with_options(_options(training, seed, input_context))


def _options(
    training: bool, seed: int | None, input_context: tf.distribute.InputContext | None
) -> tf.data.Options:
    options = tf.data.Options()
    # Out-of-order elements keep the pipeline busy behind a slow one; only an
    # unseeded training run can afford them.
    options.deterministic = not training or seed is not None
    # A one-pass iterator is deleted after each use (every validation in fit), and the
    # deletion waits for the autotuner's thread to wake: seconds of idle CPU each time.
    # Without autotuning, AUTOTUNE parallelism means one call per core.
    options.autotune.enabled = training
    if input_context is not None:  # this function already reads only its part
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def examples(manifest: schema.Manifest, split: str) -> tf.data.Dataset:
    """Every example of a split, unbatched, in shard then record order, with its labels.

    Each element is a dict: image uint8 (H, W, C), source_id string, index int64,
    landmarks float32 (10,) and identity int64 (-1 where unknown) and, when the
    dataset has attributes, attributes int64 (A,).
    """
    files = manifest.shard_paths(split)
    decode = _decoder(manifest.image_format, manifest.image_shape)
    num_attributes = len(manifest.attribute_names)

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = schema.parse_examples(serialized, num_attributes)
        fields = {"image": decode(parsed["encoded"])}  # (B, H, W, C) uint8
        fields.update({k: parsed[k] for k in ("source_id", "index", "landmarks", "identity")})
        if num_attributes:
            fields["attributes"] = parsed["attributes"]  # (B, A)
        return fields

    # One reader over the shards in manifest order: the order never changes.
    ds = tf.data.TFRecordDataset(files, compression_type=manifest.compression or "")
    ds = ds.batch(_DECODE_CHUNK).map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.unbatch().prefetch(AUTOTUNE)
