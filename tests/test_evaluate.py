"""evaluate.py end to end: a tiny train.py run, a judge, the stand-in Inception graph.

The run and the judge are trained in-process; the success case runs the real command line;
the error cases run through evaluate.main with absl flag parsing in one subprocess (one
TensorFlow start-up).
"""

import json
import os
import shutil
import subprocess
import sys

import cli_driver
import inception_standin
import pytest

from facevae.model import judge
from facevae.model.config import TrainConfig
from facevae.model.trainer import train_and_evaluate
from facevae.pipeline import schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = cli_driver.script("facevae.evaluate")


@pytest.fixture(scope="module")
def setup(tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data, workdir = str(root / "data"), str(root / "run")
    shutil.copytree(tiny_data_dir, data)
    config = TrainConfig(
        data_dir=data, epochs=1, steps_per_epoch=2, z_dim=4, filters=(8, 16), batch_size=8
    )
    train_and_evaluate(config, workdir)
    judge.train(schema.Manifest.read(data), epochs=1, batch_size=16, width=8, verbose=0)
    graph = inception_standin.write_graph(str(root / "classify_image_graph_def.pb"))
    return {"root": root, "data": data, "workdir": workdir, "graph": graph}


def test_command_line_prints_one_json_line_and_writes_it(setup):
    out = str(setup["root"] / "results" / "eval.json")
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "evaluate.py"),
            "--workdir",
            setup["workdir"],
            "--inception_weights",
            setup["graph"],
            "--cache_dir",
            str(setup["root"] / "cache"),
            "--fid_samples",
            "5",
            "--kid_subsets",
            "2",
            "--edit_images",
            "4",
            "--out",
            out,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.splitlines()) == 1
    line = json.loads(done.stdout)
    with open(out) as f:
        assert json.load(f) == line
    assert line["data_dir"] == setup["data"]  # the run's own dataset by default
    assert line["num_examples"] == 5 and line["elbo_nats"] < 0 and line["psnr_db"] > 0
    assert line["fid"] >= 0 and line["kid"] is not None
    protocol = line["fid_protocol"]
    assert protocol["generated"] == protocol["real"] == 5
    assert protocol["network"].startswith("inception-2015-12-05 pool_3")
    assert protocol["resize"].startswith("bilinear to 299x299 inside the graph")
    for key in ("judge_fd", "judge_recon_accuracy", "judge_edit_success"):
        assert line[key] is not None, key
    helped = subprocess.run(
        [sys.executable, os.path.join(ROOT, "evaluate.py"), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "TTUR's Inception graph" in helped.stdout and "--inception_weights" in helped.stdout


@pytest.fixture(scope="module")
def runs(setup):
    workdir, root = setup["workdir"], setup["root"]
    common = ["--cache_dir", str(root / "cache"), "--fid_samples", "4", "--kid_subsets", "2"]
    argvs = {
        "gmm": [
            "--workdir",
            workdir,
            *common,
            "--inception_weights",
            "none",
            "--prior",
            "gmm",
            "--gmm_components",
            "2",
            "--out",
            str(root / "gmm.json"),
        ],
        "missing_weights": ["--workdir", workdir, *common, "--inception_weights", "/missing.h5"],
        "bad_temperature": ["--workdir", workdir, *common, "--temperature", "inf"],
        "out_is_a_folder": [
            "--workdir",
            workdir,
            *common,
            "--inception_weights",
            "none",
            "--out",
            str(root),
        ],
        "bad_split": ["--workdir", workdir, *common, "--split", "dev"],
        "missing_workdir": ["--workdir", str(root / "nowhere")],
        "bad_prior": ["--workdir", workdir, "--prior", "uniform"],
    }
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_gmm_prior_from_the_command_line(runs, setup):
    report = runs["gmm"]
    assert report["code"] == 0, report["message"] + report["stderr"][-2000:]
    line = json.loads(report["stdout"])
    assert line["prior"] == "gmm" and line["fid"] is None
    assert os.path.isfile(os.path.join(setup["workdir"], "prior_gmm.npz"))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("missing_weights", "evaluate.py: --inception_weights=/missing.h5: no file at /missing.h5"),
        ("bad_temperature", "evaluate.py: --temperature=inf: give a number in (0, 10.0]"),
        ("out_is_a_folder", "is a folder: give a file name such as eval.json"),
        ("bad_split", "evaluate.py: --split=dev: split 'dev' is not in the dataset"),
        ("missing_workdir", "config.json does not exist"),
        ("bad_prior", "--prior"),
    ],
)
def test_errors_are_one_line_naming_the_flag(runs, name, expected):
    report = runs[name]
    assert report["code"] != 0
    assert expected in report["message"]
    assert "\n" not in report["message"].strip()
    assert "Traceback" not in report["stderr"]
