"""pipeline/cartoon.py: what is drawn is what the labels say, where the landmarks say."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facevae.pipeline import cartoon


def _luminance(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), np.float32)  # (H, W)


def _pair(seed: int, name: str, extra: dict[str, bool] | None = None):
    """The same sampled picture drawn with attribute `name` on and off."""
    person = cartoon.make_person(np.random.default_rng([seed, 99]))
    faces = []
    for value in (True, False):
        look = cartoon.sample_look(np.random.default_rng([seed, 100]), person)
        look = cartoon.with_attributes(look, {name: value, **(extra or {})})
        faces.append((look, cartoon.render(look), cartoon.attributes_of(look)))
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
    mark = cartoon.landmarks_of(look)
    box = (slice(mark[7], mark[7] + 6), slice(mark[6] + 4, mark[8] - 3))
    assert _luminance(on)[box].mean() < _luminance(off)[box].mean() - 20

    look, on, off = _pair(seed, "Smiling", {"Goatee": False})  # a goatee follows the lip
    left, top, right, bottom = _changed_box(on, off)
    mark = cartoon.landmarks_of(look)
    assert left >= mark[6] - 3 and right <= mark[8] + 4
    assert top >= mark[5] + 2 and bottom <= mark[7] + 20  # between nose tip and chin
    assert mark[7] < look.eye_y + look.person.mouth_dy  # smiling raises the corners


@pytest.mark.parametrize("seed", range(4))
def test_mustache_and_pale_skin(seed):
    look, on, off = _pair(seed, "Mustache", {"Male": True, "Bald": False, "Blond_Hair": False})
    mark = cartoon.landmarks_of(look)
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
    assert top > cartoon.landmarks_of(look)[7] and abs(bottom - chin) <= 2


def test_forced_attributes_that_cannot_be_seen_are_refused():
    person = cartoon.make_person(np.random.default_rng(0))
    look = cartoon.sample_look(np.random.default_rng(1), person)
    with pytest.raises(ValueError, match="cannot be drawn together"):
        cartoon.with_attributes(look, {"Bangs": True, "Wearing_Hat": True})
    with pytest.raises(ValueError, match="not drawn"):
        cartoon.with_attributes(look, {"Attractive": True})


def test_landmarks_fall_on_the_drawn_features():
    for index in range(30):
        face, identity = cartoon.face_for(11, index, 200)
        lum = _luminance(face.image)
        lx, ly, rx, ry, nx, ny, mlx, mly, mrx, mry = face.landmarks
        assert lum[ly, lx] < 50 and lum[ry, rx] < 50  # pupils
        assert lx < nx < rx and ly < ny < mly and mlx < nx < mrx  # nose between eyes and mouth
        cheek = lum[ly + 18 : ly + 21, lx - 1 : lx + 2].mean()
        for x, y in ((mlx, mly), (mrx, mry)):  # mouth corners: the darker lip corner
            assert lum[y - 1 : y + 2, x - 1 : x + 2].mean() < 0.85 * cheek
        nose = np.asarray(face.image, np.float32)[ny, nx]  # the lit tip of the nose
        skin = np.array(cartoon.person_for(11, identity).skin, np.float32)
        assert np.abs(nose - np.minimum(255, skin * 1.06)).max() < 30
