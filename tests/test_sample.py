"""sample.py on a tiny synthetic dataset and two tiny train.py runs (vae, ae) of 2 steps.

The modes run through sample.main with absl flag parsing in ONE subprocess (one TensorFlow
start-up, and sample.py's flags never meet train.py's in the pytest process); a few checks
run the real command line.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from model import workdir as wd
from model.grid import PAD
from pipeline import dataset
from tools import make_synthetic, prepare_celeba

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 32  # image side of the test dataset
Z_DIM = 8

# Runs each argv list through sample.main as the command line would, and reports exit
# codes, messages and captured output as one JSON line.
DRIVER = """
import contextlib, io, json, sys
import sample
from absl import flags

reports = {}
for name, argv in json.loads(sys.argv[1]).items():
    out, err, code, message = io.StringIO(), io.StringIO(), 0, ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["sample.py", *argv])
            sample.main(["sample.py"])
    except SystemExit as e:
        code, message = (e.code, "") if isinstance(e.code, int) else (1, str(e.code))
    except flags.Error as e:
        code, message = 1, str(e)
    reports[name] = {"code": code, "message": message, "stdout": out.getvalue(),
                     "stderr": err.getvalue()}
print(json.dumps(reports))
"""


def grid_size(rows: int, cols: int, scale: int = 1) -> tuple[int, int]:
    """(width, height) of a model.grid grid of SIDE x SIDE images."""
    return (scale * (cols * (SIDE + PAD) + PAD), scale * (rows * (SIDE + PAD) + PAD))


def train(data_dir: str, workdir: str, mode: str) -> subprocess.Popen:
    """train.py for 2 steps: a real workdir (config.json, ckpt/, model.keras)."""
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), "--data_dir", data_dir, "--workdir",
         workdir, "--mode", mode, "--epochs", "1", "--steps_per_epoch", "2", "--batch_size", "8",
         "--z_dim", str(Z_DIM), "--filters", "8,16", "--shuffle_buffer", "64", "--cache", "none"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    source, data = str(root / "source"), str(root / "data")
    make_synthetic.write_source(source, 48, seed=0, workers=1, verbose=False)
    prepare_celeba.prepare(source, data, size=SIDE, examples_per_shard=16, workers=1,
                           verbose=False)  # fmt: skip
    workdirs = {mode: str(root / mode) for mode in ("vae", "ae")}
    trainers = [train(data, path, mode) for mode, path in workdirs.items()]  # in parallel
    for trainer in trainers:
        log, _ = trainer.communicate(timeout=300)
        assert trainer.returncode == 0, log[-3000:]
    empty = root / "untrained"
    empty.mkdir()
    shutil.copy(wd.config_path(workdirs["vae"]), empty)
    source_ids = [e["source_id"].numpy().decode() for e in dataset.examples(data, "test")]
    return {"root": root, "data": data, **workdirs, "untrained": str(empty), "ids": source_ids}


@pytest.fixture(scope="module")
def runs(setup):
    vae, ae, out = setup["vae"], setup["ae"], str(setup["root"] / "out")
    eval_flags = ["--mode", "eval", "--inception_weights", "none", "--fid_samples", "5",
                  "--kid_subsets", "3"]  # fmt: skip

    def png(name: str) -> list[str]:
        return ["--out", os.path.join(out, f"{name}.png")]

    argvs = {
        "random": ["--workdir", vae, "--n", "6", "--scale", "2", "--save_individual",
                   os.path.join(out, "faces"), *png("random")],
        "random_again": ["--workdir", vae, "--n", "6", "--scale", "2", *png("random_again")],
        "reconstruct": ["--workdir", vae, "--mode", "reconstruct", "--n", "3", *png("rec")],
        "interpolate_images": ["--workdir", vae, "--mode", "interpolate", "--indices", "0,1",
                               "--steps", "5", "--method", "linear", *png("interp_images")],
        "interpolate_ids": ["--workdir", vae, "--mode", "interpolate", "--source_ids",
                            ",".join(setup["ids"][2:4]), "--steps", "3", *png("interp_ids")],
        "interpolate_random": ["--workdir", vae, "--mode", "interpolate", "--n", "2",
                               "--steps", "4", *png("interp_random")],
        "attribute": ["--workdir", vae, "--mode", "attribute", "--attribute", "Eyeglasses",
                      "--n", "2", "--strengths", "-1,0,1", *png("attribute")],
        "attribute_cached": ["--workdir", vae, "--mode", "attribute", "--n", "2",
                             *png("attribute_cached")],  # Smiling: the same cached vectors
        "traverse": ["--workdir", vae, "--mode", "traverse", "--num_dims", "3", "--steps", "4",
                     "--split", "validation", *png("traverse")],
        "boundary_vae": ["--workdir", vae, "--mode", "boundary", "--n", "4",
                         "--boundaries", "1,10", *png("boundary")],
        "boundary_ae": ["--workdir", ae, "--mode", "boundary", "--n", "4",
                        "--boundaries", "1,10"],  # default --out: <workdir>/boundary.png
        "denoise": ["--workdir", vae, "--mode", "denoise", "--n", "3", *png("denoise")],
        "denoise_mask": ["--workdir", ae, "--mode", "denoise", "--n", "3",
                         "--corruption", "mask", "--noise", "0.5", *png("denoise_mask")],
        "stats": ["--workdir", vae, "--mode", "stats", *png("stats")],
        "eval": ["--workdir", vae, *eval_flags, *png("eval")],
        "eval_again": ["--workdir", vae, *eval_flags, *png("eval_again")],
        "eval_no_weights": ["--workdir", ae, "--mode", "eval", "--inception_weights",
                            os.path.join(out, "missing.h5"), *png("eval_no_weights")],
        "bad_attribute": ["--workdir", vae, "--mode", "attribute", "--attribute", "Smilng",
                          *png("x")],
        "bad_split": ["--workdir", vae, "--mode", "reconstruct", "--split", "dev", *png("x")],
        "bad_index": ["--workdir", vae, "--mode", "reconstruct", "--indices", "0,99", *png("x")],
        "bad_id": ["--workdir", vae, "--mode", "interpolate", "--source_ids", "a.jpg,b.jpg",
                   *png("x")],
        "odd_pair": ["--workdir", vae, "--mode", "interpolate", "--indices", "1", *png("x")],
        "bad_strengths": ["--workdir", vae, "--mode", "attribute", "--strengths", "1,x",
                          *png("x")],
        "untrained": ["--workdir", setup["untrained"], *png("x")],
        "missing_workdir": ["--workdir", str(setup["root"] / "nowhere"), *png("x")],
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=ROOT, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout.strip().splitlines()[-1])
    return {"out": out, **reports}


def ok(runs: dict, name: str) -> dict:
    report = runs[name]
    assert report["code"] == 0, f"{name}: {report['message']}\n{report['stderr'][-2000:]}"
    return report


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


EXPECTED_GRIDS = {  # name: (png, rows, cols, scale)
    "random": ("random", 2, 3, 2),
    "reconstruct": ("rec", 2, 8, 1),  # 3 originals above 3 reconstructions, rows of 8
    "interpolate_images": ("interp_images", 1, 7, 1),  # original, 5 steps, original
    "interpolate_ids": ("interp_ids", 1, 5, 1),
    "interpolate_random": ("interp_random", 2, 4, 1),
    "attribute": ("attribute", 2, 4, 1),  # original + 3 strengths
    "attribute_cached": ("attribute_cached", 2, 6, 1),  # original + the 5 default strengths
    "traverse": ("traverse", 3, 4, 1),
    "boundary_vae": ("boundary", 3, 4, 1),  # b = 1, b = 10, N(0, I)
    "denoise": ("denoise", 3, 3, 1),  # clean, corrupted, reconstructed
    "denoise_mask": ("denoise_mask", 3, 3, 1),
    "eval": ("eval", 2, 8, 1),  # 5 real (padded to a row of 8) above 5 generated
}


@pytest.mark.parametrize("name", sorted(EXPECTED_GRIDS))
def test_mode_writes_grid_of_expected_size(runs, name):
    report = ok(runs, name)
    png, rows, cols, scale = EXPECTED_GRIDS[name]
    path = os.path.join(runs["out"], f"{png}.png")
    assert path in report["stdout"]
    assert image_size(path) == grid_size(rows, cols, scale)


def test_random_saves_individual_faces_and_is_reproducible(runs):
    ok(runs, "random")
    faces = sorted(os.listdir(os.path.join(runs["out"], "faces")))
    assert faces == [f"face_{i:04d}.png" for i in range(6)]
    assert image_size(os.path.join(runs["out"], "faces", faces[0])) == (SIDE, SIDE)
    ok(runs, "random_again")
    first, again = (os.path.join(runs["out"], f"{n}.png") for n in ("random", "random_again"))
    with open(first, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read()


def test_boundary_on_autoencoder_defaults_to_workdir(runs, setup):
    report = ok(runs, "boundary_ae")
    path = os.path.join(setup["ae"], "boundary.png")
    assert report["stdout"].strip() == path
    assert image_size(path) == grid_size(3, 4)


def test_attribute_vectors_equal_numpy_mean_difference_and_are_cached(runs, setup):
    ok(runs, "attribute")
    cached_run = ok(runs, "attribute_cached")
    num_train = dataset.num_examples(setup["data"], "train")
    computed = f"attribute vectors of {num_train} train images cached in"  # sample.py's note
    assert computed in runs["attribute"]["stderr"]
    assert computed not in cached_run["stderr"]  # the second run reused the file
    with np.load(os.path.join(setup["vae"], "attribute_vectors_train.npz")) as f:
        vectors, names = f["vectors"], list(f["names"])
    assert names == dataset.attribute_names(setup["data"])
    model, _ = wd.restore(setup["vae"])
    z, labels = [], []
    for images, attributes in dataset.load(
        setup["data"], "train", 16, training=False, cache="none", with_labels=True
    ):
        z.append(model.encode(images)[0].numpy())
        labels.append(attributes.numpy())
    z, labels = np.concatenate(z), np.concatenate(labels)
    checked = 0
    for k in range(len(names)):
        has, lacks = labels[:, k] == 1, labels[:, k] == 0
        if has.any() and lacks.any():
            expected = z[has].mean(0) - z[lacks].mean(0)
            np.testing.assert_allclose(vectors[k], expected, rtol=1e-4, atol=1e-5)
            checked += 1
        else:
            assert np.isnan(vectors[k]).all()
    assert checked >= 5


def test_denoise_reports_psnr(runs):
    for name in ("denoise", "denoise_mask"):
        ok(runs, name)
        with open(os.path.join(runs["out"], f"{name}.json")) as f:
            results = json.load(f)
        assert results["images"] == 3
        assert 0 < results["psnr_corrupted_db"] < 60
        assert 0 < results["psnr_reconstructed_db"] < 60
        assert "PSNR" in runs[name]["stderr"]


def test_stats_json_and_chart(runs):
    report = ok(runs, "stats")
    json_path = os.path.join(runs["out"], "stats.json")
    assert report["stdout"].split() == [os.path.join(runs["out"], "stats.png"), json_path]
    with open(json_path) as f:
        results = json.load(f)
    assert results["split"] == "test" and results["num_examples"] == 5
    assert len(results["kl_per_dim"]) == len(results["aggregate_std"]) == Z_DIM
    assert min(results["kl_per_dim"]) >= 0
    assert 0 <= results["active_units"] <= Z_DIM
    width, height = image_size(os.path.join(runs["out"], "stats.png"))
    assert width > height > 100


def test_eval_results_and_reproducibility(runs):
    report = ok(runs, "eval")
    line = json.loads(report["stdout"])  # exactly one line of JSON
    with open(line["json"]) as f:
        assert json.load(f) == line
    assert line["num_examples"] == 5 and line["fid_samples"] == 5
    assert line["elbo_nats"] < 0 and line["bits_per_dim"] > 0
    assert line["fid"] is not None and line["fid"] >= 0 and line["kid"] is not None
    again = json.loads(ok(runs, "eval_again")["stdout"])
    strip = {"grid", "json"}
    assert {k: v for k, v in again.items() if k not in strip} == {
        k: v for k, v in line.items() if k not in strip
    }
    with open(line["grid"], "rb") as a, open(again["grid"], "rb") as b:
        assert a.read() == b.read()


def test_eval_without_inception_weights_reports_other_metrics(runs):
    report = ok(runs, "eval_no_weights")
    line = json.loads(report["stdout"])
    assert line["fid"] is None and line["kid"] is None
    assert "FID/KID left out: no weights file" in report["stderr"]
    assert "--inception_weights /path/to/inception_v3_weights" in report["stderr"]
    assert np.isfinite(line["mse"]) and np.isfinite(line["elbo_nats"])


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bad_attribute", "--attribute=Smilng is not in the dataset; use one of ['5_o_Clock"),
        ("bad_split", "--split=dev: the dataset"),
        ("bad_index", "--indices=[99]: the test split has 5 images"),
        ("bad_id", "--source_ids=['a.jpg', 'b.jpg'] are not in the test split"),
        ("odd_pair", "interpolate takes images in pairs"),
        ("bad_strengths", "--strengths=1,x: give comma-separated float values"),
        ("untrained", "no checkpoint in ckpt/ and no model.keras: train it first"),
        ("missing_workdir", "config.json does not exist"),
    ],
)
def test_errors_name_the_flag_and_fix(runs, name, expected):
    report = runs[name]
    assert report["code"] != 0
    assert expected in report["message"]
    if name == "bad_split":
        assert "['test', 'train', 'validation']" in report["message"]


def test_command_line(runs, setup, tmp_path):
    """The real CLI: layouts in --help, an unknown mode, and a file identical to main()'s."""
    cli = [sys.executable, os.path.join(ROOT, "sample.py")]
    helped = subprocess.run([*cli, "--help"], capture_output=True, text=True, cwd=ROOT)
    for mode in ("random", "reconstruct", "interpolate", "attribute", "traverse", "boundary",
                 "denoise", "stats", "eval"):  # fmt: skip
        assert f"\n  {mode} " in helped.stdout
    unknown = subprocess.run([*cli, "--workdir", setup["vae"], "--mode", "faces"],
                             capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert unknown.returncode != 0
    assert "--mode=faces" in unknown.stderr and "random|reconstruct" in unknown.stderr
    out = str(tmp_path / "faces.png")
    done = subprocess.run([*cli, "--workdir", setup["vae"], "--n", "6", "--scale", "2",
                           "--out", out], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == out
    with open(out, "rb") as a, open(os.path.join(runs["out"], "random.png"), "rb") as b:
        assert a.read() == b.read()  # another process, the same seed: the same bytes
