"""tools/train_judge.py from the command line: the table it prints and its one-line errors."""

import json
import os
import shutil
import subprocess
import sys

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
    assert not os.path.exists(os.path.join(tiny_data_dir, judge.JUDGE_SUBDIR))  # --out used


def test_errors_are_one_line(tiny_data_dir, tmp_path):
    unlabelled = str(tmp_path / "unlabelled")
    shutil.copytree(tiny_data_dir, unlabelled)
    manifest = schema.read_manifest(unlabelled)
    manifest["attribute_names"] = []
    schema.write_manifest(unlabelled, manifest)
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    for args, expected in [
        (["--data_dir", str(tmp_path / "nowhere")], "train_judge: no dataset directory at"),
        (
            ["--data_dir", unlabelled],
            f"train_judge: {schema.manifest_path(unlabelled)} lists no attributes",
        ),
        (
            ["--data_dir", tiny_data_dir, "--out", str(a_file / "judge")],
            "train_judge: cannot write the judge beside",
        ),
    ]:
        done = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1].startswith(expected), done.stderr
        assert "Traceback" not in done.stderr
