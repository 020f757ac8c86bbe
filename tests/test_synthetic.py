"""pipeline/synthetic.py: layouts, file formats, determinism, truthful labels, the output
folder, the demo's dataset; and tools/make_synthetic.py, the command line, end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facevae.pipeline import cartoon, files, schema, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 24


def _files(root: str) -> dict[str, bytes]:
    """Every file under root by relative path -> content."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _lines(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("official") / "src")
    synthetic.write_source(out, N, seed=3, workers=1, verbose=False)
    return out


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("kaggle") / "src")
    synthetic.write_source(out, 12, seed=3, layout="kaggle", workers=1, verbose=False)
    return out


def _check_images(folder: str, names: list[str]) -> None:
    assert sorted(os.listdir(folder)) == sorted(names)
    for name in names:
        with Image.open(os.path.join(folder, name)) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (178, 218))


def test_official_layout_and_formats(official):
    names = [f"{i:06d}.jpg" for i in range(1, N + 1)]
    assert sorted(os.listdir(official)) == [
        "identity_CelebA.txt",
        "img_align_celeba",
        "list_attr_celeba.txt",
        "list_eval_partition.txt",
        "list_landmarks_align_celeba.txt",
    ]
    _check_images(os.path.join(official, "img_align_celeba"), names)

    partition = [line.split() for line in _lines(os.path.join(official, "list_eval_partition.txt"))]
    assert [row[0] for row in partition] == names
    splits = [int(row[1]) for row in partition]
    assert set(splits) == {0, 1, 2}  # even 24 images get all three splits
    assert splits.count(0) >= 0.7 * N

    attr = _lines(os.path.join(official, "list_attr_celeba.txt"))
    assert attr[0] == str(N)
    assert tuple(attr[1].split()) == schema.CELEBA_ATTRIBUTES
    assert attr[2].startswith("000001.jpg ") and len(attr) == N + 2
    values = np.array([[int(v) for v in line.split()[1:]] for line in attr[2:]])
    assert values.shape == (N, 40) and set(np.unique(values)) <= {-1, 1}
    assert [line.split()[0] for line in attr[2:]] == names

    marks = _lines(os.path.join(official, "list_landmarks_align_celeba.txt"))
    assert marks[0] == str(N)
    assert marks[1] == (
        "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
        "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    )
    points = np.array([[int(v) for v in line.split()[1:]] for line in marks[2:]])
    assert points.shape == (N, 10)
    assert (points[:, 0::2] >= 0).all() and (points[:, 0::2] < 178).all()
    assert (points[:, 1::2] >= 40).all() and (points[:, 1::2] < 218).all()  # inside the crop

    identity = [line.split() for line in _lines(os.path.join(official, "identity_CelebA.txt"))]
    assert [row[0] for row in identity] == names
    ids = [int(row[1]) for row in identity]
    assert min(ids) >= 1 and max(ids) <= cartoon.num_people(N)


def test_official_labels_are_the_drawn_ones(official):
    attr = _lines(os.path.join(official, "list_attr_celeba.txt"))[2:]
    marks = _lines(os.path.join(official, "list_landmarks_align_celeba.txt"))[2:]
    ids = _lines(os.path.join(official, "identity_CelebA.txt"))
    for i in (0, 7, N - 1):
        face, identity = cartoon.face_for(3, i, N)
        assert tuple(int(v) for v in attr[i].split()[1:]) == face.attribute_vector
        assert tuple(int(v) for v in marks[i].split()[1:]) == face.landmarks
        assert int(ids[i].split()[1]) == identity


def test_identity_keeps_person_traits(official):
    attr = _lines(os.path.join(official, "list_attr_celeba.txt"))
    columns = [schema.CELEBA_ATTRIBUTES.index(a) for a in ("Male", "Pale_Skin", "Mustache")]
    ids = [int(line.split()[1]) for line in _lines(os.path.join(official, "identity_CelebA.txt"))]
    traits: dict[int, tuple] = {}
    for identity, line in zip(ids, attr[2:], strict=True):
        values = [int(v) for v in line.split()[1:]]
        assert traits.setdefault(identity, tuple(values[c] for c in columns)) == tuple(
            values[c] for c in columns
        )


def test_kaggle_layout_and_formats(kaggle):
    names = [f"{i:06d}.jpg" for i in range(1, 13)]
    assert sorted(os.listdir(kaggle)) == [
        "img_align_celeba",
        "list_attr_celeba.csv",
        "list_eval_partition.csv",
        "list_landmarks_align_celeba.csv",
    ]
    _check_images(os.path.join(kaggle, "img_align_celeba", "img_align_celeba"), names)
    partition = _lines(os.path.join(kaggle, "list_eval_partition.csv"))
    assert partition[0] == "image_id,partition"
    assert [line.split(",")[0] for line in partition[1:]] == names
    assert {line.split(",")[1] for line in partition[1:]} == {"0", "1", "2"}
    attr = _lines(os.path.join(kaggle, "list_attr_celeba.csv"))
    assert attr[0].split(",") == ["image_id", *schema.CELEBA_ATTRIBUTES]
    assert all({v for v in line.split(",")[1:]} <= {"1", "-1"} for line in attr[1:])
    assert len(attr) == 13
    marks = _lines(os.path.join(kaggle, "list_landmarks_align_celeba.csv"))
    assert marks[0].split(",") == ["image_id", *cartoon.LANDMARK_NAMES]
    assert all(len(line.split(",")) == 11 for line in marks[1:])


def test_same_seed_is_byte_identical_across_workers(official, tmp_path):
    two = str(tmp_path / "two")
    synthetic.write_source(two, N, seed=3, workers=2, verbose=False)
    assert _files(two) == _files(official)
    other = str(tmp_path / "other")
    synthetic.write_source(other, N, seed=4, workers=1, verbose=False)
    other_files = _files(other)
    assert other_files.keys() == _files(official).keys()
    assert (
        other_files["img_align_celeba/000001.jpg"]
        != _files(official)["img_align_celeba/000001.jpg"]
    )


# --------------------------------------------------------------------------- the output folder


def test_refuses_existing_output_unless_overwrite(tmp_path):
    out = tmp_path / "src"
    synthetic.write_source(str(out), 4, seed=1, workers=1, verbose=False)
    before = _files(str(out))
    with pytest.raises(FileExistsError, match="`overwrite`"):
        synthetic.write_source(str(out), 6, verbose=False)
    assert _files(str(out)) == before
    for layout in synthetic.LAYOUTS:  # a source of either layout is replaced, whatever its layout
        summary = synthetic.write_source(str(out), 6, layout=layout, overwrite=True, verbose=False)
        assert summary["n"] == 6 and sum(summary["splits"].values()) == 6
        images = os.path.join(str(out), *synthetic.IMAGE_DIRS[layout])
        assert sorted(os.listdir(images)) == [synthetic.image_name(i) for i in range(6)]
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no temporary folders left


@pytest.mark.parametrize(
    "stray", ["keep.txt", "img_align_celeba/notes.txt", "img_align_celeba/extra/", "photos/"]
)
def test_overwrite_never_deletes_files_it_did_not_write(tmp_path, stray):
    out = tmp_path / "src"
    synthetic.write_source(str(out), 4, workers=1, verbose=False)
    path = out / stray
    if stray.endswith("/"):
        path.mkdir()
    else:
        path.write_text("mine")
    before = _files(str(out))
    for overwrite in (False, True):
        with pytest.raises(FileExistsError) as error:
            synthetic.write_source(str(out), 4, overwrite=overwrite, verbose=False)
        message = str(error.value)
        assert str(out) in message and stray in message and "even with `overwrite`" in message
    assert _files(str(out)) == before and path.exists()
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    seen = []

    def broken(*args):
        seen.append(sorted(os.listdir(tmp_path)))
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "_write_labels", broken)
    with pytest.raises(OSError, match="disk full") as error:
        synthetic.write_source(str(tmp_path / "src"), 4, workers=1, verbose=False)
    assert seen == [[".src.incomplete"]]  # a fixed name, so a killed run's leftover is found
    assert os.listdir(tmp_path) == []
    # A failed write names the folder it was for, and that it is unchanged.
    assert isinstance(error.value, files.WriteError) and error.value.path.endswith("src")
    assert "what was there is unchanged" in str(error.value)


def test_leftover_of_a_killed_run_is_removed(tmp_path):
    leftover = tmp_path / ".src.incomplete" / "img_align_celeba"
    leftover.mkdir(parents=True)
    (leftover / "000001.jpg").write_bytes(b"half a jpeg")
    synthetic.write_source(str(tmp_path / "src"), 4, workers=1, verbose=False)
    assert sorted(os.listdir(tmp_path)) == ["src"]
    assert len(os.listdir(tmp_path / "src" / "img_align_celeba")) == 4


def test_n_over_the_cap_stops_in_one_line_before_drawing(tmp_path):
    with pytest.raises(ValueError, match=r"`n` must be in 1\.\.1,000,000, got 1,000,001"):
        synthetic.write_source(str(tmp_path / "big"), synthetic.MAX_IMAGES + 1)
    with pytest.raises(ValueError, match="`layout` 'celeba' is not one of"):
        synthetic.write_source(str(tmp_path / "big"), 4, layout="celeba")
    assert not os.listdir(tmp_path)  # nothing started


# --------------------------------------------------------------------------- the demo's dataset


def test_demo_dataset_is_a_prepared_synthetic_source_in_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert synthetic.demo_data_dir() == str(tmp_path / "cache" / "facevae" / synthetic.DEMO_DATA)
    monkeypatch.setattr(synthetic, "DEMO_SOURCE_IMAGES", 20)  # the real 4,000 take a while
    data_dir = synthetic.demo_data_dir()
    manifest = synthetic.make_demo_dataset(data_dir, verbose=False)
    assert isinstance(manifest, schema.Manifest) and manifest == schema.Manifest.read(data_dir)
    assert manifest.source_layout == "official" and manifest.image_shape == (96, 96, 3)
    assert sum(split.num_examples for split in manifest.splits.values()) == 20
    assert sorted(os.listdir(tmp_path / "cache" / "facevae")) == [synthetic.DEMO_DATA]
    assert capsys.readouterr().out == ""
    synthetic.make_demo_dataset(data_dir)  # again: replaces its own dataset
    out = capsys.readouterr().out
    assert out.startswith(f"demo: writing 20 synthetic faces to {data_dir}-source, then ")
    assert len([line for line in out.splitlines() if line.startswith("demo:")]) == 1


def test_the_library_imports_no_tensorflow():
    # Drawing faces and preparing a source (until the shards are written) start fast.
    code = (
        "import sys\n"
        "from facevae.pipeline import prepare, synthetic\n"
        "assert 'tensorflow' not in sys.modules, 'imported TensorFlow'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- the command line


def test_command_line_end_to_end(tmp_path):
    """A source, its refusal to be replaced, the cap on --n and --help, as the user runs them
    (no TensorFlow to start: the four run at once in about a second)."""
    out = str(tmp_path / "cli")
    cmd = [sys.executable, "-m", "tools.make_synthetic", "--out", out, "--n", "8"]

    def start(args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    capped = tmp_path / "capped"
    help_run = start([sys.executable, "-m", "tools.make_synthetic", "--help"])
    cap_run = start(
        [sys.executable, "-m", "tools.make_synthetic", "--out", str(capped), "--n", "100000000"]
    )
    done = start(cmd)
    _, stderr = done.communicate(timeout=120)
    assert done.returncode == 0, stderr
    assert "8 faces" in stderr
    assert len(os.listdir(os.path.join(out, "img_align_celeba"))) == 8
    again = start(cmd)
    _, again_err = again.communicate(timeout=120)
    assert again.returncode != 0 and "--overwrite" in again_err
    assert "Traceback" not in again_err and "`" not in again_err
    assert again_err.startswith("make_synthetic: error: --out ")

    helped, _ = help_run.communicate(timeout=120)
    for flag in ("--out", "--n", "--seed", "--workers", "--layout", "overwrite"):
        assert flag in helped
    assert "at most 1,000,000" in " ".join(helped.split())  # the cap is in --help

    _, cap_err = cap_run.communicate(timeout=120)
    assert cap_run.returncode != 0 and "Traceback" not in cap_err
    assert "--n=100000000" in cap_err and "1000000" in cap_err
    assert not capped.exists()
