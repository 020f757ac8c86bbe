"""Input pipeline throughput: one JSON line per run (dataset folder x cache mode).

    python -m tools.bench_pipeline --data_dir data/celeba96 [--data_dir data/celeba96_png]
        [--batch_size 128] [--epochs 3] [--modes jpeg-none,jpeg-memory]

Each run is one --data_dir with one mode, in a fresh subprocess, so its peak RSS is
its own: one warm-up epoch (which also fills a cache), then --epochs timed epochs of
training-mode batches (shuffled, flipped, float32). Give several --data_dir to compare
image formats, or folders of one format with different sizes to compare peak RSS.
"""

from facevae.model.console import peak_rss_mb, quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import json
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

from facevae.model.console import fail, run_app
from facevae.pipeline import dataset, schema
from facevae.pipeline.progress import Progress

CACHES = ("none", "memory", "disk")
DEFAULT_CACHES = ("none", "memory")


flags.DEFINE_multi_string("data_dir", None, "Prepared dataset; repeat the flag to compare folders.")
flags.DEFINE_string("split", "train", "Split to read.")
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1, upper_bound=4096)
flags.DEFINE_integer(
    "epochs", 3, "Timed epochs after the warm-up epoch.", lower_bound=1, upper_bound=1000
)
flags.DEFINE_list(
    "modes", [], "FORMAT-CACHE pairs, e.g. jpeg-none,jpeg-disk; default: FORMAT-none,FORMAT-memory."
)
flags.DEFINE_integer(
    "shuffle_buffer", 10_000, "Shuffle buffer, as in training.", lower_bound=1, upper_bound=1 << 24
)
flags.DEFINE_bool("in_process", False, "Run the single given run in this process.")


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
            raise app.UsageError(
                f"--modes {mode!r}: use FORMAT-CACHE with FORMAT one of {sorted(set(formats))} "
                f"(the formats of --data_dir) and CACHE one of {CACHES}"
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
    data_dir: str, split: str, cache: str, batch_size: int, epochs: int, shuffle_buffer: int
) -> dict[str, Any]:
    """Images/s over `epochs` training epochs after a warm-up epoch, and peak RSS."""
    manifest = schema.Manifest.read(data_dir)
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


def main(argv: list[str]) -> None:
    FLAGS = flags.FLAGS  # noqa: N806 - absl's name
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir is required: a folder made by tools.prepare_celeba")
    try:
        runs = plan(FLAGS.data_dir, FLAGS.modes)
    except schema.DatasetError as e:
        fail(e, "--data_dir: ")
    if FLAGS.in_process:
        if len(runs) != 1:
            raise app.UsageError("--in_process runs exactly one mode: give one --modes value")
        _, data_dir, cache = runs[0]
        try:
            result = measure(
                data_dir, FLAGS.split, cache, FLAGS.batch_size, FLAGS.epochs, FLAGS.shuffle_buffer
            )
        except schema.DatasetError as e:
            fail(e, f"--data_dir={data_dir}: ")
        print(json.dumps(result), flush=True)
        return
    for mode, data_dir, _ in runs:
        # A fresh process per run, so peak RSS of one run never shows up in another.
        command = [sys.executable, "-m", "tools.bench_pipeline", "--in_process"]
        command += [f"--data_dir={data_dir}", f"--modes={mode}", f"--split={FLAGS.split}"]
        command += [f"--batch_size={FLAGS.batch_size}", f"--epochs={FLAGS.epochs}"]
        command += [f"--shuffle_buffer={FLAGS.shuffle_buffer}"]
        code = subprocess.run(command).returncode
        if code:
            sys.exit(f"mode {mode} on {data_dir} failed (exit code {code})")
    names = ", ".join(f"{m} ({d})" for m, d, _ in runs)
    print(f"benchmarked {len(runs)} run(s): {names}", file=sys.stderr)


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
