"""Smoke test of the training benchmark CLI: one JSON line, tiny settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.bench_train", *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_prints_one_json_line_with_both_setups():
    result = run_bench(
        "--batch_size=2",
        "--steps=1",
        "--warmup_steps=1",
        "--num_images=4",
        "--z_dim=8",
        "--variants=custom,baseline",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["benchmark"] == "train" and report["batch_size"] == 2
    for variant in ("custom", "baseline"):
        assert report[variant]["images_per_s"] > 0
        assert report[variant]["peak_rss_mb"] > 0
    assert report["speedup_custom"] > 0
    assert "custom_xla" not in report
    assert "bench_train: custom" in result.stderr


def test_unknown_variant_is_a_usage_error():
    result = run_bench("--variants=custom,fast")
    assert result.returncode != 0
    assert "--variants: unknown ['fast']" in result.stderr
