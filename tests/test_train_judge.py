"""tools/train_judge.py from the command line: the table it prints and its one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import cli_driver

from facevae.model import judge
from facevae.pipeline import schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "tools.train_judge"]


def test_trains_stores_and_prints_the_report(tiny_data_dir, tmp_path):
    out = str(tmp_path / "judge")
    done = subprocess.run(
        [
            *CLI,
            "--data_dir",
            tiny_data_dir,
            "--out",
            out,
            "--epochs",
            "1",
            "--batch_size",
            "8",
            "--width",
            "8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["attribute", "accuracy", "majority"]
    assert any(line.startswith("Attractive") and "constant: left out" in line for line in lines)
    assert lines[-1].startswith("mean over ") and "validation images" in lines[-1]
    with open(os.path.join(out, judge.REPORT_FILE)) as f:
        report = json.load(f)
    assert len(report["attribute_names"]) == 40
    assert sorted(os.listdir(out)) == sorted([judge.MODEL_FILE, judge.REPORT_FILE])
    assert not os.path.exists(os.path.join(tiny_data_dir, schema.JUDGE_DIR))  # --out used


def test_errors_are_one_line(tiny_data_dir, tmp_path):
    unlabelled = str(tmp_path / "unlabelled")
    shutil.copytree(tiny_data_dir, unlabelled)
    manifest = dict(schema.Manifest.read(unlabelled).raw)
    manifest["attribute_names"] = []
    schema.write_manifest(unlabelled, manifest)
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    lines = {
        "nowhere": ["--data_dir", str(tmp_path / "nowhere")],
        "unlabelled": ["--data_dir", unlabelled],
        "out": ["--data_dir", tiny_data_dir, "--out", str(a_file / "judge")],
        "seed": ["--data_dir", tiny_data_dir, "--seed=-1"],
        "epochs": ["--data_dir", tiny_data_dir, f"--epochs={'9' * 10_000}"],
    }
    expected = {
        "nowhere": "train_judge: no dataset directory at",
        "unlabelled": f"train_judge: {schema.manifest_path(unlabelled)} lists no attributes",
        "out": "train_judge: cannot write the judge beside",
        "seed": "--seed must be in 0..4294967295",
        "epochs": "--epochs",
    }
    done = subprocess.run(
        [sys.executable, "-c", cli_driver.script("tools.train_judge"), json.dumps(lines)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout.strip().splitlines()[-1])
    for name, start in expected.items():
        report = reports[name]
        assert report["code"] == 1, (name, report)
        message = " ".join(report["message"].split())
        assert start in message and len(message) < 400, (name, message)
        assert "Traceback" not in report["stderr"], name
