"""Tests of the pipeline benchmark CLI on tiny raw-format datasets."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import corrupt
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from facevae.pipeline import schema
from facevae.tools import bench_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_tiny_dataset(data_dir: str, count: int = 12, size: int = 8) -> None:
    os.makedirs(data_dir)
    name = schema.shard_name("train", 0, 1)
    path = os.path.join(data_dir, name)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(count):
            pixels = np.full((size, size, 3), i, np.uint8)
            writer.write(
                schema.encode_example(
                    pixels.tobytes(),
                    fmt="raw",
                    height=size,
                    width=size,
                    channels=3,
                    source_id=f"{i}.png",
                    index=i,
                )
            )
    with open(path, "rb") as f:
        content = f.read()
    shard = {
        "name": name,
        "num_examples": count,
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    schema.write_manifest(
        data_dir,
        {
            "image": {"height": size, "width": size, "channels": 3, "format": "raw"},
            "compression": None,
            "attribute_names": [],
            "splits": {"train": {"num_examples": count, "shards": [shard]}},
        },
    )


def _bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tools.bench_pipeline", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_prints_one_json_line_per_folder_and_mode(tmp_path) -> None:
    small, large = str(tmp_path / "small"), str(tmp_path / "large")
    _write_tiny_dataset(small, count=12)
    _write_tiny_dataset(large, count=20)  # the same format: both folders must run
    result = _bench(
        f"--data_dir={small}",
        f"--data_dir={large}",
        "--batch_size=4",
        "--epochs=1",
        "--modes=raw-memory",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [(r["data_dir"], r["num_examples"]) for r in records] == [(small, 12), (large, 20)]
    assert all(r["mode"] == "raw-memory" for r in records)
    assert all(r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in records)


def test_plan_runs_every_folder_with_each_mode_of_its_format(tmp_path) -> None:
    small, large = str(tmp_path / "small"), str(tmp_path / "large")
    _write_tiny_dataset(small, count=12)
    _write_tiny_dataset(large, count=20)
    assert bench_pipeline.plan([small, large], []) == [
        ("raw-none", small, "none"),
        ("raw-memory", small, "memory"),
        ("raw-none", large, "none"),
        ("raw-memory", large, "memory"),
    ]
    assert bench_pipeline.plan([small, large], ["raw-disk"]) == [
        ("raw-disk", small, "disk"),
        ("raw-disk", large, "disk"),
    ]


def test_flags_are_defined_by_run_not_at_import() -> None:
    # train.py defines --data_dir, --batch_size and --epochs too: importing must not clash.
    code = (
        "from absl import flags\n"
        "import facevae.tools.bench_pipeline\n"
        "for name in ('data_dir', 'batch_size', 'epochs', 'split'):\n"
        "    flags.DEFINE_string(name, None, 'another CLI')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("flag", ["--epochs=0", "--batch_size=0"])
def test_rejects_non_positive_counts(flag: str) -> None:
    flag_values = flags.FlagValues()
    bench_pipeline.define_flags(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match=flag.partition("=")[0][2:]):
        flag_values(["bench_pipeline", "--data_dir=x", flag])


def test_corrupt_shard_is_named(tmp_path) -> None:
    data_dir = str(tmp_path / "tiny")
    _write_tiny_dataset(data_dir)
    path = os.path.join(data_dir, schema.shard_name("train", 0, 1))
    corrupt.flip_a_byte(path)  # a CRC error
    result = _bench(f"--data_dir={data_dir}", "--modes=raw-none", "--in_process", "--epochs=1")
    assert result.returncode != 0
    assert "train-00000-of-00001" in result.stderr and "sha256" in result.stderr


def test_rejects_unknown_mode(tmp_path) -> None:
    data_dir = str(tmp_path / "tiny")
    _write_tiny_dataset(data_dir)
    result = _bench(f"--data_dir={data_dir}", "--modes=jpeg-none")
    assert result.returncode != 0
    assert "--modes 'jpeg-none'" in result.stderr
