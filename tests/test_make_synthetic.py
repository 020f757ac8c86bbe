"""Tests of tools/make_synthetic.py: layouts, file formats, determinism, truthful labels."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facevae.tools import make_synthetic as ms

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
    ms.write_source(out, N, seed=3, workers=1, verbose=False)
    return out


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("kaggle") / "src")
    ms.write_source(out, 12, seed=3, layout="kaggle", workers=1, verbose=False)
    return out


def _luminance(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), np.float32)  # (H, W)


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
    assert tuple(attr[1].split()) == ms.CELEBA_ATTRIBUTES
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
    assert min(ids) >= 1 and max(ids) <= ms.num_people(N)


def test_official_labels_are_the_drawn_ones(official):
    attr = _lines(os.path.join(official, "list_attr_celeba.txt"))[2:]
    marks = _lines(os.path.join(official, "list_landmarks_align_celeba.txt"))[2:]
    ids = _lines(os.path.join(official, "identity_CelebA.txt"))
    for i in (0, 7, N - 1):
        face, identity = ms.face_for(3, i, N)
        assert tuple(int(v) for v in attr[i].split()[1:]) == face.attribute_vector
        assert tuple(int(v) for v in marks[i].split()[1:]) == face.landmarks
        assert int(ids[i].split()[1]) == identity


def test_identity_keeps_person_traits(official):
    attr = _lines(os.path.join(official, "list_attr_celeba.txt"))
    columns = [ms.CELEBA_ATTRIBUTES.index(a) for a in ("Male", "Pale_Skin", "Mustache")]
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
    assert attr[0].split(",") == ["image_id", *ms.CELEBA_ATTRIBUTES]
    assert all({v for v in line.split(",")[1:]} <= {"1", "-1"} for line in attr[1:])
    assert len(attr) == 13
    marks = _lines(os.path.join(kaggle, "list_landmarks_align_celeba.csv"))
    assert marks[0].split(",") == ["image_id", *ms.LANDMARK_NAMES]
    assert all(len(line.split(",")) == 11 for line in marks[1:])


def test_same_seed_is_byte_identical_across_workers(official, tmp_path):
    two = str(tmp_path / "two")
    ms.write_source(two, N, seed=3, workers=2, verbose=False)
    assert _files(two) == _files(official)
    other = str(tmp_path / "other")
    ms.write_source(other, N, seed=4, workers=1, verbose=False)
    other_files = _files(other)
    assert other_files.keys() == _files(official).keys()
    assert (
        other_files["img_align_celeba/000001.jpg"]
        != _files(official)["img_align_celeba/000001.jpg"]
    )


def _pair(seed: int, name: str, extra: dict[str, bool] | None = None):
    """The same sampled picture drawn with attribute `name` on and off."""
    person = ms.make_person(np.random.default_rng([seed, 99]))
    faces = []
    for value in (True, False):
        look = ms.sample_look(np.random.default_rng([seed, 100]), person)
        look = ms.with_attributes(look, {name: value, **(extra or {})})
        faces.append((look, ms.render(look), ms.attributes_of(look)))
    (look_on, on, attrs_on), (_, off, attrs_off) = faces
    assert attrs_on[name] == 1 and attrs_off[name] == -1
    return look_on, on, off


def _changed_box(a: Image.Image, b: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels that differ."""
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max(axis=2) > 0
    ys, xs = np.nonzero(diff)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("seed", range(6))
def test_eyeglasses_are_dark_frames_around_the_eyes(seed):
    look, on, off = _pair(seed, "Eyeglasses")
    left, top, right, bottom = _changed_box(on, off)
    assert top >= look.eye_y - 10 and bottom <= look.eye_y + 10  # only the eye band changes
    box = (slice(look.eye_y - 9, look.eye_y + 10), slice(left, right))
    assert _luminance(on)[box].mean() < _luminance(off)[box].mean() - 3


@pytest.mark.parametrize("seed", range(6))
def test_hair_colour_shows_on_top_of_the_head(seed):
    extra = {"Wearing_Hat": False}
    look, blond, _ = _pair(seed, "Blond_Hair", extra)
    _, black, _ = _pair(seed, "Black_Hair", extra)
    box = (slice(look.eye_y - 48, look.eye_y - 40), slice(look.cx - 8, look.cx + 9))
    assert _luminance(blond)[box].mean() > 150 > 60 > _luminance(black)[box].mean()


@pytest.mark.parametrize("seed", range(6))
def test_hat_covers_the_top_of_the_head_only(seed):
    look, on, off = _pair(seed, "Wearing_Hat", {"Bangs": False})
    _, _, _, bottom = _changed_box(on, off)
    assert bottom < look.eye_y - 14  # the brim stays above the eyebrows
    crown = np.asarray(on)[look.eye_y - 46, look.cx]
    assert np.abs(crown.astype(int) - look.hat_rgb).max() <= 2


@pytest.mark.parametrize("seed", range(6))
def test_open_mouth_is_dark_and_smile_only_moves_the_mouth(seed):
    look, on, off = _pair(seed, "Mouth_Slightly_Open", {"Smiling": False})
    mark = ms.landmarks_of(look)
    box = (slice(mark[7], mark[7] + 6), slice(mark[6] + 4, mark[8] - 3))
    assert _luminance(on)[box].mean() < _luminance(off)[box].mean() - 20

    look, on, off = _pair(seed, "Smiling", {"Goatee": False})  # a goatee follows the lip
    left, top, right, bottom = _changed_box(on, off)
    mark = ms.landmarks_of(look)
    assert left >= mark[6] - 3 and right <= mark[8] + 4
    assert top >= mark[5] + 2 and bottom <= mark[7] + 20  # between nose tip and chin
    assert mark[7] < look.eye_y + look.person.mouth_dy  # smiling raises the corners


@pytest.mark.parametrize("seed", range(4))
def test_mustache_and_pale_skin(seed):
    look, on, off = _pair(seed, "Mustache", {"Male": True, "Bald": False, "Blond_Hair": False})
    mark = ms.landmarks_of(look)
    box = (slice(mark[7] - 6, mark[7] - 2), slice(look.cx - 5, look.cx + 6))
    assert _luminance(on)[box].mean() < _luminance(off)[box].mean()

    look, on, off = _pair(seed, "Pale_Skin")
    cheek = (slice(look.eye_y + 14, look.eye_y + 18), slice(look.cx - 3, look.cx + 4))
    assert _luminance(on)[cheek].mean() > _luminance(off)[cheek].mean() + 10


@pytest.mark.parametrize("seed", range(4))
def test_bangs_cover_the_forehead_and_goatee_the_chin(seed):
    look, on, off = _pair(seed, "Bangs", {"Wearing_Hat": False, "Bald": False})
    hair = np.array(look.person.hair_rgb)
    forehead = np.asarray(on, np.int16)[look.eye_y - 18, look.cx - 4 : look.cx + 5]
    bare = np.asarray(off, np.int16)[look.eye_y - 18, look.cx - 4 : look.cx + 5]
    assert np.abs(forehead - hair).max() <= 2
    assert np.abs(bare - look.person.skin).max() <= 2

    look, on, off = _pair(seed, "Goatee", {"Male": True})
    _, top, _, bottom = _changed_box(on, off)
    chin = look.eye_y + 12 + look.person.face_ry
    assert top > ms.landmarks_of(look)[7] and abs(bottom - chin) <= 2


def test_forced_attributes_that_cannot_be_seen_are_refused():
    person = ms.make_person(np.random.default_rng(0))
    look = ms.sample_look(np.random.default_rng(1), person)
    with pytest.raises(ValueError, match="cannot be drawn together"):
        ms.with_attributes(look, {"Bangs": True, "Wearing_Hat": True})
    with pytest.raises(ValueError, match="not drawn"):
        ms.with_attributes(look, {"Attractive": True})


def test_landmarks_fall_on_the_drawn_features():
    for index in range(30):
        face, identity = ms.face_for(11, index, 200)
        lum = _luminance(face.image)
        lx, ly, rx, ry, nx, ny, mlx, mly, mrx, mry = face.landmarks
        assert lum[ly, lx] < 50 and lum[ry, rx] < 50  # pupils
        assert lx < nx < rx and ly < ny < mly and mlx < nx < mrx  # nose between eyes and mouth
        cheek = lum[ly + 18 : ly + 21, lx - 1 : lx + 2].mean()
        for x, y in ((mlx, mly), (mrx, mry)):  # mouth corners: the darker lip corner
            assert lum[y - 1 : y + 2, x - 1 : x + 2].mean() < 0.85 * cheek
        nose = np.asarray(face.image, np.float32)[ny, nx]  # the lit tip of the nose
        skin = np.array(ms.person_for(11, identity).skin, np.float32)
        assert np.abs(nose - np.minimum(255, skin * 1.06)).max() < 30


def test_refuses_existing_output_unless_overwrite(tmp_path):
    out = tmp_path / "src"
    ms.write_source(str(out), 4, seed=1, workers=1, verbose=False)
    before = _files(str(out))
    with pytest.raises(FileExistsError, match="--overwrite"):
        ms.write_source(str(out), 6, verbose=False)
    assert _files(str(out)) == before
    for layout in ms.LAYOUTS:  # a source of either layout is replaced, whatever its layout
        summary = ms.write_source(str(out), 6, layout=layout, overwrite=True, verbose=False)
        assert summary["n"] == 6 and sum(summary["splits"].values()) == 6
        images = os.path.join(str(out), *ms.IMAGE_DIRS[layout])
        assert sorted(os.listdir(images)) == [ms.image_name(i) for i in range(6)]
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no temporary folders left


@pytest.mark.parametrize(
    "stray", ["keep.txt", "img_align_celeba/notes.txt", "img_align_celeba/extra/", "photos/"]
)
def test_overwrite_never_deletes_files_it_did_not_write(tmp_path, stray):
    out = tmp_path / "src"
    ms.write_source(str(out), 4, workers=1, verbose=False)
    path = out / stray
    if stray.endswith("/"):
        path.mkdir()
    else:
        path.write_text("mine")
    before = _files(str(out))
    for overwrite in (False, True):
        with pytest.raises(FileExistsError) as error:
            ms.write_source(str(out), 4, overwrite=overwrite, verbose=False)
        message = str(error.value)
        assert str(out) in message and stray in message and "even with --overwrite" in message
    assert _files(str(out)) == before and path.exists()
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    seen = []

    def broken(*args):
        seen.append(sorted(os.listdir(tmp_path)))
        raise OSError("disk full")

    monkeypatch.setattr(ms, "_write_labels", broken)
    with pytest.raises(OSError, match="disk full"):
        ms.write_source(str(tmp_path / "src"), 4, workers=1, verbose=False)
    assert seen == [[".src.incomplete"]]  # a fixed name, so a killed run's leftover is found
    assert os.listdir(tmp_path) == []


def test_leftover_of_a_killed_run_is_removed(tmp_path):
    leftover = tmp_path / ".src.incomplete" / "img_align_celeba"
    leftover.mkdir(parents=True)
    (leftover / "000001.jpg").write_bytes(b"half a jpeg")
    ms.write_source(str(tmp_path / "src"), 4, workers=1, verbose=False)
    assert sorted(os.listdir(tmp_path)) == ["src"]
    assert len(os.listdir(tmp_path / "src" / "img_align_celeba")) == 4


def test_cli(tmp_path):
    out = str(tmp_path / "cli")
    cmd = [sys.executable, "-m", "tools.make_synthetic", "--out", out, "--n", "8"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "8 faces" in done.stderr
    assert len(os.listdir(os.path.join(out, "img_align_celeba"))) == 8
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "tools.make_synthetic", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for flag in ("--out", "--n", "--seed", "--workers", "--layout", "overwrite"):
        assert flag in helped.stdout
    assert "at most 1,000,000" in " ".join(helped.stdout.split())  # the cap is in --help


def test_n_over_the_cap_stops_in_one_line_before_drawing(tmp_path):
    with pytest.raises(ValueError, match=r"--n must be in 1\.\.1,000,000, got 1,000,001"):
        ms.write_source(str(tmp_path / "big"), ms.MAX_IMAGES + 1)
    assert not os.listdir(tmp_path)  # nothing started
    cmd = [sys.executable, "-m", "tools.make_synthetic", "--out", str(tmp_path / "cli")]
    done = subprocess.run(
        [*cmd, "--n", "100000000"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--n=100000000" in done.stderr and "1000000" in done.stderr
    assert not os.listdir(tmp_path)
