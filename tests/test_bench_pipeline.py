"""Smoke test of the pipeline benchmark CLI on a tiny raw-format dataset."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from pipeline import schema

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


def test_prints_one_json_line_per_mode(tmp_path) -> None:
    data_dir = str(tmp_path / "tiny")
    _write_tiny_dataset(data_dir)
    command = [sys.executable, "-m", "tools.bench_pipeline", f"--data_dir={data_dir}"]
    command += ["--batch_size=4", "--epochs=1", "--modes=raw-memory"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["mode"] == "raw-memory"
    assert record["num_examples"] == 12
    assert record["images_per_s"] > 0 and record["peak_rss_mb"] > 0


def test_rejects_unknown_mode(tmp_path) -> None:
    data_dir = str(tmp_path / "tiny")
    _write_tiny_dataset(data_dir)
    command = [sys.executable, "-m", "tools.bench_pipeline", f"--data_dir={data_dir}"]
    command += ["--modes=jpeg-none"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--modes 'jpeg-none'" in result.stderr
