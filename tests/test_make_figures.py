"""tools/make_figures.py: the real command on the tiny synthetic set, run twice (train, then
reuse), its one-line errors, and its reuse rules on hand-made workdirs."""

import json
import math
import os
import subprocess
import sys

import pytest
from PIL import Image

from facevae.model.grid import PAD
from facevae.tools import make_figures as mf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 32  # image side of the tiny dataset
Z_DIM = 4
TINY_TRAINING = (
    f"--filters=8,16 --z_dim={Z_DIM} --epochs=1 --steps_per_epoch=2 --batch_size=8 "
    "--checkpoint_every_steps=2"
)
# (rows, cols) of each picture, from the tool's sample.py flags.
GRIDS = {
    "samples.png": (4, 4),
    "reconstructions.png": (2, 8),
    "interpolation.png": (2, 8),
    "eyeglasses.png": (2, 6),
    "traversal.png": (4, 4),
    "boundary_ae.png": (5, 3),
    "boundary_vae.png": (5, 3),
}


def make_figures(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.make_figures", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def made(tiny_data_dir, tmp_path_factory):
    """The tool twice on the tiny set: the first call trains, the second reuses."""
    root = tmp_path_factory.mktemp("figures")
    docs, runs = root / "docs", root / "runs"
    args = ["--out_dir", str(docs), "--runs_dir", str(runs), "--data_dir", tiny_data_dir]
    args += ["--kl_weights", "4e-3", f"--train_flags={TINY_TRAINING}"]
    first = make_figures(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    files = {name: (docs / name).read_bytes() for name in os.listdir(docs)}
    second = make_figures(*args)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again = {name: (docs / name).read_bytes() for name in os.listdir(docs)}
    return {
        "docs": docs,
        "runs": runs,
        "first": first,
        "second": second,
        "files": files,
        "again": again,
    }


def test_first_call_trains_every_run_and_writes_small_whole_pngs(made):
    assert sorted(made["files"]) == sorted([*GRIDS, "results.md"])  # no temporary leftovers
    for name, (rows, cols) in GRIDS.items():
        assert len(made["files"][name]) <= mf.MAX_PNG_BYTES, name
        with Image.open(made["docs"] / name) as image:
            assert image.format == "PNG"
            assert image.size == (cols * (SIDE + PAD) + PAD, rows * (SIDE + PAD) + PAD), name
    summary = made["first"].stdout.strip().splitlines()[-1]
    assert summary.startswith("figures: 7 PNGs and results.md in ")
    assert "(runs: 3 trained, 0 reused)" in summary
    for run in ("ae", "vae", "vae_kl_0.004"):
        record = json.loads((made["runs"] / run / mf.RUN_RECORD).read_text())
        assert record["seconds"] > 0 and record["command"][:2] == ["train.py", "--demo"]
        assert record["made_data"] is False  # --data_dir was given
        assert record["code_sha256"] == mf.code_version(mf.ROOT)
        # train.py's own stdout passes through: its last line, the demo's sample grid
        grid = os.path.join(made["runs"], run, "samples", "")
        assert any(line.startswith(grid) for line in made["first"].stdout.splitlines()), run


def test_results_table_has_one_row_per_run_with_finite_numbers(made):
    table = made["files"]["results.md"].decode()
    assert table in made["first"].stdout  # also printed
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    header, *rows = [[cell.strip() for cell in row] for row in rows]
    assert header[:3] == ["run", "kl_weight", "β"] and len(header) == 9
    assert [row[:2] for row in rows] == [["AE", "—"], ["VAE (demo)", rows[1][1]], ["VAE", "0.004"]]
    assert rows[0][2] == rows[0][6] == "—"  # the AE has no β and no KL
    for row in rows:
        numbers = [cell.rstrip("†*") for cell in row[1:] if cell != "—"]
        active, z_dim = row[7].split(" / ")
        assert 0 <= int(active) <= int(z_dim) == Z_DIM
        numbers.remove(row[7])
        assert all(math.isfinite(float(cell)) for cell in numbers), row
    # β = kl_weight x H*W*C / z_dim, as train.py prints it
    assert float(rows[2][2]) == pytest.approx(4e-3 * SIDE * SIDE * 3 / Z_DIM, rel=1e-2)
    assert f"48 images of {SIDE}×{SIDE}" in table


def test_second_call_reuses_every_run_and_writes_the_same_bytes(made):
    out = made["second"].stdout
    assert out.count(": reused ") == 3 and "training (" not in out
    assert "(runs: 0 trained, 3 reused)" in out.strip().splitlines()[-1]
    assert made["again"] == made["files"]  # PNGs, and results.md with the recorded timings


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--kl_weights=-1", "--kl_weights=-1: '-1' is not a positive number"),
        ("--kl_weights=1e-3,abc", "--kl_weights=1e-3,abc: 'abc' is not a positive number"),
        ("--kl_weights=1e-3,0.001", "--kl_weights=1e-3,0.001: 0.001 is given twice"),
        ("--train_flags=--workdir=x", "--train_flags: --workdir=x is set by this tool"),
        ("--jobs=0", "--jobs=0: give 1 or more"),
    ],
)
def test_bad_flags_stop_with_one_line(flag, message, tmp_path):
    done = make_figures(flag, "--out_dir", str(tmp_path / "docs"), "--runs_dir", str(tmp_path))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"make_figures: {message}")
    assert os.listdir(tmp_path) == []  # stopped before anything was made


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "docs"
    blocker.write_text("not a folder")
    done = make_figures("--out_dir", str(blocker), "--runs_dir", str(tmp_path / "runs"))
    assert done.returncode == 1
    assert (
        done.stderr == f"make_figures: --out_dir={blocker}: cannot write there (File exists); "
        "choose another\n"
    )


def test_a_data_dir_without_a_dataset_is_one_line_before_any_training(tmp_path):
    data = tmp_path / "faces"
    data.mkdir()
    (data / "img_001.jpg").write_bytes(b"not a prepared dataset")
    runs = tmp_path / "runs"
    done = make_figures(
        "--out_dir", str(tmp_path / "docs"), "--runs_dir", str(runs), "--data_dir", str(data)
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"make_figures: --data_dir: {data} has no dataset.json")
    assert f"`python -m tools.prepare_celeba --src SRC --out {data}" in done.stderr
    assert not os.path.exists(runs)  # nothing trained, nothing made
    assert os.listdir(data) == ["img_001.jpg"]


def test_a_failed_command_is_one_line_naming_it(tiny_data_dir, tmp_path):
    done = make_figures(
        "--out_dir",
        str(tmp_path / "docs"),
        "--runs_dir",
        str(tmp_path / "runs"),
        "--data_dir",
        tiny_data_dir,
        "--train_flags=--filters=8,x",
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]  # train.py's own output comes before it
    assert last.startswith("make_figures: `python train.py --demo --workdir ")
    assert last.endswith(
        "failed (exit 1): --filters=8,x: give comma-separated integers, e.g. 32,64,128"
    )
    assert not os.path.exists(tmp_path / "docs" / "results.md")


# --------------------------------------------------------------------------- reuse rules


@pytest.fixture
def finished(tmp_path, tiny_data_dir):
    """A hand-made workdir as the tool leaves it after training, and its command."""
    workdir = tmp_path / "vae"
    workdir.mkdir()
    (workdir / "model.keras").write_bytes(b"stand-in")
    flags = {"data_dir": tiny_data_dir, "z_dim": Z_DIM}
    (workdir / "config.json").write_text(json.dumps({"flags": flags, "model": {}}))
    args = ["train.py", "--demo", "--workdir", str(workdir)]
    code = "c0de" * 16
    record = {
        "command": args,
        "seconds": 1.0,
        "code_sha256": code,
        "flags": flags,
        "dataset": mf.dataset_version(tiny_data_dir),
    }
    (workdir / mf.RUN_RECORD).write_text(json.dumps(record))
    return str(workdir), args, code


def test_a_run_is_reused_only_when_nothing_it_depends_on_changed(finished, tmp_path):
    workdir, args, code = finished
    assert mf.stale(workdir, args, code) is None
    assert mf.stale(workdir, [*args, "--z_dim=8"], code) == "trained by another command"
    assert mf.stale(workdir, args, "f" * 64).startswith("the code changed")
    config = os.path.join(workdir, "config.json")
    with open(config) as f:
        content = json.load(f)
    content["flags"]["z_dim"] = 8  # someone trained it again by hand
    with open(config, "w") as f:
        json.dump(content, f)
    assert mf.stale(workdir, args, code) == f"{config} changed since"
    with open(config, "w") as f:
        json.dump({"model": {}}, f)  # not train.py's: named, not a KeyError
    assert mf.stale(workdir, args, code) == f"{config} has no flags.data_dir: " + (
        "not a config.json of train.py; --overwrite trains the runs afresh"
    )
    with pytest.raises(mf.FigureError, match=r"has no flags\.data_dir"):
        mf.stored_flags(workdir)
    os.remove(os.path.join(workdir, "model.keras"))
    assert mf.stale(workdir, args, code) == "no finished run"


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_code_digest_covers_the_training_code_and_nothing_else(tmp_path):
    for name in [
        *mf.CODE_FILES,
        "model/vae.py",
        "model/sub/deep.py",
        "pipeline/schema.py",
        "evaluate.py",
        "tools/make_figures.py",
        "model/notes.txt",
    ]:
        write(tmp_path / name, f"# {name}\n")
    digest = mf.code_version(str(tmp_path))
    assert len(digest) == 64 and mf.code_version(str(tmp_path)) == digest
    # Files a training run does not use: the same digest.
    for name in ["evaluate.py", "tools/make_figures.py", "model/notes.txt", "README.md"]:
        write(tmp_path / name, "changed\n")
    write(tmp_path / "model" / "__pycache__" / "vae.cpython-311.py", "cache\n")
    assert mf.code_version(str(tmp_path)) == digest
    # Each covered file, a new module and a renamed one: another digest each time.
    seen = {digest}
    for name in [*mf.CODE_FILES, "model/vae.py", "model/sub/deep.py", "pipeline/schema.py"]:
        with open(tmp_path / name, "a") as f:
            f.write("# touched\n")
        seen.add(mf.code_version(str(tmp_path)))
    write(tmp_path / "pipeline" / "new.py", "")
    seen.add(mf.code_version(str(tmp_path)))
    os.rename(tmp_path / "pipeline" / "new.py", tmp_path / "pipeline" / "newer.py")
    seen.add(mf.code_version(str(tmp_path)))
    assert len(seen) == 1 + len(mf.CODE_FILES) + 3 + 2
    os.remove(tmp_path / "train.py")
    with pytest.raises(mf.FigureError, match=r"^cannot read train\.py \(No such file"):
        mf.code_version(str(tmp_path))


def test_made_data_means_dataset_json_was_written_during_the_training(tmp_path):
    manifest = tmp_path / "dataset.json"
    manifest.write_text("{}")
    os.utime(manifest, (1000.0, 1000.0))
    assert mf.written_since(str(manifest), 1000.0)
    assert not mf.written_since(str(manifest), 1000.5)
    assert not mf.written_since(str(tmp_path / "missing.json"), 0.0)


def test_a_left_out_picture_is_removed_only_once_the_new_files_are_in_place(tmp_path, capsys):
    old = tmp_path / "eyeglasses.png"
    old.write_bytes(b"an earlier dataset's picture")
    figures = mf.choose_figures({"attribute_names": ["Smiling"]})
    assert "eyeglasses" not in [f.name for f in figures] and old.exists()
    mf.remove_left_out(mf.choose_figures({"attribute_names": ["Eyeglasses"]}), str(tmp_path))
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
