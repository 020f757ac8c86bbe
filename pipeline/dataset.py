"""The tf.data input pipeline: a prepared dataset -> batches of float32 images.

A prepared dataset is a folder of TFRecord shards beside `dataset.json`, read once into a
schema.Manifest that every function here takes. `load` builds, for training:

    shard files -> parallel interleaved reads, in a fixed order -> [this pipeline's part]
      -> parse, check every image header, decode whole chunks (uint8) -> cache
      -> pass p: shuffle with the seed (seed, p) -> pass after pass -> batch
      -> random flip from (seed, batch number) -> float32 / 255 on whole batches -> prefetch

Everything before the cache runs in a fixed order, so a disk cache filled by a training
run holds the same order an evaluation expects; and the order of every batch is a
function of the seed and its number alone, so a resumed run reads what an uninterrupted
one reads (see load's start_batch).

Without a cache, each pass also shuffles the shard order, the shuffle buffer holds the
serialized records instead and decoding happens on the final batches: encoded JPEG
records are several times smaller than decoded pixels, so host memory stays flat
(bounded by the buffer, not the dataset) and no unbatch/rebatch is needed. Evaluation
reads every example once, in a fixed order, and keeps the last partial batch.

Every image's header is checked against the manifest's size before it is decoded: a
record holding a small file that decodes to gigabytes (a 20000x20000 JPEG) stops the
reader with a DatasetError naming its shard and record (explain_corrupt_shards).

One module, over 500 lines, because its parts are one pipeline: the order of the records,
their checks, the caches and the shuffles only give a resumable, bounded stream together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
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
    except tf.errors.InvalidArgumentError as e:
        named = bad_image(manifest, e)
        if named is None:
            raise
        raise named from None


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

# The assertion a record whose image header disagrees with the manifest fails with: its
# message carries the split, and the data the shard's index and the record's, which
# explain_corrupt_shards turns into a DatasetError naming the shard file.
_BAD_IMAGE = "facevae-bad-image"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_size(encoded: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 of one record read from its JPEG frame header alone, without
    decoding; (-1, -1) where it is not a JPEG (extract_jpeg_shape fails, naming no record,
    on what does not start as one). A 20000x20000 JPEG is a few kilobytes but 1.2 GB
    decoded: its header is what is checked before decoding."""
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)[:2],
        lambda: tf.constant([-1, -1], tf.int64),
    )


def _header_sizes(fmt: str, encoded: tf.Tensor, shape: tuple[int, int, int]) -> tf.Tensor:
    """(height, width) per record (B, 2) int64 of PNG or raw records, from the header or
    the length alone; (-1, -1) where the record is not one of `fmt`."""
    if fmt == "png":
        # Signature (8 bytes), IHDR's length (4) and type (4), then width and height as
        # big-endian 32-bit numbers: 24 bytes, padded for records shorter than that.
        head = tf.strings.substr(encoded, 0, 24)
        head = tf.strings.join([head, tf.fill(tf.shape(head), "\0" * 24)])
        head = tf.strings.substr(head, 0, 24)
        raw = tf.cast(tf.reshape(tf.io.decode_raw(head, tf.uint8), [-1, 24]), tf.int64)
        big_endian = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
        width = tf.reduce_sum(raw[:, 16:20] * big_endian, axis=1)
        height = tf.reduce_sum(raw[:, 20:24] * big_endian, axis=1)
        signature = tf.constant(list(_PNG_SIGNATURE + b"\0\0\0\rIHDR"), tf.int64)
        is_png = tf.reduce_all(tf.equal(raw[:, :16], signature), axis=1)
        return tf.where(is_png[:, None], tf.stack([height, width], axis=1), -1)
    size = math.prod(shape)  # raw: exactly H * W * C bytes
    fits = tf.equal(tf.cast(tf.strings.length(encoded), tf.int64), size)
    return tf.where(fits[:, None], tf.constant([shape[:2]], tf.int64), -1)


def _decoder(manifest: schema.Manifest, split: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """A function from (B,) encoded strings and their positions ((B,) shard, (B,) record) to
    (B, H, W, C) uint8 images; a record whose header is not the manifest's image size
    fails an assertion naming its position before it is decoded."""
    fmt, shape = manifest.image_format, manifest.image_shape
    height, width, channels = shape
    if fmt == "jpeg":
        # TF's default DCT is libjpeg's fast one (off by up to 15 levels from what PIL
        # decodes); the accurate one is bit-exact with PIL and measured no slower.
        decode_one = functools.partial(tf.io.decode_jpeg, dct_method="INTEGER_ACCURATE")
    elif fmt == "png":
        decode_one = tf.io.decode_png
    expected = tf.constant([height, width], tf.int64)

    def refuse_unless_expected(sizes: tf.Tensor, where: tf.Tensor) -> tf.Operation:
        good = tf.reduce_all(tf.equal(sizes, expected), axis=1)  # (B,)
        first_bad = tf.argmin(tf.cast(good, tf.int32))
        return tf.debugging.Assert(
            tf.reduce_all(good),
            [f"{_BAD_IMAGE} split={split}", where[first_bad], sizes[first_bad]],
            summarize=4,
        )

    def decode_checked(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        encoded, where = args  # one record and its (2,) position
        if fmt == "jpeg":
            # Checked inside the decoding loop: a separate loop over the chunk's headers
            # cost 25-30 us per image, 40% of decoding one.
            check = refuse_unless_expected(_jpeg_size(encoded)[None], where[None])
        else:
            check = tf.no_op()  # PNG: the whole chunk's headers were checked at once
        with tf.control_dependencies([check]):
            # ensure_shape: a header that lies about the size is an error, not a bad batch.
            return tf.ensure_shape(decode_one(encoded, channels=channels), shape)

    def decode_images(encoded: tf.Tensor, position: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        where = tf.stack(position, axis=1)  # (B, 2) shard, record
        if fmt == "jpeg":
            return tf.map_fn(
                decode_checked, (encoded, where), fn_output_signature=tf.TensorSpec(shape, tf.uint8)
            )  # (B, H, W, C)
        with tf.control_dependencies(
            [refuse_unless_expected(_header_sizes(fmt, encoded, shape), where)]
        ):
            if fmt == "raw":
                pixels = tf.io.decode_raw(encoded, tf.uint8)  # (B, H * W * C)
                return tf.reshape(pixels, [-1, height, width, channels])
            return tf.map_fn(
                decode_checked, (encoded, where), fn_output_signature=tf.TensorSpec(shape, tf.uint8)
            )  # (B, H, W, C)

    return decode_images


def _parser(
    manifest: schema.Manifest, split: str, with_labels: bool
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor | tuple[tf.Tensor, tf.Tensor]]:
    """Positions ((B,) shard, (B,) record) and (B,) serialized records -> uint8 images (B, H, W, C)
    [, float32 attributes (B, A)]."""
    decode = _decoder(manifest, split)
    full_spec = schema.feature_spec(len(manifest.attribute_names))
    keys = [schema.KEY_ENCODED] + ([schema.KEY_ATTRIBUTES] if with_labels else [])
    spec = {key: full_spec[key] for key in keys}  # parse only what the model needs

    def parse(
        position: tuple[tf.Tensor, tf.Tensor], serialized: tf.Tensor
    ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, spec)
        images = decode(parsed[schema.KEY_ENCODED], position)  # (B, H, W, C) uint8
        if not with_labels:
            return images
        return images, tf.cast(parsed[schema.KEY_ATTRIBUTES], tf.float32)  # (B, A)

    return parse


def bad_image(manifest: schema.Manifest, error: tf.errors.OpError) -> schema.DatasetError | None:
    """The DatasetError for a failed header check (see _decoder), naming the shard and the
    record; None for any other error."""
    message = getattr(error, "message", "") or str(error)
    found = re.search(
        rf"{_BAD_IMAGE} split=(\S+?)\]?\s.*?\[(\d+) (\d+)\].*?\[(-?\d+) (-?\d+)\]",
        message,
        re.S,
    )
    if not found:
        return None
    split, shard, record, height, width = found.groups()
    shards = manifest.splits[split].shards if split in manifest.splits else ()
    name = shards[int(shard)].name if int(shard) < len(shards) else f"shard {shard}"
    path = os.path.join(manifest.data_dir, name)
    what = f"a {height}x{width} image" if int(height) >= 0 else f"no {manifest.image_format} image"
    want = "x".join(map(str, manifest.image_shape[:2]))
    return schema.DatasetError(
        f"record {record} of {path} holds {what}, but {manifest.path} says {want}: it was "
        "not decoded; prepare the dataset again",
        manifest.data_dir,
    )


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class _Part:
    """This input pipeline's part of a split: its shard files (index in the split, path),
    whether their records are divided further by example, and how many examples it has."""

    indices: tuple[int, ...]
    paths: tuple[str, ...]
    compression: str
    pipelines: int
    pipeline_id: int
    by_example: bool
    size: int


def _pipeline_part(
    manifest: schema.Manifest, split: str, input_context: tf.distribute.InputContext | None
) -> _Part:
    """By shard when there are enough shards for the pipelines, else by example."""
    shards, files = manifest.split(split).shards, manifest.shard_paths(split)
    pipelines = input_context.num_input_pipelines if input_context else 1
    part = input_context.input_pipeline_id if input_context else 0
    by_example = pipelines > 1 and len(shards) < pipelines
    if pipelines == 1 or by_example:
        mine = list(range(len(shards)))
        total = manifest.num_examples(split)
        size = len(range(part, total, pipelines))
    else:
        mine = list(range(part, len(shards), pipelines))
        size = sum(shards[i].num_examples for i in mine)
    compression = manifest.compression or ""
    paths = tuple(files[i] for i in mine)
    return _Part(tuple(mine), paths, compression, pipelines, part, by_example, size)


def _records(
    part: _Part, shard_order: tuple[int, tf.Tensor] | None = None, sequential: bool = False
) -> tf.data.Dataset:
    """((shard, record) int64 position, serialized record) of a pipeline's part of a
    split, in a fixed order: `_CYCLE_LENGTH` shards interleaved, or shard after shard if
    `sequential`; the shards first shuffled by `shard_order` (seed, pass) if given (a pass
    of an uncached training pipeline)."""
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(part.indices, tf.int64), tf.constant(part.paths))
    )
    # Sharding by example needs the same record order in every pipeline: no file shuffle then.
    if shard_order is not None and not part.by_example:
        ds = _shuffle(ds, len(part.paths), *shard_order, what=_SHARDS)

    def read(index: tf.Tensor, path: tf.Tensor) -> tf.data.Dataset:
        records = tf.data.TFRecordDataset(path, compression_type=part.compression)
        # zip, not a map that stacks the position: a map per record cost 35-60 us each.
        shard = tf.data.Dataset.from_tensors(index).repeat()
        return tf.data.Dataset.zip(((shard, tf.data.Dataset.range(2**62)), records))

    ds = ds.interleave(
        read,
        cycle_length=1 if sequential else min(len(part.paths), _CYCLE_LENGTH),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,  # the order is part of the run: a resumed run must see it again
    )
    if part.by_example:
        ds = ds.shard(part.pipelines, part.pipeline_id)
    return ds


_RECORDS, _SHARDS = 0, 1  # the two shuffles of a pass: of its records, of its shard order


def _shuffle(
    ds: tf.data.Dataset, buffer_size: int, seed: int, number: tf.Tensor | int, what: int
) -> tf.data.Dataset:
    """ds shuffled through a buffer of `buffer_size`, in an order that is a function of
    (seed, pass `number`, `what` is shuffled) alone.

    Dataset.shuffle mixes TensorFlow's global seed into its own and cannot take a pass
    number computed inside the stream with a global seed of 0; the op it runs takes both
    seeds directly here.
    """
    flat = tf.nest.flatten(ds.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds),
        buffer_size=tf.constant(buffer_size, tf.int64),
        seed=tf.constant(seed * 2 + what + 1, tf.int64),  # the op takes seeds (0, 0) as random
        seed2=tf.cast(number, tf.int64),
        seed_generator=tf.raw_ops.DummySeedGenerator(),
        reshuffle_each_iteration=False,
        output_types=[spec.dtype for spec in flat],
        output_shapes=[spec.shape for spec in flat],
    )
    return tf.data.experimental.from_variant(variant, ds.element_spec)


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


def _flip(
    ds: tf.data.Dataset, seed: int, part: int, start_batch: int, with_labels: bool
) -> tf.data.Dataset:
    """Flips a random half of each batch left-right, drawn from (seed, part, batch number):
    the same batch gets the same flips in a resumed run."""
    key = tf.constant([seed, part], tf.int64)

    def flip(number: tf.Tensor, batch: Any) -> Any:
        images = batch[0] if with_labels else batch  # (B, H, W, C) uint8
        pair = tf.random.experimental.stateless_fold_in(key, number)
        coins = tf.random.stateless_uniform(tf.shape(images)[:1], seed=pair) < 0.5  # (B,)
        flipped = _flip_some(images, coins)
        return (flipped, batch[1]) if with_labels else flipped

    return ds.enumerate(start=start_batch).map(flip, num_parallel_calls=AUTOTUNE)


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


def _decoded(records: tf.data.Dataset, parse: Callable) -> tf.data.Dataset:
    """Records decoded in whole chunks (about 2x faster than one by one), then unbatched."""
    ds = records.batch(_DECODE_CHUNK).map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.unbatch()


# --------------------------------------------------------------------------- pipeline


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
    start_batch: int = 0,
) -> tf.data.Dataset:
    """Batches of float32 images (B, H, W, C) in [0, 1], or (images, attributes (B, A) of 0/1).

    Training reads the split as a stream of passes: pass p is the split (this pipeline's
    part of it) in an order that is a function of (seed, p) alone, and the stream is cut
    into batches across pass boundaries. `start_batch` k starts the stream at its k-th
    batch, as if the k batches before had been read: the records skipped to get there are
    read, never decoded. So a run resumed at step k sees exactly the batches an
    uninterrupted run sees from step k on, with every cache mode.

    Args:
      manifest: the prepared dataset's (schema.Manifest.read(data_dir)).
      split: a split in the manifest, e.g. "train" or "validation".
      batch_size: the global batch; with `input_context` each pipeline yields its
        per-replica share.
      training: shuffle (records, and the shard order when nothing is cached; anew every
        pass), flip if asked, repeat and drop the last partial batch by default. Otherwise
        one pass in a fixed order.
      cache: "memory" (decoded uint8), "disk:<folder>", "none" or "auto" (memory when the
        decoded split fits comfortably in RAM).
      shuffle_buffer: examples in the shuffle buffer (training only).
      seed: fixes the order and the flips (None: a random seed, drawn now).
      repeat: read pass after pass, forever; defaults to `training`.
      with_labels: also yield the attributes; the dataset must have some.
      flip: random horizontal flips (training only).
      input_context: from `tf.distribute` (`distribute_datasets_from_function`): read this
        pipeline's disjoint part, by shard when there are enough shards, else by example.
      drop_remainder: drop the last partial batch; defaults to `training`.
      start_batch: training only: the batch of this pipeline's stream to start at.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if start_batch < 0:
        raise ValueError(f"start_batch must be 0 or more, got {start_batch}")
    # Every shard there and whole: a DatasetError now, not half-way through an epoch.
    part = _pipeline_part(manifest, split, input_context)
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
    parse = _parser(manifest, split, with_labels)
    cached = mode != "none"

    if not training:
        records = _records(part)
        if cached:
            ds = _cache(_decoded(records, parse), mode, manifest, split, with_labels,
                        input_context)  # fmt: skip
            ds = (ds.repeat() if repeat else ds).batch(batch_size, drop_remainder=drop_remainder)
        else:
            ds = records.repeat() if repeat else records
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            ds = ds.map(parse, num_parallel_calls=AUTOTUNE)
        ds = ds.map(_to_float, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
        return ds.with_options(_options(training, input_context))

    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    first_pass, offset = divmod(start_batch * batch_size, part.size)

    def shuffled(ds: tf.data.Dataset, number: tf.Tensor | int) -> tf.data.Dataset:
        return _shuffle(ds, shuffle_buffer, seed, number, what=_RECORDS)

    if cached:
        # The cache holds decoded examples in the fixed record order; each pass shuffles
        # them anew. A resumed pass shuffles the records the same way instead (the order
        # of a shuffle depends on its seed and its input's order, not on the elements),
        # skips the batches done and decodes only the rest: the cache fills from the
        # next pass on.
        cache_of_split = _cache(
            _decoded(_records(part), parse),
            mode, manifest, split, with_labels, input_context,
        )  # fmt: skip

        def one_pass(number: tf.Tensor) -> tf.data.Dataset:
            return shuffled(cache_of_split, number)

        if offset:
            first = _decoded(shuffled(_records(part), first_pass).skip(offset), parse)
        else:
            first = one_pass(tf.constant(first_pass, tf.int64))
    else:
        # The small encoded records are shuffled (the shards too, every pass) and whole
        # final batches are decoded (see the module docstring).
        def one_pass(number: tf.Tensor) -> tf.data.Dataset:
            return shuffled(_records(part, (seed, number)), number)

        first = one_pass(tf.constant(first_pass, tf.int64)).skip(offset)
    stream = first
    if repeat:
        later = tf.data.Dataset.range(first_pass + 1, 2**62).flat_map(one_pass)
        stream = first.concatenate(later)
    ds = stream.batch(batch_size, drop_remainder=drop_remainder)
    if not cached:
        ds = ds.map(parse, num_parallel_calls=AUTOTUNE)
    if flip:
        ds = _flip(ds, seed, part.pipeline_id, start_batch, with_labels)
    ds = ds.map(_to_float, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    return ds.with_options(_options(training, input_context))


def _options(training: bool, input_context: tf.distribute.InputContext | None) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True  # the order is part of a run (see load)
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
    decode = _decoder(manifest, split)
    num_attributes = len(manifest.attribute_names)

    def parse(position: tuple[tf.Tensor, tf.Tensor], serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = schema.parse_examples(serialized, num_attributes)
        fields = {"image": decode(parsed["encoded"], position)}  # (B, H, W, C) uint8
        fields.update({k: parsed[k] for k in ("source_id", "index", "landmarks", "identity")})
        if num_attributes:
            fields["attributes"] = parsed["attributes"]  # (B, A)
        return fields

    # One pipeline's part is the whole split, shard by shard: the order never changes.
    ds = _decoded(_records(_pipeline_part(manifest, split, None), sequential=True), parse)
    return ds.prefetch(AUTOTUNE)
