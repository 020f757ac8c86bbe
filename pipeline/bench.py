"""Input-pipeline throughput, measured: the library of tools/bench_pipeline.

- plan: which (mode, folder, cache) runs a list of dataset folders and modes asks for;
- measure: images/s and CPU time per image of training-mode batches (shuffled, flipped,
  float32) over timed passes after a warm-up pass that also fills a cache, and peak RSS.

Peak RSS is the process's: run one measurement per process to compare memory.
"""

from __future__ import annotations

import resource
import tempfile
import time
from typing import Any

from facevae.pipeline import dataset, schema
from facevae.pipeline.progress import Progress


class BenchError(ValueError):
    """Runs that cannot be planned as asked; the message names the setting."""


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CACHES = ("none", "memory", "disk")
DEFAULT_CACHES = ("none", "memory")


def _format(data_dir: str) -> str:
    return schema.Manifest.read(data_dir).image_format


def plan(data_dirs: list[str], modes: list[str]) -> list[tuple[str, str, str]]:
    """(mode, data_dir, cache) runs: for each data_dir, each mode of its image format.

    Without `modes`, every data_dir runs with the caches in DEFAULT_CACHES. Folders of one
    format each get their own runs (e.g. 2,000 and 20,000 examples, to compare peak RSS).
    """
    formats = [_format(d) for d in data_dirs]
    for mode in modes:
        fmt, _, cache = mode.partition("-")
        if fmt not in formats or cache not in CACHES:
            raise BenchError(
                f"`modes` {mode[:80]!r}: use FORMAT-CACHE with FORMAT one of "
                f"{sorted(set(formats))} (the formats of `data_dir`) and CACHE one of {CACHES}"
            )
    runs = []
    for data_dir, fmt in zip(data_dirs, formats, strict=True):
        wanted = modes or [f"{fmt}-{cache}" for cache in DEFAULT_CACHES]
        runs += [(m, data_dir, m.partition("-")[2]) for m in wanted if m.partition("-")[0] == fmt]
    return runs


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    manifest: schema.Manifest,
    split: str,
    cache: str,
    batch_size: int,
    epochs: int,
    shuffle_buffer: int,
) -> dict[str, Any]:
    """Images/s over `epochs` training epochs after a warm-up epoch, and peak RSS."""
    data_dir = manifest.data_dir
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        mode = f"disk:{folder}" if cache == "disk" else cache
        ds = dataset.load(
            manifest,
            split,
            batch_size,
            training=True,
            cache=mode,
            shuffle_buffer=shuffle_buffer,
            repeat=False,
            flip=True,
        )
        total = manifest.num_examples(split)
        with dataset.explain_corrupt_shards(manifest):  # a corrupt record: name the shard
            start = time.perf_counter()
            for _ in ds:  # warm-up: graph tracing, autotuning, filling the cache
                pass
            warmup = time.perf_counter() - start
            progress = Progress(epochs * total, f"{manifest.image_format}-{cache}")
            seconds = []
            cpu_start = _cpu_seconds()
            for _ in range(epochs):
                start = time.perf_counter()
                for batch in ds:
                    progress.update(int(batch.shape[0]))
                seconds.append(time.perf_counter() - start)
            progress.close()
            cpu = _cpu_seconds() - cpu_start
    images = progress.count
    return {
        "benchmark": "pipeline",
        "mode": f"{manifest.image_format}-{cache}",
        "data_dir": data_dir,
        "split": split,
        "num_examples": total,
        "batch_size": batch_size,
        "epochs": epochs,
        "images_per_s": round(images / sum(seconds)),
        "epoch_s": [round(s, 3) for s in seconds],
        # CPU time per image is what the pipeline costs however busy the machine is.
        "cpu_us_per_image": round(cpu / images * 1e6, 1),
        "warmup_s": round(warmup, 3),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def resume_latency(
    manifest: schema.Manifest,
    split: str,
    cache: str,
    batch_size: int,
    fraction: float,
    shuffle_buffer: int,
) -> dict[str, Any]:
    """Seconds from building the training stream to its first batch, started at the
    beginning and at `fraction` of the first pass (a resumed run's start_batch): what a
    resume costs in input, since the records it skips are read but not decoded."""
    total = manifest.num_examples(split)
    start_batch = int(fraction * total) // batch_size
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        mode = f"disk:{folder}" if cache == "disk" else cache
        # The first build pays one-time tracing: it is run once untimed.
        for label, start in (("warm-up", 0), ("fresh", 0), ("resumed", start_batch)):
            begin = time.perf_counter()
            ds = dataset.load(
                manifest, split, batch_size, training=True, cache=mode, seed=0,
                shuffle_buffer=shuffle_buffer, start_batch=start,
            )  # fmt: skip
            with dataset.explain_corrupt_shards(manifest):
                next(iter(ds))
            seconds[label] = time.perf_counter() - begin
    return {
        "benchmark": "resume",
        "mode": f"{manifest.image_format}-{cache}",
        "data_dir": manifest.data_dir,
        "num_examples": total,
        "batch_size": batch_size,
        "resume_fraction": fraction,
        "start_batch": start_batch,
        "fresh_first_batch_s": round(seconds["fresh"], 3),
        "resumed_first_batch_s": round(seconds["resumed"], 3),
        "peak_rss_mb": round(peak_rss_mb()),
    }
