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

import cli_driver
import corrupt
import numpy as np
import pytest
from PIL import Image

from facevae.model import workdir as wd
from facevae.model.grid import PAD
from facevae.pipeline import dataset
from facevae.tools import make_synthetic, prepare_celeba

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 32  # image side of the test dataset
Z_DIM = 8

DRIVER = cli_driver.script("sample")


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
def hostile(setup):
    """Copies of the dataset with a corrupt test or train shard, a read-only copy of the vae
    run (a read-only tmpfs as root, where folder permissions do not bind; None if neither
    works), and a file and a folder in the way of --out."""
    root = setup["root"]
    made = {}
    for split in ("test", "train"):
        copy = shutil.copytree(setup["data"], root / f"corrupt_{split}")
        corrupt.flip_a_byte(str(min(copy.glob(f"{split}-*.tfrecord"))))
        made[f"corrupt_{split}"] = str(copy)
    read_only, mounted = root / "read_only", False
    read_only.mkdir()
    if os.geteuid() == 0:
        mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(read_only)]
        mounted = subprocess.run(mount, capture_output=True).returncode == 0
        if mounted:
            shutil.copytree(setup["vae"], read_only / "vae")
            remount = ["mount", "-o", "remount,ro", str(read_only)]
            mounted = subprocess.run(remount, capture_output=True).returncode == 0
    else:
        shutil.copytree(setup["vae"], read_only / "vae")
        for folder, _, _ in os.walk(read_only):
            os.chmod(folder, 0o555)
    writable = os.access(read_only / "vae", os.W_OK) if (read_only / "vae").exists() else True
    made["read_only_vae"] = None if writable else str(read_only / "vae")
    made["read_only_listing"] = sorted(os.listdir(read_only / "vae")) if not writable else []
    (root / "a_file").write_text("in the way")
    made["a_file"], made["a_folder"] = str(root / "a_file"), str(root / "out")
    yield made
    if mounted:
        subprocess.run(["umount", "-l", str(read_only)], check=False)
    elif os.geteuid() != 0:
        for folder, _, _ in os.walk(read_only):
            os.chmod(folder, 0o755)


def hostile_argvs(setup: dict, hostile: dict, png) -> dict[str, list[str]]:
    """Flags and inputs a user can get wrong: each must stop in one line, before any work."""

    def argv(flags: str, *more: str, out: bool = True) -> list[str]:
        return ["--workdir", setup["vae"], *flags.split(), *more, *(png("x") if out else [])]

    argvs = {
        "temperature_inf": argv("--temperature inf"),
        "temperature_nan": argv("--temperature nan"),
        "strengths_nan": argv("--mode attribute --strengths 1,nan"),
        "boundaries_bad": argv("--mode boundary --boundaries=-5,nan"),
        "n_huge": argv("--n 100000"),
        "grid_huge": argv("--mode interpolate --n 1000 --steps 64"),
        "scale_huge": argv("--n 1000 --scale 16"),
        "max_examples_huge": argv("--mode stats --max_examples 3000000"),
        "out_folder": argv("--out", hostile["a_folder"], out=False),
        "out_under_file": argv("--out", os.path.join(hostile["a_file"], "x.png"), out=False),
        "corrupt_reconstruct": argv("--mode reconstruct --data_dir", hostile["corrupt_test"]),
        "corrupt_stats": argv("--mode stats --data_dir", hostile["corrupt_test"]),
        "corrupt_attribute": argv("--mode attribute --data_dir", hostile["corrupt_train"]),
    }
    if hostile["read_only_vae"]:
        argvs["read_only_attribute"] = [
            *("--workdir", hostile["read_only_vae"], "--mode", "attribute", "--n", "2"),
            *png("read_only_attribute"),
        ]
    return argvs


@pytest.fixture(scope="module")
def runs(setup, hostile):
    vae, ae, out = setup["vae"], setup["ae"], str(setup["root"] / "out")

    def png(name: str) -> list[str]:
        return ["--out", os.path.join(out, f"{name}.png")]

    argvs = {
        "random": ["--workdir", vae, "--n", "6", "--scale", "2", "--save_individual",
                   os.path.join(out, "faces"), *png("random")],
        "random_again": ["--workdir", vae, "--n", "6", "--scale", "2", *png("random_again")],
        "random_gmm": ["--workdir", vae, "--n", "6", "--scale", "2", "--prior", "gmm",
                       *png("random_gmm")],
        "random_gmm_again": ["--workdir", vae, "--n", "6", "--scale", "2", "--prior", "gmm",
                             *png("random_gmm_again")],
        "random_gmm_ae": ["--workdir", ae, "--n", "4", "--prior", "gmm", *png("random_gmm_ae")],
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
        **hostile_argvs(setup, hostile, png),
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
    "random_gmm": ("random_gmm", 2, 3, 2),
    "random_gmm_ae": ("random_gmm_ae", 2, 2, 1),
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


def test_gmm_prior_is_fitted_once_cached_and_reproducible(runs, setup):
    first, again = ok(runs, "random_gmm"), ok(runs, "random_gmm_again")
    assert "fitted a" in first["stderr"] and "fitted a" not in again["stderr"]  # the cache
    assert os.path.isfile(os.path.join(setup["vae"], "prior_gmm.npz"))
    paths = [os.path.join(runs["out"], f"{n}.png") for n in ("random_gmm", "random_gmm_again")]
    with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
        assert a.read() == b.read()
    with open(os.path.join(runs["out"], "random.png"), "rb") as normal, open(paths[0], "rb") as gmm:
        assert normal.read() != gmm.read()  # the same seed and size, another prior
    ok(runs, "random_gmm_ae")  # a plain autoencoder becomes generative the same way


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
                 "denoise", "stats"):  # fmt: skip
        assert f"\n  {mode} " in helped.stdout
    unwrapped = " ".join(helped.stdout.split())
    for limit in ("at most 1024", "2..64", "1..16", "at most 4096 images of 16 megapixels"):
        assert limit in unwrapped  # every cap a user can hit is in --help
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


ONE_LINE_ERRORS = {  # name: what the one line must say
    "temperature_inf": "--temperature must be a positive finite number",
    "temperature_nan": "--temperature must be a positive finite number",
    "strengths_nan": "--strengths=1,nan: nan is not a finite number",
    "boundaries_bad": "--boundaries=-5,nan: -5 is not a positive finite number",
    "n_huge": "--n must be in 0..1024",
    "grid_huge": "grid of 64,000 images",
    "scale_huge": "(262.14 at --scale=16); the limits are 4,096 images, 16 megapixels (64",
    "max_examples_huge": "--max_examples=3000000: at z_dim 8 at most 2,097,152 images",
    "out_folder": "is a folder: give the path of a file",
    "out_under_file": "a_file is a file",
    "corrupt_reconstruct": "test-00000-of-00001.tfrecord has a different sha256",
    "corrupt_stats": "test-00000-of-00001.tfrecord has a different sha256",
    "corrupt_attribute": "train-00000-of-00003.tfrecord has a different sha256",
}


@pytest.mark.parametrize("name", sorted(ONE_LINE_ERRORS))
def test_bad_flags_and_corrupt_shards_stop_in_one_line(runs, name):
    report = runs[name]
    assert report["code"] != 0
    assert ONE_LINE_ERRORS[name] in report["message"]
    assert "\n" not in report["message"].strip()
    assert "Traceback" not in report["stderr"]
    assert not os.path.exists(os.path.join(runs["out"], "x.png"))  # nothing written
    if name.startswith("corrupt"):
        assert "--overwrite" in report["message"]  # the fix: prepare the dataset again


def test_attribute_on_a_read_only_workdir_warns_and_goes_on(runs, hostile):
    if not hostile["read_only_vae"]:
        pytest.skip("no read-only folder here (root without a tmpfs mount)")
    report = ok(runs, "read_only_attribute")
    assert "attribute vectors not cached" in report["stderr"]
    assert os.path.isfile(os.path.join(runs["out"], "read_only_attribute.png"))
    assert sorted(os.listdir(hostile["read_only_vae"])) == hostile["read_only_listing"]
