"""Input pipeline throughput: one JSON line per run (dataset folder x cache mode).

    python -m tools.bench_pipeline --data_dir data/celeba96 [--data_dir data/celeba96_png]
        [--batch_size 128] [--epochs 3] [--modes jpeg-none,jpeg-memory]

Each run is one --data_dir with one mode, in a fresh subprocess, so its peak RSS is
its own: one warm-up epoch (which also fills a cache), then --epochs timed epochs of
training-mode batches (shuffled, flipped, float32). Give several --data_dir to compare
image formats, or folders of one format with different sizes to compare peak RSS.
With --resume_at F, each run instead times the first batch of a fresh training stream and
of one resumed at fraction F of a pass (the records skipped are read, not decoded).
"""

from facevae.model.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import json
import subprocess
import sys

from absl import app, flags

from facevae.model.console import fail, run_app
from facevae.pipeline import bench, schema

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
flags.DEFINE_float(
    "resume_at",
    0.0,
    "Instead: seconds to the first batch, fresh and resumed at this fraction of a pass (0-1).",
    lower_bound=0.0,
    upper_bound=1.0,
)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir is required: a folder made by tools.prepare_celeba")
    try:
        runs = bench.plan(FLAGS.data_dir, FLAGS.modes)
        if FLAGS.in_process:
            if len(runs) != 1:
                raise app.UsageError("--in_process runs exactly one mode: give one --modes value")
            _, data_dir, cache = runs[0]
            manifest = schema.Manifest.read(data_dir)
            if FLAGS.resume_at:
                result = bench.resume_latency(
                    manifest, FLAGS.split, cache, FLAGS.batch_size, FLAGS.resume_at,
                    FLAGS.shuffle_buffer,
                )  # fmt: skip
            else:
                result = bench.measure(
                    manifest, FLAGS.split, cache, FLAGS.batch_size, FLAGS.epochs,
                    FLAGS.shuffle_buffer,
                )  # fmt: skip
            print(json.dumps(result), flush=True)
            return
    except (bench.BenchError, schema.DatasetError) as e:
        fail(e, "bench_pipeline: ")
    for mode, data_dir, _ in runs:
        # A fresh process per run, so peak RSS of one run never shows up in another.
        command = [sys.executable, "-m", "tools.bench_pipeline", "--in_process"]
        command += [f"--data_dir={data_dir}", f"--modes={mode}", f"--split={FLAGS.split}"]
        command += [f"--batch_size={FLAGS.batch_size}", f"--epochs={FLAGS.epochs}"]
        command += [f"--shuffle_buffer={FLAGS.shuffle_buffer}", f"--resume_at={FLAGS.resume_at}"]
        code = subprocess.run(command).returncode
        if code:
            sys.exit(f"mode {mode} on {data_dir} failed (exit code {code})")
    names = ", ".join(f"{m} ({d})" for m, d, _ in runs)
    print(f"benchmarked {len(runs)} run(s): {names}", file=sys.stderr)


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
