"""model/figures.py in-process on the tiny synthetic set, called twice (train here, then reuse
with worker processes); tools/make_figures.py's one-line errors through one driver process
(tests/cli_driver.py); and its reuse rules on hand-made workdirs."""

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import subprocess
import sys
import types

import cli_driver
import pytest
from PIL import Image

from facevae.model import dashboards, judge
from facevae.model import figures as mf
from facevae.model import workdir as wd
from facevae.model.config import TrainConfig
from facevae.model.grid import PAD
from facevae.pipeline import schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 32  # image side of the tiny dataset
Z_DIM = 4
TINY_TRAINING = (
    f"--filters=8,16 --z_dim={Z_DIM} --epochs=1 --steps_per_epoch=2 --batch_size=8 "
    "--checkpoint_every_steps=2"
)
RUNS = ("ae", "vae", "vae_kl_0.004")
# (rows, cols) of each picture, from the module's SampleConfig settings.
GRIDS = {
    "samples.png": (4, 4),
    "reconstructions.png": (2, 8),
    "interpolation.png": (2, 8),
    "eyeglasses.png": (2, 6),
    "traversal.png": (4, 4),
    "boundary_ae.png": (5, 3),
    "boundary_vae.png": (5, 3),
}


def make(root, data_dir: str, jobs: int) -> tuple[str, str]:
    """make_figures on the tiny set in this process; (summary line, everything printed)."""
    config = mf.FigureConfig(
        out_dir=str(root / "docs"), runs_dir=str(root / "runs"), data_dir=data_dir,
        train_flags=TINY_TRAINING, kl_weights=("4e-3",), jobs=jobs,
    )  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = mf.make_figures(config)
    return summary, out.getvalue()


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir, tmp_path_factory) -> str:
    """A copy of the tiny set: the judge trained beside it stays out of the shared one."""
    copy = str(tmp_path_factory.mktemp("data") / "tiny")
    shutil.copytree(tiny_data_dir, copy)
    return copy


@pytest.fixture(scope="module")
def made(data_dir, tmp_path_factory):
    """The library twice on the tiny set: the first call trains (and the judge), in this
    process; the second reuses, evaluating and drawing in two worker processes."""
    root = tmp_path_factory.mktemp("figures")
    docs = root / "docs"
    code = mf.code_version(mf.ROOT)
    with pytest.MonkeyPatch.context() as patch:
        # The digest of this checkout, once: others may edit it while the test runs.
        patch.setattr(mf, "code_version", lambda root: code)
        first, first_out = make(root, data_dir, jobs=1)
        files = {name: (docs / name).read_bytes() for name in os.listdir(docs)}
        second, second_out = make(root, data_dir, jobs=2)
    again = {name: (docs / name).read_bytes() for name in os.listdir(docs)}
    return {
        "docs": docs, "runs": root / "runs", "first": first, "first_out": first_out,
        "second": second, "second_out": second_out, "files": files, "again": again,
        "code": code,
    }  # fmt: skip


def test_first_call_trains_every_run_and_writes_small_whole_pngs(made, data_dir):
    assert sorted(made["files"]) == sorted([*GRIDS, "results.md"])  # no stage leftovers
    for name, (rows, cols) in GRIDS.items():
        assert len(made["files"][name]) <= mf.MAX_PNG_BYTES, name
        with Image.open(made["docs"] / name) as image:
            assert image.format == "PNG"
            assert image.size == (cols * (SIDE + PAD) + PAD, rows * (SIDE + PAD) + PAD), name
    assert made["first"].startswith("figures: 7 PNGs and results.md in ")
    assert "(runs: 3 trained, 0 reused)" in made["first"]
    base = TrainConfig.demo(data_dir=data_dir, **mf.parse_train_flags(TINY_TRAINING))
    expected = {
        "ae": dataclasses.replace(base, mode="ae"),
        "vae": base,
        "vae_kl_0.004": dataclasses.replace(base, kl_weight=4e-3),
    }
    for run in RUNS:
        workdir = made["runs"] / run
        record = json.loads((workdir / mf.RUN_RECORD).read_text())
        assert record["seconds"] > 0 and record["config"] == expected[run].to_dict()
        assert record["made_data"] is False  # `data_dir` was given
        assert record["code_sha256"] == made["code"]
        assert record["dataset"] == schema.Manifest.read(data_dir).version
        # The trainer's own output passes through: its last line names the sample grid.
        assert f"samples {workdir / 'samples' / 'epoch_0001.png'}" in made["first_out"], run
        # TensorBoard: the session, the test numbers and the projector of every run.
        logs = str(workdir / "logs")
        assert dashboards.read_session(logs).hparams["mode"] == expected[run].mode
        assert os.path.isfile(os.path.join(logs, "eval", dashboards.EVAL_FILE))
        assert os.path.isdir(os.path.join(logs, dashboards.PROJECTOR_DIR))
        assert wd.foreign_entries(str(workdir)) == []  # `overwrite` still takes the run
    judge.load(judge.default_dir(data_dir), schema.Manifest.read(data_dir))  # trained once
    assert made["first_out"].count("judge: training one") == 1


def table_rows(table: str) -> tuple[list[str], list[list[str]]]:
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    header, *rows = [[cell.strip() for cell in row] for row in rows]
    return header, rows


def test_results_table_has_one_row_per_run_with_finite_numbers(made):
    table = made["files"]["results.md"].decode()
    assert table in made["first_out"]  # also printed
    header, rows = table_rows(table)
    assert header[:3] == ["run", "kl_weight", "β"] and len(header) == 11
    assert header[8:10] == ["judge FD, N(0, I)", "judge FD, mixture"]
    assert [row[:2] for row in rows] == [["AE", "—"], ["VAE (demo)", rows[1][1]], ["VAE", "0.004"]]
    assert rows[0][2] == rows[0][6] == "—"  # the AE has no β and no KL
    for row in rows:
        numbers = [cell.rstrip("†*") for cell in row[1:] if cell != "—"]
        active, z_dim = row[7].split(" / ")
        assert 0 <= int(active) <= int(z_dim) == Z_DIM
        numbers.remove(row[7])
        assert all(math.isfinite(float(cell)) for cell in numbers), row
        assert float(row[8]) >= 0 and float(row[9]) >= 0  # measured for the AE too
    # β = kl_weight x H*W*C / z_dim, as the trainer prints it
    assert float(rows[2][2]) == pytest.approx(4e-3 * SIDE * SIDE * 3 / Z_DIM, rel=1e-2)
    assert f"48 images of {SIDE}×{SIDE}" in table
    assert "Judge FD: Fréchet distance between 5 images decoded from random codes" in table
    for run, row in zip(RUNS, rows, strict=True):
        for prior, column in (("normal", 8), ("gmm", 9)):
            name = "eval.json" if prior == "normal" else mf.GMM_RESULTS
            results = json.loads((made["runs"] / run / name).read_text())
            assert results["prior"] == prior and row[column] == f"{results['judge_fd']:.1f}"


def test_second_call_reuses_every_run_and_writes_the_same_bytes(made):
    out = made["second_out"]
    assert out.count(": reused ") == 3 and "training (" not in out
    assert "judge: training" not in out
    assert "(runs: 0 trained, 3 reused)" in made["second"]
    assert made["again"] == made["files"]  # PNGs, and results.md with the recorded timings


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def command(data_dir, tmp_path_factory):
    """tools/make_figures.py's main on bad command lines, in one driver process."""
    root = tmp_path_factory.mktemp("command")
    blocker = root / "blocker"
    blocker.write_text("not a folder")
    faces = root / "faces"
    faces.mkdir()
    (faces / "img_001.jpg").write_bytes(b"not a prepared dataset")
    empty = {}
    cases = {}
    for name, flag in [
        ("negative", "--kl_weights=-1"),
        ("word", "--kl_weights=1e-3,abc"),
        ("twice", "--kl_weights=1e-3,0.001"),
        ("own", "--train_flags=--workdir=x"),
        ("jobs", "--jobs=0"),
        ("filters", "--train_flags=--filters=8,x"),
    ]:
        empty[name] = root / name
        empty[name].mkdir()
        out = str(empty[name])
        cases[name] = [flag, "--out_dir", f"{out}/docs", "--runs_dir", out, "--data_dir", data_dir]
    cases["blocker"] = ["--out_dir", str(blocker), "--runs_dir", str(root / "runs")]
    cases["faces"] = [
        "--out_dir", str(root / "docs"), "--runs_dir", str(root / "faces_runs"),
        "--data_dir", str(faces),
    ]  # fmt: skip
    cases["training"] = [
        "--out_dir", str(root / "t_docs"), "--runs_dir", str(root / "t_runs"),
        "--data_dir", data_dir, "--train_flags=--batch_size=4096",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", cli_driver.script("tools.make_figures"), json.dumps(cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout.strip().splitlines()[-1])
    return {"reports": reports, "root": root, "empty": empty, "blocker": blocker, "faces": faces}


def one_line(report: dict) -> str:
    message = report["message"]
    assert report["code"] == 1 and message and "\n" not in message.strip(), report
    return message


@pytest.mark.parametrize(
    "case, message",
    [
        ("negative", "--kl_weights=-1: '-1' is not a positive number"),
        ("word", "--kl_weights=1e-3,abc: 'abc' is not a positive number"),
        ("twice", "--kl_weights=1e-3,0.001: 0.001 is given twice"),
        ("own", "--train_flags: --workdir=x is set by this tool"),
        ("jobs", "--jobs=0: give 1 or more"),
        ("filters", "--train_flags: --filters=8,x: give comma-separated integers, e.g. 32,64,128"),
    ],
)
def test_bad_flags_stop_with_one_line(command, case, message):
    assert one_line(command["reports"][case]).startswith(f"make_figures: {message}")
    assert os.listdir(command["empty"][case]) == []  # stopped before anything was made


def test_an_output_folder_that_is_a_file_is_one_line(command):
    blocker = command["blocker"]
    assert one_line(command["reports"]["blocker"]) == (
        f"make_figures: --out_dir={blocker}: cannot write there (File exists); choose another"
    )


def test_a_data_dir_without_a_dataset_is_one_line_before_any_training(command):
    faces = command["faces"]
    message = one_line(command["reports"]["faces"])
    assert message.startswith(f"make_figures: --data_dir: {faces} has no dataset.json")
    assert f"`python -m tools.prepare_celeba --src SRC --out {faces}" in message
    assert not os.path.exists(command["root"] / "faces_runs")  # nothing trained, nothing made
    assert os.listdir(faces) == ["img_001.jpg"]


def test_a_failed_training_is_one_line_naming_the_run(command):
    message = one_line(command["reports"]["training"])
    runs = command["root"] / "t_runs"
    assert message.startswith(f"make_figures: training ae in {runs / 'ae'}: ")
    assert "4096 is more than the 38 training images" in message
    assert not os.path.exists(command["root"] / "t_docs" / "results.md")


# --------------------------------------------------------------------------- reuse rules


@pytest.fixture
def finished(tmp_path, tiny_data_dir, tiny_manifest):
    """A hand-made workdir as the module leaves it after training, and its settings."""
    workdir = tmp_path / "vae"
    workdir.mkdir()
    (workdir / "model.keras").write_bytes(b"stand-in")
    flags = {"data_dir": tiny_data_dir, "z_dim": Z_DIM}
    (workdir / "config.json").write_text(json.dumps({"flags": flags, "model": {}}))
    config = TrainConfig.demo(data_dir=tiny_data_dir)
    code = "c0de" * 16
    record = {
        "config": config.to_dict(),
        "seconds": 1.0,
        "code_sha256": code,
        "flags": flags,
        "dataset": tiny_manifest.version,
    }
    (workdir / mf.RUN_RECORD).write_text(json.dumps(record))
    return str(workdir), config, code, tiny_manifest.version


def test_a_run_is_reused_only_when_nothing_it_depends_on_changed(finished):
    workdir, config, code, version = finished
    assert mf.stale(workdir, config, code, version) is None
    other = dataclasses.replace(config, z_dim=8)
    assert mf.stale(workdir, other, code, version) == "trained with other settings"
    assert mf.stale(workdir, config, "f" * 64, version).startswith("the code changed")
    assert mf.stale(workdir, config, code, "another") == "its dataset changed"
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        content = json.load(f)
    content["flags"]["z_dim"] = 8  # someone trained it again by hand
    with open(path, "w") as f:
        json.dump(content, f)
    assert mf.stale(workdir, config, code, version) == f"{path} changed since"
    with open(path, "w") as f:
        json.dump({"model": {}}, f)  # not a config of ours: named, not a KeyError
    assert mf.stale(workdir, config, code, version) == f"{path} has no flags.data_dir: " + (
        "not a config.json of ours; `overwrite` trains the runs afresh"
    )
    with pytest.raises(mf.FigureError, match=r"has no flags\.data_dir"):
        mf.stored_flags(workdir)
    os.remove(os.path.join(workdir, "model.keras"))
    assert mf.stale(workdir, config, code, version) == "no finished run"


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_code_digest_covers_the_training_code_and_nothing_else(tmp_path):
    covered = ["model/vae.py", "model/sub/deep.py", "pipeline/schema.py", "model/trainer.py"]
    left_out = [
        "train.py", "evaluate.py", "tools/make_figures.py", "model/figures.py",
        "model/figure_config.py", "model/notes.txt", "README.md",
    ]  # fmt: skip
    for name in covered + left_out:
        write(tmp_path / name, f"# {name}\n")
    digest = mf.code_version(str(tmp_path))
    assert len(digest) == 64 and mf.code_version(str(tmp_path)) == digest
    # Files a training run does not use (this module's table and pictures included).
    for name in left_out:
        write(tmp_path / name, "changed\n")
    write(tmp_path / "model" / "__pycache__" / "vae.cpython-311.py", "cache\n")
    assert mf.code_version(str(tmp_path)) == digest
    # Each covered file, a new module and a renamed one: another digest each time.
    seen = {digest}
    for name in covered:
        with open(tmp_path / name, "a") as f:
            f.write("# touched\n")
        seen.add(mf.code_version(str(tmp_path)))
    write(tmp_path / "pipeline" / "new.py", "")
    seen.add(mf.code_version(str(tmp_path)))
    os.rename(tmp_path / "pipeline" / "new.py", tmp_path / "pipeline" / "newer.py")
    seen.add(mf.code_version(str(tmp_path)))
    assert len(seen) == 1 + len(covered) + 2
    os.symlink("missing.py", tmp_path / "model" / "gone.py")
    with pytest.raises(mf.FigureError, match=r"^cannot read model/gone\.py \(No such file"):
        mf.code_version(str(tmp_path))


def test_train_flags_are_training_settings():
    assert mf.parse_train_flags("--epochs=2 --z_dim 32 --flip --filters=8,16") == {
        "epochs": 2, "z_dim": 32, "flip": True, "filters": (8, 16),
    }  # fmt: skip
    assert mf.parse_train_flags("--noflip --learning_rate=5e-4 --cache none seed=3") == {
        "flip": False, "learning_rate": 5e-4, "cache": "none", "seed": 3,
    }  # fmt: skip
    for text, message in [
        ("--colour=red", "--colour=red is not a training setting"),
        ("--epochs=two", "--epochs=two: give a whole number"),
        ("--epochs 2 3", "3 is not a name=value setting"),
        ("--mode=ae", "--mode=ae is set by this tool"),
        ("--epochs", "--epochs has no value"),
        ("--epochs='2", "No closing quotation"),
    ]:
        with pytest.raises(mf.FigureError, match=message):
            mf.parse_train_flags(text)
    with pytest.raises(mf.FigureError, match=r"`train_flags`: `batch_size`=0"):
        mf.FigureConfig(train_flags="--batch_size=0")
    assert mf.FigureConfig(train_flags={"epochs": 2}).train_settings == {"epochs": 2}


def test_a_left_out_picture_is_removed_only_once_the_new_files_are_in_place(tmp_path, capsys):
    old = tmp_path / "eyeglasses.png"
    old.write_bytes(b"an earlier dataset's picture")
    smiling = types.SimpleNamespace(attribute_names=("Smiling",))
    figures = mf.choose_figures(smiling)
    assert "eyeglasses" not in [f.name for f in figures] and old.exists()
    glasses = types.SimpleNamespace(attribute_names=("Eyeglasses",))
    mf.remove_left_out(mf.choose_figures(glasses), str(tmp_path))
    assert old.exists()  # this dataset allows it
    mf.remove_left_out(figures, str(tmp_path))
    assert not old.exists()
    assert "removed the earlier" in capsys.readouterr().out


def test_an_oversized_png_is_named(tmp_path):
    path = tmp_path / "samples.png"
    path.write_bytes(b"x" * (mf.MAX_PNG_BYTES + 1))
    with pytest.raises(mf.FigureError, match=r"^samples\.png is 300,001 bytes, over the limit"):
        mf.check_size(str(path), "samples.png")
    path.write_bytes(b"x" * mf.MAX_PNG_BYTES)
    mf.check_size(str(path), "samples.png")
