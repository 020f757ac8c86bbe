"""pipeline/bench.py in-process, and tools/bench_pipeline end to end, on tiny raw datasets."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import cli_driver
import corrupt
import numpy as np
import pytest
import tensorflow as tf

from facevae.pipeline import bench, schema

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
    assert bench.plan([small, large], []) == [
        ("raw-none", small, "none"),
        ("raw-memory", small, "memory"),
        ("raw-none", large, "none"),
        ("raw-memory", large, "memory"),
    ]
    assert bench.plan([small, large], ["raw-disk"]) == [
        ("raw-disk", small, "disk"),
        ("raw-disk", large, "disk"),
    ]
    with pytest.raises(bench.BenchError, match="`modes` 'jpeg-none'"):
        bench.plan([small], ["jpeg-none"])


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_measure_reads_every_example_each_epoch(tmp_path, cache: str) -> None:
    data_dir = str(tmp_path / "tiny")
    _write_tiny_dataset(data_dir, count=12)
    result = bench.measure(schema.Manifest.read(data_dir), "train", cache, 4, 2, 100)
    assert result["mode"] == f"raw-{cache}" and result["num_examples"] == 12
    assert result["epochs"] == 2 and len(result["epoch_s"]) == 2
    assert result["images_per_s"] > 0 and result["cpu_us_per_image"] > 0


def test_bad_flags_modes_and_shards_are_one_line(tmp_path) -> None:
    data_dir = str(tmp_path / "tiny")
    _write_tiny_dataset(data_dir)
    corrupted = str(tmp_path / "corrupt")
    _write_tiny_dataset(corrupted)
    corrupt.flip_a_byte(os.path.join(corrupted, schema.shard_name("train", 0, 1)))  # a CRC error
    lines = {
        "epochs": [f"--data_dir={data_dir}", "--epochs=0"],
        "batch": [f"--data_dir={data_dir}", "--batch_size=0"],
        "mode": [f"--data_dir={data_dir}", "--modes=jpeg-none"],
        "corrupt": [f"--data_dir={corrupted}", "--modes=raw-none", "--in_process", "--epochs=1"],
    }
    done = subprocess.run(
        [sys.executable, "-c", cli_driver.script("tools.bench_pipeline"), json.dumps(lines)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reports = json.loads(done.stdout.strip().splitlines()[-1])
    for name, flag in (("epochs", "epochs"), ("batch", "batch_size")):
        assert reports[name]["code"] != 0 and flag in reports[name]["message"], name
    assert reports["mode"]["code"] != 0 and "--modes 'jpeg-none'" in reports["mode"]["message"]
    message = reports["corrupt"]["message"]
    assert reports["corrupt"]["code"] != 0
    assert "train-00000-of-00001" in message and "sha256" in message and "\n" not in message
