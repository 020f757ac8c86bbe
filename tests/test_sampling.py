"""model/sampling.py in-process, as from a notebook, on the tiny synthetic dataset and two tiny
runs (vae, ae) of 2 steps trained in-process; sample.py's command line end to end through
tests/cli_driver.py: every command line, then --help, in one process (one TensorFlow start-up).
"""

import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys

import cli_driver
import corrupt
import numpy as np
import pytest
from conftest import TINY_SIZE
from PIL import Image

from facevae.model import codes, console, sampling
from facevae.model import workdir as wd
from facevae.model.grid import PAD
from facevae.model.trainer import TrainConfig, train_and_evaluate
from facevae.pipeline import dataset, files
from facevae.pipeline.schema import DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = TINY_SIZE  # image side of the test dataset
Z_DIM = 8
ERRORS = (sampling.SampleError, DatasetError, wd.WorkdirError, codes.CodesError, files.WriteError)


def grid_size(rows: int, cols: int, scale: int = 1) -> tuple[int, int]:
    """(width, height) of a model.grid grid of SIDE x SIDE images."""
    return (scale * (cols * (SIDE + PAD) + PAD), scale * (rows * (SIDE + PAD) + PAD))


def tiny(data_dir: str, **changes) -> TrainConfig:
    """2 steps of 8 images: a real workdir (config.json, ckpt/, model.keras)."""
    config = TrainConfig(data_dir=data_dir, batch_size=8, z_dim=Z_DIM, filters=(8, 16),
                         shuffle_buffer=64, cache="none", epochs=1, steps_per_epoch=2)  # fmt: skip
    return dataclasses.replace(config, **changes)


@pytest.fixture(scope="module")
def setup(tiny_data_dir, tiny_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    workdirs = {mode: str(root / mode) for mode in ("vae", "ae")}
    for mode, path in workdirs.items():
        train_and_evaluate(tiny(tiny_data_dir, mode=mode), path)
    empty = root / "untrained"
    empty.mkdir()
    shutil.copy(wd.config_path(workdirs["vae"]), empty)
    source_ids = [e["source_id"].numpy().decode() for e in dataset.examples(tiny_manifest, "test")]
    return {"root": root, "data": tiny_data_dir, **workdirs, "untrained": str(empty),
            "ids": source_ids}  # fmt: skip


@pytest.fixture(scope="module")
def hostile(setup):
    """Copies of the dataset with a corrupt test or train shard, a read-only copy of the vae
    run (a read-only tmpfs as root, where folder permissions do not bind; None if neither
    works), and a file and a folder in the way of `out`."""
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


def sample(**settings) -> dict:
    """sampling.run(SampleConfig(**settings)) with its stderr: {"code", "paths", "error",
    "message", "stderr"}; a library error is caught (code 1), anything else fails the test."""
    err = io.StringIO()
    report = {"code": 0, "paths": [], "error": None, "message": ""}
    with contextlib.redirect_stderr(err):
        try:
            report["paths"] = sampling.run(sampling.SampleConfig(**settings))
        except ERRORS as e:
            report.update(code=1, error=e, message=str(e))
    return {**report, "stderr": err.getvalue()}


def hostile_settings(setup: dict, hostile: dict, png) -> dict[str, dict]:
    """Settings and inputs a user can get wrong: each must stop in one line, before any work."""
    vae = {"workdir": setup["vae"], **png("x")}
    settings = {
        "temperature_inf": {**vae, "temperature": float("inf")},
        "temperature_nan": {**vae, "temperature": float("nan")},
        "strengths_nan": {**vae, "mode": "attribute", "strengths": ["1", "nan"]},
        "boundaries_bad": {**vae, "mode": "boundary", "boundaries": ["-5", "nan"]},
        "n_huge": {**vae, "n": 100000},
        "grid_huge": {**vae, "mode": "interpolate", "n": 1000, "steps": 64},
        "scale_huge": {**vae, "n": 1000, "scale": 16},
        "max_examples_huge": {**vae, "mode": "stats", "max_examples": 3000000},
        "out_folder": {"workdir": setup["vae"], "out": hostile["a_folder"]},
        "out_under_file": {"workdir": setup["vae"],
                           "out": os.path.join(hostile["a_file"], "x.png")},
        "corrupt_reconstruct": {**vae, "mode": "reconstruct", "data_dir": hostile["corrupt_test"]},
        "corrupt_stats": {**vae, "mode": "stats", "data_dir": hostile["corrupt_test"]},
        # The ae run: no attribute vectors cached (the vae run's would be served, as the
        # manifest is unchanged), so the corrupt train split is read.
        "corrupt_attribute": {"workdir": setup["ae"], **png("x"), "mode": "attribute",
                              "data_dir": hostile["corrupt_train"]},
    }  # fmt: skip
    if hostile["read_only_vae"]:
        settings["read_only_attribute"] = {
            "workdir": hostile["read_only_vae"], "mode": "attribute", "n": 2,
            **png("read_only_attribute"),
        }  # fmt: skip
    return settings


@pytest.fixture(scope="module")
def runs(setup, hostile):
    """Every picture and error case, in this order (the second of a pair reuses the caches)."""
    vae, ae, out = setup["vae"], setup["ae"], str(setup["root"] / "out")

    def png(name: str) -> dict:
        return {"out": os.path.join(out, f"{name}.png")}

    settings = {
        "random": {"workdir": vae, "n": 6, "scale": 2,
                   "save_individual": os.path.join(out, "faces"), **png("random")},
        "random_again": {"workdir": vae, "n": 6, "scale": 2, **png("random_again")},
        "random_gmm": {"workdir": vae, "n": 6, "scale": 2, "prior": "gmm", **png("random_gmm")},
        "random_gmm_again": {"workdir": vae, "n": 6, "scale": 2, "prior": "gmm",
                             **png("random_gmm_again")},
        "random_gmm_ae": {"workdir": ae, "n": 4, "prior": "gmm", **png("random_gmm_ae")},
        "reconstruct": {"workdir": vae, "mode": "reconstruct", "n": 3, **png("rec")},
        "interpolate_images": {"workdir": vae, "mode": "interpolate", "indices": [0, 1],
                               "steps": 5, "method": "linear", **png("interp_images")},
        "interpolate_ids": {"workdir": vae, "mode": "interpolate",
                            "source_ids": setup["ids"][2:4], "steps": 3, **png("interp_ids")},
        "interpolate_random": {"workdir": vae, "mode": "interpolate", "n": 2, "steps": 4,
                               **png("interp_random")},
        "attribute": {"workdir": vae, "mode": "attribute", "attribute": "Eyeglasses", "n": 2,
                      "strengths": ["-1", "0", "1"], **png("attribute")},
        "attribute_cached": {"workdir": vae, "mode": "attribute", "n": 2,
                             **png("attribute_cached")},  # Smiling: the same cached vectors
        "traverse": {"workdir": vae, "mode": "traverse", "num_dims": 3, "steps": 4,
                     "split": "validation", **png("traverse")},
        "boundary_vae": {"workdir": vae, "mode": "boundary", "n": 4, "boundaries": [1, 10],
                         **png("boundary")},
        "boundary_ae": {"workdir": ae, "mode": "boundary", "n": 4,
                        "boundaries": [1, 10]},  # default `out`: <workdir>/boundary.png
        "denoise": {"workdir": vae, "mode": "denoise", "n": 3, **png("denoise")},
        "denoise_mask": {"workdir": ae, "mode": "denoise", "n": 3, "corruption": "mask",
                         "noise": 0.5, **png("denoise_mask")},
        "stats": {"workdir": vae, "mode": "stats", **png("stats")},
        "bad_attribute": {"workdir": vae, "mode": "attribute", "attribute": "Smilng", **png("x")},
        "bad_split": {"workdir": vae, "mode": "reconstruct", "split": "dev", **png("x")},
        "bad_index": {"workdir": vae, "mode": "reconstruct", "indices": [0, 99], **png("x")},
        "bad_id": {"workdir": vae, "mode": "interpolate", "source_ids": ["a.jpg", "b.jpg"],
                   **png("x")},
        "odd_pair": {"workdir": vae, "mode": "interpolate", "indices": [1], **png("x")},
        "bad_strengths": {"workdir": vae, "mode": "attribute", "strengths": ["1", "x"],
                          **png("x")},
        "untrained": {"workdir": setup["untrained"], **png("x")},
        "missing_workdir": {"workdir": str(setup["root"] / "nowhere"), **png("x")},
        **hostile_settings(setup, hostile, png),
    }  # fmt: skip
    return {"out": out, **{name: sample(**values) for name, values in settings.items()}}


def ok(runs: dict, name: str) -> dict:
    report = runs[name]
    assert report["code"] == 0, f"{name}: {report['message']}\n{report['stderr'][-2000:]}"
    return report


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as first, open(b, "rb") as second:
        return first.read() == second.read()


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
    assert path in report["paths"]
    assert image_size(path) == grid_size(rows, cols, scale)


def test_random_saves_individual_faces_and_is_reproducible(runs):
    ok(runs, "random")
    faces = sorted(os.listdir(os.path.join(runs["out"], "faces")))
    assert faces == [f"face_{i:04d}.png" for i in range(6)]
    assert image_size(os.path.join(runs["out"], "faces", faces[0])) == (SIDE, SIDE)
    ok(runs, "random_again")
    first, again = (os.path.join(runs["out"], f"{n}.png") for n in ("random", "random_again"))
    assert same_bytes(first, again)


def test_boundary_on_autoencoder_defaults_to_workdir(runs, setup):
    report = ok(runs, "boundary_ae")
    path = os.path.join(setup["ae"], "boundary.png")
    assert report["paths"] == [path]
    assert image_size(path) == grid_size(3, 4)
    assert wd.foreign_entries(setup["ae"]) == []  # noted as the run's own: `overwrite` takes it


def test_attribute_vectors_equal_numpy_mean_difference_and_are_cached(runs, setup, tiny_manifest):
    ok(runs, "attribute")
    cached_run = ok(runs, "attribute_cached")
    num_train = tiny_manifest.num_examples("train")  # fewer than codes.TRAIN_CODES: all
    computed = f"attribute vectors of {num_train} train images cached in"  # model.codes' note
    assert computed in runs["attribute"]["stderr"]
    assert computed not in cached_run["stderr"]  # the second run reused the file
    with np.load(os.path.join(setup["vae"], "attribute_vectors_train.npz")) as f:
        vectors, names = f["vectors"], list(f["names"])
    assert names == list(tiny_manifest.attribute_names)
    model, _ = wd.restore(setup["vae"])
    z, labels = [], []
    for images, attributes in dataset.load(
        tiny_manifest, "train", 16, training=False, cache="none", with_labels=True
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
    assert report["paths"] == [os.path.join(runs["out"], "stats.png"), json_path]
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
    assert same_bytes(*paths)
    assert not same_bytes(os.path.join(runs["out"], "random.png"), paths[0])  # another prior
    ok(runs, "random_gmm_ae")  # a plain autoencoder becomes generative the same way


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bad_attribute", "`attribute`=Smilng is not in the dataset; use one of ['5_o_Clock"),
        ("bad_split", "`split`=dev: the dataset"),
        ("bad_index", "`indices`=[99]: the test split has 5 images"),
        ("bad_id", "`source_ids`=['a.jpg', 'b.jpg'] are not in the test split"),
        ("odd_pair", "interpolate takes images in pairs"),
        ("bad_strengths", "`strengths`=1,x: give comma-separated float values"),
        ("untrained", "no checkpoint in ckpt/ and no model.keras: train it first"),
        ("missing_workdir", "config.json does not exist"),
    ],
)
def test_errors_name_the_setting_and_fix(runs, name, expected):
    report = runs[name]
    assert report["code"] != 0
    assert expected in report["message"]
    if name == "bad_split":
        assert "['test', 'train', 'validation']" in report["message"]


ONE_LINE_ERRORS = {  # name: what the one line must say
    "temperature_inf": "`temperature` must be a positive finite number",
    "temperature_nan": "`temperature` must be a positive finite number",
    "strengths_nan": "`strengths`=1,nan: nan is not a finite number",
    "boundaries_bad": "`boundaries`=-5,nan: -5 is not a positive finite number",
    "n_huge": "`n` must be in 0..1024",
    "grid_huge": "grid of 64,000 images",
    "scale_huge": "(262.14 at `scale`=16); the limits are 4,096 images, 16 megapixels (64",
    "max_examples_huge": "`max_examples`=3000000: at z_dim 8 at most 2,097,152 images",
    "out_folder": "is a folder: give the path of a file",
    "out_under_file": "a_file is a file",
    "corrupt_reconstruct": "test-00000-of-00001.tfrecord has a different sha256",
    "corrupt_stats": "test-00000-of-00001.tfrecord has a different sha256",
    "corrupt_attribute": "train-00000-of-00003.tfrecord has a different sha256",
}


@pytest.mark.parametrize("name", sorted(ONE_LINE_ERRORS))
def test_bad_settings_and_corrupt_shards_stop_in_one_line(runs, name):
    report = runs[name]
    assert report["code"] != 0
    assert ONE_LINE_ERRORS[name] in report["message"]
    assert "\n" not in console.one_line(report["error"])
    assert "Traceback" not in report["stderr"]
    assert not os.path.exists(os.path.join(runs["out"], "x.png"))  # nothing written
    if name.startswith("corrupt"):
        assert "--overwrite" in console.one_line(report["error"])  # prepare the dataset again


def test_attribute_on_a_read_only_workdir_warns_and_goes_on(runs, hostile):
    if not hostile["read_only_vae"]:
        pytest.skip("no read-only folder here (root without a tmpfs mount)")
    report = ok(runs, "read_only_attribute")
    assert "attribute vectors not cached" in report["stderr"]
    assert os.path.isfile(os.path.join(runs["out"], "read_only_attribute.png"))
    assert sorted(os.listdir(hostile["read_only_vae"])) == hostile["read_only_listing"]


def test_make_and_write_step_by_step_as_in_a_notebook(setup, tiny_manifest, tmp_path):
    """restore, make, write: the same bytes as run; random faces need no manifest."""
    model, _ = wd.restore(setup["vae"])
    config = sampling.SampleConfig(workdir=setup["vae"], mode="boundary", n=3,
                                   out=str(tmp_path / "a.png"))  # fmt: skip
    picture = sampling.make(model, None, config)
    assert picture.images.shape == (3 * 7, SIDE, SIDE, 3) and picture.cols == 3
    assert sampling.write(picture, config) == [config.out]
    again = dataclasses.replace(config, out=str(tmp_path / "b.png"))
    assert sampling.run(again) == [again.out]
    assert same_bytes(config.out, again.out)
    stats = sampling.make(model, tiny_manifest, dataclasses.replace(config, mode="stats"))
    assert stats.results["num_examples"] == 5 and stats.images.dtype == np.uint8
    with pytest.raises(sampling.SampleError, match="`mode`=stats reads images"):
        sampling.make(model, None, dataclasses.replace(config, mode="stats"))
    other = dataclasses.replace(tiny_manifest, image_shape=(16, 16, 3))  # another dataset
    with pytest.raises(DatasetError, match=r"holds \(16, 16, 3\) images but the model takes"):
        sampling.make(model, other, dataclasses.replace(config, mode="reconstruct"))


@pytest.mark.parametrize(
    "setting, value",
    [("seed", -1), ("seed", 2**32), ("seed", 1.5), ("n", True), ("n", 1025), ("scale", 0),
     ("temperature", float("nan")), ("temperature", 10.5), ("traverse_range", 1e308),
     ("noise", 0), ("noise", 1.5), ("strengths", [101]), ("strengths", ["x" * 10_000]),
     ("boundaries", [0]), ("boundaries", [1001]), ("indices", [2.5]), ("indices", [1] * 1025),
     ("mode", "x" * 10_000), ("prior", "uniform")],
)  # fmt: skip
def test_config_refuses_values_out_of_range_naming_the_setting(setting, value):
    with pytest.raises(sampling.SampleError) as refused:
        sampling.SampleConfig(workdir="runs/x", **{setting: value})
    assert f"`{setting}`" in str(refused.value) and len(str(refused.value)) < 300
    edges = sampling.SampleConfig(workdir="runs/x", seed=2**32 - 1, n=1024, temperature=10,
                                  noise=1, strengths=[-100, 100], boundaries=["1000"])  # fmt: skip
    assert edges.strengths == (-100.0, 100.0) and edges.boundaries == (1000.0,)


# --------------------------------------------------------------------------- the command line

NUMERIC_FLAGS = {  # flag: the command line it is tried in
    "seed": "--n 2",
    "n": "",
    "scale": "--n 2",
    "batch_size": "--n 2",
    "max_examples": "--mode stats",
    "steps": "--mode interpolate --n 1",
    "num_dims": "--mode traverse --steps 2 --max_examples 8",
    "temperature": "--n 2",
    "traverse_range": "--mode traverse --num_dims 1 --steps 2 --max_examples 8",
    "noise": "--mode denoise --n 1",
    "strengths": "--mode attribute --n 1",
    "boundaries": "--mode boundary --n 1",
    "indices": "--mode reconstruct",
}
HOSTILE_VALUES = {"minus_one": "-1", "zero": "0", "huge": "1e308", "nan": "nan",
                  "long_digits": "7" * 10_000, "long_text": "x" * 10_000}  # fmt: skip
# Documented successes: --seed 0..2**32-1, --n 0 (the mode's default), --max_examples 0
# (all), strengths within +-100, --indices 0 (the first image).
SUCCEEDS = {("seed", "zero"), ("n", "zero"), ("max_examples", "zero"),
            ("strengths", "minus_one"), ("strengths", "zero"), ("indices", "zero")}  # fmt: skip


PARSE_AS_THE_COMMAND_LINE = """
import sys
from absl import flags
from facevae.model import console

sys.argv.append(sys.stdin.read())
absl_parse = flags.FlagValues.__call__


def parse_as_run_app(flag_values, argv, known_only=False):
    flags.FlagValues.__call__ = absl_parse  # console.parse_flags calls FLAGS(argv) itself
    try:
        return console.parse_flags(argv)
    finally:
        flags.FlagValues.__call__ = parse_as_run_app


flags.FlagValues.__call__ = parse_as_run_app
"""

HELP_MARK = "--- sample.py --help ---"
HELP_AFTERWARDS = f"""
print({HELP_MARK!r})
sys.argv = ["sample.py", "--help"]
try:
    sample.run()  # the console script's entry: absl's app.run, as `python sample.py --help`
except SystemExit:
    pass
"""


@pytest.fixture(scope="module")
def cli(setup):
    """sample.main on many command lines in one process (tests/cli_driver.py)."""
    vae, out = setup["vae"], str(setup["root"] / "cli")
    argvs = {
        "unknown_mode": ["--workdir", vae, "--mode", "faces"],
        "faces": ["--workdir", vae, "--n", "6", "--scale", "2", "--out",
                  os.path.join(out, "faces.png")],
    }  # fmt: skip
    for flag, base in NUMERIC_FLAGS.items():
        for label, value in HOSTILE_VALUES.items():
            png = os.path.join(out, f"{flag}_{label}.png")
            argvs[f"{flag}:{label}"] = ["--workdir", vae, *base.split(), f"--{flag}={value}",
                                        "--out", png]  # fmt: skip
    # The command lines go in on stdin: 10,000-character values pass the 128 KB an argument
    # of a process may have. Flags are parsed as the command line parses them (run_app's
    # console.parse_flags, which keeps a bad value's message to one short line).
    script = PARSE_AS_THE_COMMAND_LINE + cli_driver.script("sample") + HELP_AFTERWARDS
    done = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(argvs), cwd=ROOT, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reports, helped = done.stdout.split(HELP_MARK)
    return {"out": out, "help": helped, **json.loads(reports.strip().splitlines()[-1])}


def test_command_line(runs, cli):
    """In another process: --help through the console script's entry (layouts, limits), an
    unknown mode, and a file identical to the library's."""
    for mode in sampling.MAKERS:
        assert f"\n  {mode} " in cli["help"]
    unwrapped = " ".join(cli["help"].split())
    for limit in ("at most 1024", "2..64", "1..16", "at most 4096 images of 16 megapixels",
                  "0..4294967295", "(0, 10]", "(0, 100]", "(0, 1]", "-100..100", "(0, 1000]",
                  "stats/traverse only", "first 10,000 labelled images"):  # fmt: skip
        assert limit in unwrapped, limit  # every cap a user can hit is in --help
    unknown = cli["unknown_mode"]
    assert unknown["code"] != 0
    assert "--mode=faces" in unknown["message"] and "random|reconstruct" in unknown["message"]
    faces = cli["faces"]
    assert faces["code"] == 0, faces["message"]
    out = os.path.join(cli["out"], "faces.png")
    assert faces["stdout"].strip() == out
    assert same_bytes(out, os.path.join(runs["out"], "random.png"))  # another process


@pytest.mark.parametrize("flag", sorted(NUMERIC_FLAGS))
def test_every_numeric_flag_refuses_hostile_values_in_one_short_line(cli, flag):
    for label, value in HOSTILE_VALUES.items():
        report = cli[f"{flag}:{label}"]
        case = f"--{flag}={value[:20]}: {report['message']}\n{report['stderr'][-1000:]}"
        assert "Traceback" not in report["stderr"], case
        if (flag, label) in SUCCEEDS:
            assert report["code"] == 0, case
            assert os.path.isfile(os.path.join(cli["out"], f"{flag}_{label}.png")), case
            continue
        assert report["code"] != 0, case
        message = report["message"]
        assert message and "\n" not in message.strip(), case
        assert f"--{flag}" in message, case
        if len(value) > console.MAX_ECHO:
            assert value[: console.MAX_ECHO + 1] not in message, case  # echoed cut short
        assert len(message) < 400, case
