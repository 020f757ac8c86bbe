"""A source (CelebA, official or Kaggle, folder or .zip, or any image folder) -> a dataset.

`prepare(src, out)` scans the source (pipeline.sources), turns every image into its record
payload (pipeline.recipe) in worker processes that use PIL only, and writes the records in
source order into TFRecord shards, so the shards are byte-identical whatever the number of
workers. The dataset is built in a temporary folder beside `out`, `dataset.json` last, and
moved into place whole: an interrupted run leaves `out` as it was.

Memory stays bounded whatever the source holds: each worker holds one file of at most
`max_file_mb`, all workers together decode at most `max_megapixels` at once (the pixel
budget), and at most _IN_FLIGHT_BYTES of results wait for the shard writer.

TensorFlow is imported only to write the shards, so the workers (and their start-up under
`spawn`) never import it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import math
import multiprocessing
import multiprocessing.pool
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from facevae.pipeline import files, schema, tfds_metadata
from facevae.pipeline.progress import Progress
from facevae.pipeline.recipe import (
    MAX_FILE_MB,
    MAX_MEGAPIXELS,
    Box,
    Crop,
    Limits,
    Recipe,
    move_landmarks,
    resolve_crop,
    transform,
)
from facevae.pipeline.sources import (
    DEFAULT_SPLIT_FRACTIONS,
    READ_ERRORS,
    PrepareError,
    Reader,
    SkipError,
    Source,
    TooBigError,
    scan_source,
)

TARGET_SHARD_BYTES = 20 * 2**20
# Rough encoded bytes per raw byte, only to size shards when examples_per_shard is 0.
_COMPRESSION_RATIO = {"jpeg": 1 / 6, "png": 0.6, "raw": 1.0}
# fork hands the recipe to the workers for free and starts them in milliseconds; the workers
# never call TensorFlow, and the CLI starts its pool before any TF op has created TF's thread
# pools. spawn elsewhere (slower start-up: each worker imports this module).
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
# Processed images waiting for the shard writer, at most: bounds the main process's memory
# for any size and number of workers.
_IN_FLIGHT_BYTES = 256 * 2**20
WORKERS_PER_CORE = 4


# --------------------------------------------------------------------------- worker processes


class _PixelBudget:
    """Megapixels that all worker processes together may hold decoded at once.

    One large image in each of many workers would multiply the memory of the largest image
    allowed by the workers; with the budget a large image waits until enough pixels are
    free. Images up to 1 MP (CelebA's are 0.04) take none, so they never wait.
    """

    def __init__(self, context: Any, megapixels: int) -> None:
        self._free = context.BoundedSemaphore(megapixels)  # one unit per megapixel
        self._taking = context.Lock()

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        units = math.ceil(pixels / 10**6) if pixels > 10**6 else 0
        with self._taking:  # one taker at a time: two half-served takers never deadlock
            for _ in range(units):
                self._free.acquire()
        try:
            yield
        finally:
            if units:
                _return_freed_memory()
            for _ in range(units):
                self._free.release()


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim, or no way to ask
        return None


_MALLOC_TRIM = _libc_malloc_trim() if sys.platform.startswith("linux") else None


def _return_freed_memory() -> None:
    """Hands the heap's free pages back to the OS.

    glibc keeps the freed blocks of a large image (PIL allocates in 16 MB blocks, under
    malloc's mmap threshold) in the process's heap, so every worker that once decoded a
    large image would keep its size resident; the pixel budget must count what is resident.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# (payload, crop box, None) for an image in the dataset, (None, None, reason) for a skipped one.
_Result = tuple[bytes | None, Box | None, str | None]


class _Worker:
    """Turns a (container, member) task into a result; PIL only, so it never touches TF."""

    def __init__(
        self, root: str, recipe: Recipe, limits: Limits, budget: _PixelBudget | None = None
    ) -> None:
        self.reader = Reader(root)
        self.recipe = recipe
        self.limits = limits
        self.reserve = budget.reserve if budget else None  # None: the only worker

    def __call__(self, task: tuple[str | None, str]) -> _Result:
        container, member = task
        try:
            data = self.reader.read(container, member, self.limits.max_file_bytes)
        except TooBigError as e:
            return None, None, f"{e} of `max_file_mb` (raise it to include the file)"
        except SkipError as e:
            return None, None, str(e)
        except READ_ERRORS as e:
            return None, None, f"cannot read the file ({type(e).__name__}: {e})"
        try:
            payload, box = transform(data, self.recipe, self.limits.max_pixels, self.reserve)
        except SkipError as e:
            return None, None, str(e)
        return payload, box, None

    def close(self) -> None:
        self.reader.close()


_WORKER: _Worker | None = None  # one per pool process, set by _init_worker


def _init_worker(root: str, recipe: Recipe, limits: Limits, budget: _PixelBudget) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _WORKER = _Worker(root, recipe, limits, budget)


def _run_chunk(tasks: list[tuple[str | None, str]]) -> list[_Result]:
    assert _WORKER is not None
    return [_WORKER(task) for task in tasks]


def _in_order(
    pool: multiprocessing.pool.Pool, tasks: list[Any], chunksize: int, max_chunks: int
) -> Iterator[_Result]:
    """pool.imap with at most `max_chunks` chunks submitted and not yet consumed.

    imap queues every task at once, so results pile up whenever the writer is slower than
    the workers; here memory stays bounded by max_chunks x chunksize results.
    """
    pending: collections.deque = collections.deque()
    for start in range(0, len(tasks), chunksize):
        if len(pending) == max_chunks:
            yield from pending.popleft().get()
        pending.append(pool.apply_async(_run_chunk, (tasks[start : start + chunksize],)))
    while pending:
        yield from pending.popleft().get()


@contextlib.contextmanager
def _processed(
    tasks: list[tuple[str | None, str]], root: str, recipe: Recipe, limits: Limits, workers: int
) -> Iterator[Iterator[_Result]]:
    """The results of `tasks`, in order: in this process for one worker, else from a pool."""
    if workers <= 1 or len(tasks) <= 1:
        worker = _Worker(root, recipe, limits)
        try:
            yield map(worker, tasks)
        finally:
            worker.close()
        return
    # Chunks big enough to amortise the inter-process traffic, small enough to balance the
    # load; two in flight per worker keep every worker busy, and no more than
    # _IN_FLIGHT_BYTES of (at most raw-sized) results wait for the writer.
    per_image = recipe.size * recipe.size * schema.CHANNELS
    chunksize = max(
        1, min(64, len(tasks) // (workers * 8), _IN_FLIGHT_BYTES // (2 * workers * per_image))
    )
    context = multiprocessing.get_context(_START_METHOD)
    budget = _PixelBudget(context, limits.max_megapixels)
    with context.Pool(workers, _init_worker, (root, recipe, limits, budget)) as pool:
        yield _in_order(pool, tasks, chunksize, max_chunks=2 * workers)


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- shards


def auto_examples_per_shard(recipe: Recipe) -> int:
    """A power of two giving shards of about TARGET_SHARD_BYTES (4096 at 96x96 JPEG)."""
    estimate = recipe.size * recipe.size * schema.CHANNELS * _COMPRESSION_RATIO[recipe.fmt]
    return max(64, 2 ** int(math.log2(max(TARGET_SHARD_BYTES / estimate, 1))))


class _SplitWriter:
    """Writes one split's records into shards; names them once their number is known."""

    def __init__(self, folder: str, split: str, per_shard: int, compression: str | None) -> None:
        import tensorflow as tf  # only here: the workers and the source scan never need it

        self._tf = tf
        self.folder, self.split, self.per_shard = folder, split, per_shard
        self.compression = compression
        self._options = tf.io.TFRecordOptions(compression_type=compression or "")
        self._writer: tf.io.TFRecordWriter | None = None
        self._paths: list[str] = []
        self._counts: list[int] = []

    def write(self, record: bytes) -> None:
        with self._failed_write():
            if self._writer is None or self._counts[-1] == self.per_shard:
                self._close()
                path = os.path.join(self.folder, f"{self.split}-{len(self._paths):05d}.partial")
                self._writer = self._tf.io.TFRecordWriter(path, self._options)
                self._paths.append(path)
                self._counts.append(0)
            self._writer.write(record)
        self._counts[-1] += 1

    def _close(self) -> None:
        if self._writer is not None:
            with self._failed_write():
                self._writer.close()
            self._writer = None

    @contextlib.contextmanager
    def _failed_write(self) -> Iterator[None]:
        """TensorFlow's write errors (a full disk) as the WriteError every writer raises."""
        try:
            yield
        except self._tf.errors.OpError as e:
            raise files.WriteError(self.folder, e.message.rsplit("; ", 1)[-1]) from None

    def finish(self) -> dict[str, Any]:
        """Closes the last shard, renames all to their final names; the manifest's split entry."""
        self._close()
        shards = []
        for i, (path, count) in enumerate(zip(self._paths, self._counts, strict=True)):
            name = schema.shard_name(self.split, i, len(self._paths), self.compression)
            final = os.path.join(self.folder, name)
            os.replace(path, final)
            shards.append(
                {
                    "name": name,
                    "num_examples": count,
                    "bytes": os.path.getsize(final),
                    "sha256": schema.file_sha256(final),
                }
            )
        return {"num_examples": sum(self._counts), "shards": shards}


def _write_splits(
    folder: str,
    source: Source,
    recipe: Recipe,
    *,
    limits: Limits,
    workers: int,
    per_shard: int,
    compression: str | None,
    progress: Progress | None,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Processes every item and writes the shards; returns the splits and the skipped inputs."""
    writers: dict[str, _SplitWriter] = {}
    skipped = []
    tasks = [(item.container, item.member) for item in source.items]
    with _processed(tasks, source.root, recipe, limits, workers) as results:
        for item, (payload, box, reason) in zip(source.items, results, strict=True):
            if progress:
                progress.update()
            if payload is None:
                skipped.append({"source_id": item.source_id, "reason": reason})
                continue
            if item.split not in writers:
                writers[item.split] = _SplitWriter(folder, item.split, per_shard, compression)
            landmarks = item.landmarks and move_landmarks(item.landmarks, box, recipe.size)
            record = schema.encode_example(
                payload,
                fmt=recipe.fmt,
                height=recipe.size,
                width=recipe.size,
                channels=schema.CHANNELS,
                source_id=item.source_id,
                index=item.index,
                attributes=item.attributes,
                landmarks=landmarks,
                identity=item.identity,
            )
            writers[item.split].write(record)
    if progress:
        progress.close()
    splits = {split: writers[split].finish() for split in schema.SPLITS if split in writers}
    return splits, skipped


# --------------------------------------------------------------------------- the output folder


def _dataset_entry(path: str, is_dir: bool) -> files.Entry:
    """Whose an entry of `out` is: a dataset's own entries are replaced with it.

    The judge (model/judge.py) is stored with the dataset and goes stale with it, and so
    does TFDS's metadata (pipeline/tfds_metadata.py); `.tmp-*` files are what a killed write
    of dataset.json leaves.
    """
    if is_dir:
        return files.Entry.OURS if path == schema.JUDGE_DIR else files.Entry.FOREIGN
    ours = (
        path == schema.MANIFEST_NAME
        or path in tfds_metadata.FILES
        or path.endswith((".tfrecord", ".tfrecord.gz"))
        or path.startswith(files.TEMP_PREFIX)
    )
    return files.Entry.OURS if ours else files.Entry.FOREIGN


def _check_out(out: str, overwrite: bool) -> None:
    """Refuses to replace a complete dataset without `overwrite`, or anything not a dataset."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise PrepareError(f"`out` {out} is a file; choose a folder path")
    if os.path.lexists(schema.manifest_path(out)) and not overwrite:
        raise PrepareError(
            f"{out} already holds a complete dataset ({schema.MANIFEST_NAME}): replace it with "
            "`overwrite`, or choose another `out`"
        )
    foreign = files.foreign_entries(out, _dataset_entry)
    if foreign:
        raise PrepareError(
            f"`out` {out} exists and holds files that are not part of a dataset "
            f"({schema._short(foreign[:3])}); refusing to replace it: choose another `out` or "
            "remove the folder yourself"
        )


# --------------------------------------------------------------------------- prepare


def summary_line(manifest: schema.Manifest, seconds: float, images: int) -> str:
    """examples per split, skipped, seconds, images/s."""
    splits = manifest.splits
    total = sum(split.num_examples for split in splits.values())
    per_split = ", ".join(f"{name} {split.num_examples}" for name, split in splits.items())
    skipped = manifest.num_skipped
    why = f" (reasons under 'skipped' in {manifest.path})" if skipped else ""
    return (
        f"prepared {total} examples ({per_split}) in {manifest.data_dir}; skipped {skipped}"
        f"{why}; {seconds:.1f} s, {images / max(seconds, 1e-9):,.0f} images/s"
    )


def prepare(
    src: str,
    out: str,
    *,
    size: int = schema.IMAGE_SIZE,
    crop: Crop = "auto",
    resample: str = schema.DEFAULT_RESAMPLE,
    fmt: str = schema.DEFAULT_FORMAT,
    quality: int = schema.DEFAULT_QUALITY,
    examples_per_shard: int = 0,
    workers: int | None = None,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    limit: int | None = None,
    compression: str | None = None,
    max_file_mb: int = MAX_FILE_MB,
    max_megapixels: int = MAX_MEGAPIXELS,
    overwrite: bool = False,
    verbose: bool = True,
) -> schema.Manifest:
    """Prepares `src` (CelebA folder/.zip or image folder) as a dataset in `out`.

    Args are the command line's settings; examples_per_shard 0 sizes shards automatically,
    workers None uses every core, compression is None or "GZIP", crop "auto" is CelebA's box
    for the official and Kaggle layouts and "center" for an image folder (see resolve_crop).
    Source images over max_file_mb or max_megapixels are skipped unread, with the reason in
    the manifest, so memory stays bounded whatever the source holds. With `verbose`,
    progress goes to stderr and a summary line to stdout. Returns the manifest as written,
    read back. Raises PrepareError for an unusable source or `out`, ValueError for bad
    arguments, files.WriteError when the dataset cannot be written (`out` is unchanged).
    """
    recipe = Recipe(size=size, crop=crop, resample=resample, fmt=fmt, quality=quality)
    limits = Limits(max_file_mb=max_file_mb, max_megapixels=max_megapixels)
    if compression not in (None, "GZIP"):
        raise ValueError(f"`compression` {schema._short(compression)} is not None or 'GZIP'")
    if examples_per_shard < 0 or (limit is not None and limit < 1):
        raise ValueError("`examples_per_shard` must be >= 0 and `limit` >= 1")
    # More processes than 4 per core only cost memory (each holds its own heap).
    workers = min(workers or default_workers(), WORKERS_PER_CORE * default_workers())
    per_shard = examples_per_shard or auto_examples_per_shard(recipe)

    def say(message: str) -> None:
        if verbose:
            print(message, file=sys.stderr, flush=True)

    out = os.path.abspath(os.path.expanduser(out))
    _check_out(out, overwrite)
    start = time.perf_counter()
    source = scan_source(src, split_fractions=split_fractions, seed=seed, limit=limit)
    recipe = dataclasses.replace(recipe, crop=resolve_crop(crop, source.layout))
    tmp = files.fresh_temp_dir(out, say)
    try:
        progress = Progress(len(source.items), "prepare") if verbose else None
        splits, skipped = _write_splits(
            tmp,
            source,
            recipe,
            limits=limits,
            workers=workers,
            per_shard=per_shard,
            compression=compression,
            progress=progress,
        )
        skipped = source.skipped + skipped
        if not splits:
            reasons = "; ".join(f"{s['source_id']}: {s['reason']}" for s in skipped[:3])
            raise PrepareError(f"none of the images of {source.path} could be used ({reasons})")
        manifest = {
            "image": {
                "height": size,
                "width": size,
                "channels": schema.CHANNELS,
                "format": fmt,
                "quality": quality,
            },
            "crop": recipe.crop if isinstance(recipe.crop, str) else list(recipe.crop),
            "resample": resample,
            "compression": compression,
            "source": {"layout": source.layout, "path": source.path, "archive": source.archive},
            "attribute_names": source.attribute_names,
            "has_landmarks": source.has_landmarks,
            "has_identity": source.has_identity,
            "seed": seed,
            "split_fractions": source.split_fractions,
            "splits": splits,
            "skipped": skipped,
        }
        # TFDS's metadata where tensorflow-datasets is installed, else one line saying how.
        checked = schema.Manifest.from_dict(
            {"schema_version": schema.SCHEMA_VERSION, **manifest}, tmp
        )
        tfds_metadata.write_if_available(checked, say)
        schema.write_manifest(tmp, manifest)  # last: its presence means the dataset is complete
        _check_out(out, overwrite)  # nothing appeared at `out` in the meantime
        files.move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    written = schema.Manifest.read(out)
    if verbose:
        print(summary_line(written, time.perf_counter() - start, len(source.items)))
    return written
