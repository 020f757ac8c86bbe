"""model/bench.py (the FLOP count) and tools/bench_train end to end (its JSON lines).

Timings are not checked (benchmarks print numbers, tests check their shape and sanity).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cli_driver
import pytest

from facevae.model import bench
from facevae.model.bench import BASELINES, VARIANTS, training_flops_per_image
from facevae.model.networks import NetworkConfig

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


def test_flops_of_the_default_network_by_hand():
    conv = 2 * 9 * (48 * 48 * 3 * 32 + 24 * 24 * 32 * 64 + 12 * 12 * 64 * 128 + 6 * 6 * 128 * 256)
    heads = 2 * 2 * 9216 * 256
    dense = 2 * 256 * 9216
    # Transposed convolutions run over their input grid: 6x6 -> 12x12 ... 48x48 -> 96x96.
    deconv = 2 * 9 * (6 * 6 * 256 * 128 + 12 * 12 * 128 * 64 + 24 * 24 * 64 * 32 + 48 * 48 * 32 * 3)
    forward = conv + heads + dense + deconv
    first_conv = 2 * 9 * 48 * 48 * 3 * 32  # no input gradient for the images
    flops = training_flops_per_image(NetworkConfig())
    assert flops == 3 * forward - first_conv
    assert 0.44e9 < flops < 0.45e9  # the ~0.45 GFLOP per training image of issue 11


def check_reports(reports: list[dict], variants: list[str], rounds: int) -> None:
    """The shape and sanity of benchmark's reports of a tiny run (batch 4, 2 steps)."""
    assert [r["variant"] for r in reports] == variants
    flops = training_flops_per_image(NetworkConfig((32, 32, 3), filters=(8, 16), z_dim=8))
    for report in reports:
        name = report["variant"]
        assert report["benchmark"] == "train" and report["batch_size"] == 4, name
        assert report["image_shape"] == [32, 32, 3] and report["filters"] == [8, 16], name
        assert report["images_per_s"] > 0 and report["peak_rss_mb"] > 100, name
        # ms/step and img/s describe the same steps.
        assert report["ms_per_step"] == pytest.approx(4000 / report["images_per_s"], rel=0.02)
        assert report["flops_per_image"] == flops
        assert report["gflops_per_s"] == pytest.approx(
            report["images_per_s"] * flops / 1e9, abs=0.06
        )
        assert report["matmul_peak_gflops"] > 1
        assert 0 < report["share_of_peak"] < 1, name
        assert len(report["rounds_images_per_s"]) == rounds
        others = {f"speedup_vs_{b}" for b in BASELINES if b != name and b in variants}
        assert {k for k in report if k.startswith("speedup_vs_")} == others, name
        assert all(report[key] > 0 for key in others)
    if "train_py" in variants:
        train_py = reports[variants.index("train_py")]["train_py"]
        assert train_py["batch_size"] == 4 and train_py["steps"] == 2


def test_benchmark_reports_the_other_variants(tiny_data_dir, monkeypatch):
    """The library on the variants the command line test leaves out, in this process (the
    command line runs each in a fresh one, for its own peak RSS)."""
    variants = ["seed", "fit"]
    monkeypatch.setattr(bench, "_in_fresh_process", lambda function, *a, **k: function(*a, **k))
    network = NetworkConfig((32, 32, 3), filters=(8, 16), z_dim=8)
    reports = bench.benchmark(
        variants,
        1,
        network=network,
        data_dir=tiny_data_dir,
        batch_size=4,
        steps=2,
        warmup_steps=1,
        num_images=8,
        mixed_precision="none",
        steps_per_execution=1,
        jit_compile="false",
    )
    check_reports(reports, variants, rounds=1)


def test_prints_one_json_line_per_variant(tiny_data_dir):
    variants = ["seed_keras_bn", "train_py"]  # with the library test's: every variant
    assert sorted([*variants, "seed", "fit"]) == sorted(VARIANTS)
    result = run_bench(
        f"--data_dir={tiny_data_dir}",
        f"--variants={','.join(variants)}",
        "--batch_size=4",
        "--steps=2",
        "--warmup_steps=1",
        "--num_images=8",
        "--z_dim=8",
        "--filters=8,16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.strip().splitlines()]
    check_reports(reports, variants, rounds=1)
    assert "bench_train: seed_keras_bn" in result.stderr


@pytest.fixture(scope="module")
def error_reports(tmp_path_factory) -> dict:
    """The bad command lines, all in one process (cli_driver)."""
    nowhere = str(tmp_path_factory.mktemp("bench") / "nowhere")
    lines = {
        "variants": ["--variants=seed,fast"],
        "num_images": ["--num_images=4", "--batch_size=8"],
        "filters": ["--filters=8,x"],
        "missing": [f"--data_dir={nowhere}", "--variants=seed"],
    }
    reports = cli_driver.run_many({"tools.bench_train": {"lines": lines}}, timeout=300)
    return {"reports": reports, "nowhere": nowhere}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("variants", "--variants: unknown ['fast']"),
        ("num_images", "--num_images=4 is below --batch_size=8"),
        ("filters", "--filters="),
    ],
)
def test_bad_flags_are_usage_errors(error_reports, name, message):
    report = error_reports["reports"][f"tools.bench_train {name}"]
    assert report["code"] != 0
    assert message in report["message"]
    assert "Traceback" not in report["stderr"] and report["code"] != 99


def test_a_missing_dataset_is_one_line(error_reports):
    report = error_reports["reports"]["tools.bench_train missing"]
    assert report["code"] != 0 and report["code"] != 99
    assert "Traceback" not in report["stderr"]
    assert error_reports["nowhere"] in report["message"].strip().splitlines()[-1]
