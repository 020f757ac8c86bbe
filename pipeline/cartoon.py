"""Procedural cartoon faces: the face model and its renderer, for the synthetic source.

A `Person` (what stays fixed for one identity: face geometry, skin tone, hair, beard) is
drawn as a `Look` (expression, accessories, background, clothes and a small alignment
jitter) into a 178x218 RGB `Face` with its CelebA attributes and landmarks. `face_for(seed,
index, n)` draws image `index` of an n-image source from (seed, index) only, so a source
is byte-identical whatever the number of processes drawing it (pipeline/synthetic.py
writes it).

Attributes drawn and recorded truthfully (1 when visible in the picture, else -1):
    Male, Smiling, Mouth_Slightly_Open, Eyeglasses, Wearing_Hat, Bangs, Bald,
    Black_Hair, Blond_Hair, Brown_Hair, Gray_Hair (at most one; red hair sets none),
    Wavy_Hair, Straight_Hair, Mustache, Goatee, No_Beard, 5_o_Clock_Shadow, Pale_Skin,
    Rosy_Cheeks, Wearing_Lipstick, Wearing_Earrings, Wearing_Necklace, Wearing_Necktie,
    Narrow_Eyes, Bushy_Eyebrows.
Every other CelebA attribute (Attractive, Young, Big_Nose, ...) is not drawn and is -1 in
every row. Landmarks are the pupil centres, the nose tip and the mouth corners as drawn
("left" is the image's left, as in CelebA).

One module, over 500 lines, because its parts are one drawing: the attributes say what
the painter draws, and the landmarks and every drawing function share the same face
geometry (outline, hairline, mouth curves); split, each part would import the others.
Pure numpy + PIL, so processes that draw faces start fast.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from facevae.pipeline.schema import CELEBA_ATTRIBUTES, CELEBA_IMAGE_SIZE

LANDMARK_NAMES = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)  # fmt: skip
WIDTH, HEIGHT = CELEBA_IMAGE_SIZE  # aligned CelebA

_SCALE = 2  # drawn at 2x, then box-downscaled: cheap anti-aliasing
# Independent RNG streams per (seed, stream, index): images, people and the split never
# share random numbers, so one can change without shifting the others.
IMAGE_STREAM, PERSON_STREAM, SPLIT_STREAM = 0, 1, 2

Colour = tuple[int, int, int]

HAIR_COLOURS: dict[str, Colour] = {
    "black": (28, 22, 22),
    "brown": (100, 62, 36),
    "blond": (226, 190, 118),
    "gray": (172, 170, 168),
    "red": (168, 72, 36),  # CelebA has no red-hair attribute: recorded as no colour
    "none": (110, 90, 80),  # bald: only eyebrows and beard use it
}
HAIR_ATTRIBUTES = {
    "black": "Black_Hair",
    "brown": "Brown_Hair",
    "blond": "Blond_Hair",
    "gray": "Gray_Hair",
}
PALE_SKINS: tuple[Colour, ...] = ((252, 232, 220), (248, 226, 214))
SKINS: tuple[Colour, ...] = (
    (236, 198, 172),
    (222, 172, 138),
    (196, 142, 106),
    (160, 108, 76),
    (112, 76, 54),
)
IRISES: tuple[Colour, ...] = ((92, 58, 32), (60, 110, 170), (80, 120, 70), (130, 100, 50))
FRAMES: tuple[Colour, ...] = ((20, 20, 24), (70, 40, 25), (25, 35, 90), (100, 20, 30))
LIPSTICKS: tuple[Colour, ...] = ((192, 28, 48), (204, 60, 112), (140, 28, 60))


@dataclasses.dataclass(frozen=True)
class Person:
    """What stays fixed for one identity (pixel sizes in the 178x218 frame)."""

    male: bool
    skin: Colour
    pale: bool
    face_rx: float  # half-width of the face
    face_ry: float  # half-height of the face
    jaw: float  # 0 round .. 1 square lower face
    eye_dx: int  # half the distance between the pupils
    eye_rx: float
    eye_ry: float
    narrow_eyes: bool
    iris: Colour
    brow_width: float
    bushy_brows: bool
    nose_dy: int  # eye line to nose tip
    nose_w: float
    mouth_dy: int  # eye line to the mouth corners of a neutral mouth
    mouth_dx: int  # half the mouth width
    smile_lift: int  # how far a smile raises the mouth corners
    hair: str  # a HAIR_COLOURS key; "none" is bald
    hair_rgb: Colour
    hair_volume: float
    hairline: float  # forehead height below the top of the face
    long_hair: bool
    wavy: bool
    bangs_style: bool
    mustache: bool
    goatee: bool


@dataclasses.dataclass(frozen=True)
class Look:
    """One picture of a person: expression, accessories, framing and colours."""

    person: Person
    cx: int  # face centre x
    eye_y: int  # the eye line
    smiling: bool
    mouth_open: bool
    eyeglasses: bool
    frame_rgb: Colour
    hat: bool
    hat_rgb: Colour
    hat_brim: bool
    bangs: bool
    lipstick: bool
    lipstick_rgb: Colour
    rosy: bool
    stubble: bool
    earrings: bool
    necklace: bool
    necktie: bool
    shirt_rgb: Colour
    tie_rgb: Colour
    background: tuple[Colour, Colour]  # top, bottom of a vertical gradient
    sunglasses: bool = False  # dark lenses when eyeglasses (the eyes show through faintly)


@dataclasses.dataclass(frozen=True)
class Face:
    """A drawn face: the 178x218 RGB image and its labels."""

    image: Image.Image
    attributes: dict[str, int]  # every CELEBA_ATTRIBUTES name -> 1 or -1
    landmarks: tuple[int, ...]  # LANDMARK_NAMES order, pixels in the image

    @property
    def attribute_vector(self) -> tuple[int, ...]:
        return tuple(self.attributes[name] for name in CELEBA_ATTRIBUTES)


# --------------------------------------------------------------------------- sampling


def _jitter(rng: np.random.Generator, colour: Colour, amount: int) -> Colour:
    noise = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(colour, noise, strict=True))


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _muted(rng: np.random.Generator, low: int, high: int) -> Colour:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def make_person(rng: np.random.Generator) -> Person:
    """Samples one identity. Every draw is unconditional so the RNG use is fixed."""
    male = bool(rng.random() < 0.45)
    pale = bool(rng.random() < 0.12)
    skin = _jitter(rng, _pick(rng, PALE_SKINS if pale else SKINS), 6)
    narrow = bool(rng.random() < 0.15)
    bushy = bool(rng.random() < (0.35 if male else 0.1))
    bald = bool(rng.random() < 0.25) and male
    hair = str(rng.choice(["black", "brown", "blond", "gray", "red"], p=[0.3, 0.3, 0.2, 0.1, 0.1]))
    hair = "none" if bald else hair
    long_hair = bool(rng.random() < (0.1 if male else 0.85))
    wavy = bool(rng.random() < 0.35)
    bangs_style = bool(rng.random() < (0.2 if male else 0.4))
    mustache = bool(rng.random() < 0.3) and male
    goatee = bool(rng.random() < 0.25) and male
    return Person(
        male=male,
        skin=skin,
        pale=pale,
        face_rx=float(rng.uniform(42, 48) + (1.5 if male else 0.0)),
        face_ry=float(rng.uniform(56, 63)),
        jaw=float(rng.uniform(0.4, 1.0) if male else rng.uniform(0.0, 0.5)),
        eye_dx=int(rng.integers(17, 22)),
        eye_rx=float(rng.uniform(6.5, 8.0)),
        eye_ry=float(rng.uniform(2.0, 2.6) if narrow else rng.uniform(3.6, 4.4)),
        narrow_eyes=narrow,
        iris=_jitter(rng, _pick(rng, IRISES), 10),
        brow_width=float(rng.uniform(3.6, 4.6) if bushy else rng.uniform(1.4, 2.2)),
        bushy_brows=bushy,
        nose_dy=int(rng.integers(27, 33)),
        nose_w=float(rng.uniform(4.5, 7.0)),
        mouth_dy=int(rng.integers(41, 46)),
        mouth_dx=int(rng.integers(13, 19)),
        smile_lift=int(rng.integers(3, 5)),
        hair=hair,
        hair_rgb=_jitter(rng, HAIR_COLOURS[hair], 12),
        hair_volume=float(rng.uniform(6, 12)),
        hairline=float(rng.uniform(12, 18)),
        long_hair=long_hair,
        wavy=wavy,
        bangs_style=bangs_style,
        mustache=mustache,
        goatee=goatee,
    )


def sample_look(rng: np.random.Generator, person: Person) -> Look:
    """Samples one picture of `person`. Every draw is unconditional so the RNG use is fixed."""
    male = person.male
    return Look(
        person=person,
        cx=int(rng.integers(87, 92)),
        eye_y=int(rng.integers(108, 114)),
        smiling=bool(rng.random() < 0.5),
        mouth_open=bool(rng.random() < 0.45),
        eyeglasses=bool(rng.random() < 0.2),
        frame_rgb=_jitter(rng, _pick(rng, FRAMES), 8),
        hat=bool(rng.random() < 0.12),
        hat_rgb=_muted(rng, 30, 230),
        hat_brim=bool(rng.random() < 0.5),
        bangs=bool(rng.random() < 0.85) and person.bangs_style,
        lipstick=bool(rng.random() < 0.6) and not male,
        lipstick_rgb=_jitter(rng, _pick(rng, LIPSTICKS), 10),
        rosy=bool(rng.random() < 0.2),
        stubble=bool(rng.random() < 0.3) and male,
        earrings=bool(rng.random() < 0.4) and not male,
        necklace=bool(rng.random() < 0.3) and not male,
        necktie=bool(rng.random() < 0.3) and male,
        shirt_rgb=_muted(rng, 20, 235),
        tie_rgb=_muted(rng, 20, 200),
        background=(_muted(rng, 40, 250), _muted(rng, 20, 230)),
        sunglasses=bool(rng.random() < 0.4),  # drawn last: the draws above keep their values
    )


# --------------------------------------------------------------------------- attributes


def attributes_of(look: Look) -> dict[str, int]:
    """The 40 CelebA attributes of a look as 1/-1: 1 only where it is visible when drawn."""
    p = look.person
    has_hair = p.hair != "none"
    on = {
        "Male": p.male,
        "Smiling": look.smiling,
        "Mouth_Slightly_Open": look.mouth_open,
        "Eyeglasses": look.eyeglasses,
        "Wearing_Hat": look.hat,
        # A hat covers the forehead, so bangs and a bald crown are not visible under it.
        "Bangs": look.bangs and has_hair and not look.hat,
        "Bald": not has_hair and not look.hat,
        "Wavy_Hair": has_hair and p.wavy,
        "Straight_Hair": has_hair and not p.wavy,
        "Mustache": p.mustache,
        "Goatee": p.goatee,
        "No_Beard": not (p.mustache or p.goatee),
        "5_o_Clock_Shadow": look.stubble,
        "Pale_Skin": p.pale,
        "Rosy_Cheeks": look.rosy,
        "Wearing_Lipstick": look.lipstick,
        "Wearing_Earrings": look.earrings,
        "Wearing_Necklace": look.necklace,
        "Wearing_Necktie": look.necktie,
        "Narrow_Eyes": p.narrow_eyes,
        "Bushy_Eyebrows": p.bushy_brows,
    }
    for colour, name in HAIR_ATTRIBUTES.items():
        on[name] = p.hair == colour  # side hair shows the colour even under a hat
    return {name: 1 if on.get(name, False) else -1 for name in CELEBA_ATTRIBUTES}


DRAWN_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair",
    "Bushy_Eyebrows", "Eyeglasses", "Goatee", "Gray_Hair", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Pale_Skin", "Rosy_Cheeks", "Smiling",
    "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie",
)  # fmt: skip

_LOOK_FIELDS = {
    "Smiling": "smiling",
    "Mouth_Slightly_Open": "mouth_open",
    "Eyeglasses": "eyeglasses",
    "Wearing_Hat": "hat",
    "Bangs": "bangs",
    "Wearing_Lipstick": "lipstick",
    "Rosy_Cheeks": "rosy",
    "5_o_Clock_Shadow": "stubble",
    "Wearing_Earrings": "earrings",
    "Wearing_Necklace": "necklace",
    "Wearing_Necktie": "necktie",
}
_PERSON_FIELDS = {
    "Male": "male",
    "Mustache": "mustache",
    "Goatee": "goatee",
    "Wavy_Hair": "wavy",
}


def _person_with(person: Person, name: str, value: bool) -> Person:
    """`person` changed so that attribute `name` is drawn as `value`."""
    if name in _PERSON_FIELDS:
        return dataclasses.replace(person, **{_PERSON_FIELDS[name]: value})
    if name == "Straight_Hair":
        return dataclasses.replace(person, wavy=not value)
    if name == "No_Beard":
        return dataclasses.replace(person, mustache=False, goatee=False) if value else person
    if name == "Pale_Skin" and value != person.pale:
        skin = PALE_SKINS[0] if value else SKINS[1]
        return dataclasses.replace(person, pale=value, skin=skin)
    if name == "Narrow_Eyes" and value != person.narrow_eyes:
        return dataclasses.replace(person, narrow_eyes=value, eye_ry=2.3 if value else 4.0)
    if name == "Bushy_Eyebrows" and value != person.bushy_brows:
        return dataclasses.replace(person, bushy_brows=value, brow_width=4.2 if value else 1.8)
    hair = {"Bald": "none", **{attr: colour for colour, attr in HAIR_ATTRIBUTES.items()}}
    if name in hair:
        target = hair[name] if value else ("red" if person.hair == hair[name] else person.hair)
        return dataclasses.replace(person, hair=target, hair_rgb=HAIR_COLOURS[target])
    return person


def with_attributes(look: Look, forced: Mapping[str, bool]) -> Look:
    """`look` changed so that each forced attribute is drawn as given.

    Raises ValueError for names that are not drawn and for combinations that cannot be
    seen together (e.g. Bangs under Wearing_Hat), naming the conflict.
    """
    unknown = sorted(set(forced) - set(DRAWN_ATTRIBUTES))
    if unknown:
        raise ValueError(f"attributes {unknown} are not drawn; choose from {DRAWN_ATTRIBUTES}")
    person = look.person
    for name, value in forced.items():
        person = _person_with(person, name, bool(value))
    look_fields = {_LOOK_FIELDS[k]: bool(v) for k, v in forced.items() if k in _LOOK_FIELDS}
    look = dataclasses.replace(look, person=person, **look_fields)
    recorded = attributes_of(look)
    clashes = {k: v for k, v in forced.items() if (recorded[k] == 1) != bool(v)}
    if clashes:
        raise ValueError(f"attributes {clashes} cannot be drawn together with {dict(forced)}")
    return look


# --------------------------------------------------------------------------- geometry


def landmarks_of(look: Look) -> tuple[int, ...]:
    """Pupil centres, nose tip and mouth corners as drawn, in LANDMARK_NAMES order."""
    p = look.person
    mouth_y = look.eye_y + p.mouth_dy - (p.smile_lift if look.smiling else 0)
    return (
        look.cx - p.eye_dx, look.eye_y, look.cx + p.eye_dx, look.eye_y,
        look.cx, look.eye_y + p.nose_dy,
        look.cx - p.mouth_dx, mouth_y, look.cx + p.mouth_dx, mouth_y,
    )  # fmt: skip


def _face_centre_y(look: Look) -> float:
    return look.eye_y + 12.0


def _face_outline(look: Look, steps: int = 72) -> list[tuple[float, float]]:
    """The face as a polygon: an ellipse whose lower half is narrower and, with a square
    jaw, closer to a rectangle (a superellipse)."""
    p = look.person
    cy = _face_centre_y(look)
    points = []
    for i in range(steps):
        t = 2 * math.pi * i / steps
        c, s = math.cos(t), math.sin(t)
        lower = max(s, 0.0)  # 0 above the cheek line, 1 at the chin
        width = p.face_rx * (1 - lower * (0.08 if p.male else 0.13))
        exponent = 2 / (2 + lower * 1.6 * p.jaw)
        x = look.cx + width * math.copysign(abs(c) ** exponent, c)
        y = cy + p.face_ry * math.copysign(abs(s) ** (2 / (2 + lower * 0.8 * p.jaw)), s)
        points.append((x, y))
    return points


def _mouth_curves(look: Look, steps: int = 17) -> tuple[list, list, float]:
    """Upper and lower edge of the mouth opening (equal when closed), left to right."""
    p = look.person
    corner_y = landmarks_of(look)[7]
    centre_y = look.eye_y + p.mouth_dy + (1 if look.smiling else 0)
    lift = centre_y - corner_y
    opening = (5.5 + (2.0 if look.smiling else 0.0)) if look.mouth_open else 0.0
    upper, lower = [], []
    for i in range(steps):
        u = -1 + 2 * i / (steps - 1)
        x = look.cx + u * p.mouth_dx
        y = centre_y - lift * u * u
        upper.append((x, y))
        lower.append((x, y + opening * (1 - u * u)))
    return upper, lower, opening


# --------------------------------------------------------------------------- drawing


def _shade(colour: Colour, factor: float) -> Colour:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


class _Canvas:
    """ImageDraw at _SCALE x, addressed in the coordinates of the final 178x218 image."""

    def __init__(self, background: tuple[Colour, Colour]) -> None:
        w, h = WIDTH * _SCALE, HEIGHT * _SCALE
        top, bottom = (np.array(c, np.float32) for c in background)
        ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        column = (top + (bottom - top) * ramp).astype(np.uint8)  # (H, 3)
        pixels = np.ascontiguousarray(np.broadcast_to(column[:, None, :], (h, w, 3)))
        self.image = Image.fromarray(pixels, "RGB")
        self.draw = ImageDraw.Draw(self.image, "RGBA")  # RGBA fills blend (stubble, blush)

    @staticmethod
    def _xy(x: float, y: float) -> tuple[float, float]:
        # Pixel centre x of the small image is the centre of pixels 2x, 2x+1 of the big one.
        return x * _SCALE + (_SCALE - 1) / 2, y * _SCALE + (_SCALE - 1) / 2

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill=None, **kw) -> None:
        (x0, y0), (x1, y1) = self._xy(cx - rx, cy - ry), self._xy(cx + rx, cy + ry)
        if "width" in kw:
            kw["width"] = round(kw["width"] * _SCALE)
        self.draw.ellipse((x0, y0, x1, y1), fill=fill, **kw)

    def polygon(self, points: Sequence[tuple[float, float]], fill=None, **kw) -> None:
        if "width" in kw:
            kw["width"] = round(kw["width"] * _SCALE)
        self.draw.polygon([self._xy(x, y) for x, y in points], fill=fill, **kw)

    def line(self, points: Sequence[tuple[float, float]], fill, width: float) -> None:
        xy = [self._xy(x, y) for x, y in points]
        self.draw.line(xy, fill=fill, width=max(1, round(width * _SCALE)), joint="curve")

    def result(self) -> Image.Image:
        return self.image.reduce(_SCALE)


def _wave(look: Look, t: float, amount: float = 1.0) -> float:
    return amount * math.sin(9 * t) if look.person.wavy else 0.0


def _hair_top(look: Look, bottom_y: float, steps: int = 40) -> list[tuple[float, float]]:
    """The hair's outer edge from the left side at `bottom_y`, over the head, to the right."""
    p = look.person
    cy = _face_centre_y(look)
    rx, ry = p.face_rx + 4 + (2 if p.long_hair else 0), p.face_ry + p.hair_volume
    alpha = math.asin(min(1.0, max(0.0, (cy - bottom_y) / ry)))
    points = []
    for i in range(steps + 1):
        t = math.pi + alpha + (math.pi - 2 * alpha) * i / steps
        r = 1 + _wave(look, t, 0.025)
        points.append((look.cx + rx * r * math.cos(t), cy + ry * r * math.sin(t)))
    return points


def _hairline_y(look: Look) -> float:
    return _face_centre_y(look) - look.person.face_ry + look.person.hairline


def _draw_back_hair(canvas: _Canvas, look: Look) -> None:
    p = look.person
    colour = _shade(p.hair_rgb, 0.8)  # hair behind the head is in shadow
    if not p.long_hair:
        canvas.polygon(_hair_top(look, look.eye_y + 14), fill=colour)
        return
    top = _hair_top(look, _face_centre_y(look))
    end = look.eye_y + 92 + p.hair_volume
    left_x, right_x = top[0][0] - 3, top[-1][0] + 3
    ys = np.linspace(top[-1][1], end, 12)
    right = [(right_x + 2 * (y - ys[0]) / 30 + _wave(look, y / 4, 2.5), y) for y in ys]
    left = [(left_x - 2 * (y - ys[0]) / 30 + _wave(look, y / 4, 2.5), y) for y in ys[::-1]]
    canvas.polygon(top + right + left, fill=colour)
    for k in range(-3, 4):  # strands, so it reads as hair rather than a cape
        x = look.cx + k * p.face_rx / 2.6
        strand = [(x + _wave(look, y / 5, 2.0) + k * (y - ys[0]) / 25, y) for y in ys[2:]]
        canvas.line(strand, fill=_shade(p.hair_rgb, 0.65), width=1)


def _draw_hair_cap(canvas: _Canvas, look: Look) -> None:
    """Hair over the top of the head, down the sides to the eye line."""
    p = look.person
    side_y = look.eye_y - 2.0
    outer = _hair_top(look, side_y)
    a, b = p.face_rx * 0.93, side_y - _hairline_y(look)
    inner = [
        (look.cx + a * math.cos(f), side_y - b * math.sin(f)) for f in np.linspace(0, math.pi, 24)
    ]
    canvas.polygon(outer + inner, fill=p.hair_rgb)
    for k in (-2, -1, 1, 2):  # a few strands from the parting
        x0 = look.cx + k * 3
        canvas.line(
            [(x0, outer[len(outer) // 2][1] + 3), (x0 + k * a / 3.2, _hairline_y(look) + 3)],
            fill=_shade(p.hair_rgb, 0.82),
            width=1,
        )
    if look.bangs and not look.hat:
        bottom = look.eye_y - 14.0
        fringe = [
            (look.cx + a * 0.96 * math.cos(f), side_y - b * math.sin(f))
            for f in np.linspace(0, math.pi, 20)
            if side_y - b * math.sin(f) <= bottom
        ]
        # A jagged lower edge, slightly slanted, from the left end of the fringe to the right.
        xs = np.linspace(fringe[-1][0], fringe[0][0], 11)
        teeth = [(x, bottom - 3.0 * (i % 2) + (x - look.cx) * 0.06) for i, x in enumerate(xs)]
        canvas.polygon(fringe + teeth, fill=p.hair_rgb)


def _draw_body(canvas: _Canvas, look: Look) -> None:
    p = look.person
    neck_w = p.face_rx * 0.5
    chin = _face_centre_y(look) + p.face_ry
    canvas.polygon(
        [(look.cx - neck_w, chin - 20), (look.cx + neck_w, chin - 20),
         (look.cx + neck_w + 2, HEIGHT), (look.cx - neck_w - 2, HEIGHT)],
        fill=_shade(p.skin, 0.86),
    )  # fmt: skip
    shoulder_y = chin + 20
    canvas.ellipse(look.cx, shoulder_y + 48, 98, 48, fill=look.shirt_rgb)
    collar = [(look.cx - neck_w - 2, shoulder_y + 1), (look.cx, shoulder_y + 12),
              (look.cx + neck_w + 2, shoulder_y + 1)]  # fmt: skip
    canvas.polygon(collar, fill=_shade(p.skin, 0.86))
    if look.necktie:
        canvas.line(collar, fill=(245, 245, 245), width=3)
        knot = [(look.cx - 4, shoulder_y + 9), (look.cx + 4, shoulder_y + 9),
                (look.cx + 3, shoulder_y + 15), (look.cx - 3, shoulder_y + 15)]  # fmt: skip
        blade = [(look.cx - 3, shoulder_y + 15), (look.cx + 3, shoulder_y + 15),
                 (look.cx + 7, HEIGHT), (look.cx - 7, HEIGHT)]  # fmt: skip
        canvas.polygon(blade, fill=look.tie_rgb, outline=_shade(look.tie_rgb, 0.6), width=1)
        canvas.polygon(knot, fill=_shade(look.tie_rgb, 0.8))
    if look.necklace:
        for i in range(13):
            u = -1 + i / 6
            x, y = look.cx + u * (neck_w + 3), shoulder_y - 6 + 9 * (1 - u * u)
            canvas.ellipse(x, y, 1.6, 1.6, fill=(238, 226, 190), outline=(150, 130, 90))


def _draw_head(canvas: _Canvas, look: Look) -> None:
    p = look.person
    cy = _face_centre_y(look)
    for side in (-1, 1):
        ear_x = look.cx + side * (p.face_rx - 1)
        canvas.ellipse(ear_x, look.eye_y + 10, 6, 11, fill=_shade(p.skin, 0.9))
    outline = _face_outline(look)
    canvas.polygon(outline, fill=p.skin, outline=_shade(p.skin, 0.78), width=1)
    if look.stubble:
        jaw = [(x, y) for x, y in outline if y > look.eye_y + p.nose_dy + 3]
        canvas.polygon(jaw, fill=(40, 34, 30, 55))
    if look.rosy:
        for side in (-1, 1):
            canvas.ellipse(look.cx + side * (p.eye_dx + 5), cy + 12, 8, 6, fill=(235, 70, 90, 90))


def _draw_eyes(canvas: _Canvas, look: Look) -> None:
    p = look.person
    brow_colour = _shade(HAIR_COLOURS["brown"] if p.hair == "none" else p.hair_rgb, 0.75)
    lash = (40, 28, 26)
    for side in (-1, 1):
        ex, ey = look.cx + side * p.eye_dx, look.eye_y
        canvas.ellipse(ex, ey, p.eye_rx, p.eye_ry, fill=(248, 246, 240), outline=lash, width=0.6)
        iris_r = 3.3
        canvas.ellipse(ex, ey, iris_r, min(iris_r, p.eye_ry), fill=p.iris)
        canvas.ellipse(ex, ey, 1.6, min(1.6, p.eye_ry), fill=(14, 10, 10))
        canvas.ellipse(ex + 0.9, ey - 0.9, 0.5, 0.5, fill=(255, 255, 255))  # catch light
        canvas.line(
            [(ex - side * p.eye_rx, ey + 0.5), (ex, ey - p.eye_ry - 0.3),
             (ex + side * p.eye_rx, ey)],
            fill=lash,
            width=1.0,
        )  # fmt: skip
        brow_y = ey - p.eye_ry - 6
        canvas.line(
            [(ex - side * 8.5, brow_y + 1.5), (ex + side * 1, brow_y - 1.2),
             (ex + side * 9.5, brow_y + 1.8)],
            fill=brow_colour,
            width=p.brow_width,
        )  # fmt: skip


def _draw_nose(canvas: _Canvas, look: Look) -> None:
    p = look.person
    nx, ny = look.cx, look.eye_y + p.nose_dy
    shadow = _shade(p.skin, 0.72)
    canvas.line([(nx + 2.5, look.eye_y + 5), (nx + p.nose_w * 0.55, ny - 3)], shadow, 1.0)
    canvas.ellipse(nx, ny - 1, p.nose_w * 0.55, 2.4, fill=_shade(p.skin, 1.06))
    canvas.line([(nx - p.nose_w, ny), (nx, ny + 2), (nx + p.nose_w, ny)], shadow, 1.0)
    for side in (-1, 1):
        canvas.ellipse(nx + side * p.nose_w * 0.55, ny + 1.2, 1.5, 0.9, fill=_shade(p.skin, 0.5))


def _draw_beard(canvas: _Canvas, look: Look) -> None:
    p = look.person
    colour = _shade(HAIR_COLOURS["brown"] if p.hair == "none" else p.hair_rgb, 0.85)
    upper, lower, _ = _mouth_curves(look)
    if p.mustache:
        top = [(x + (x - look.cx) * 0.12, y - 7.5 + 2.0 * ((x - look.cx) / p.mouth_dx) ** 2)
               for x, y in upper]  # fmt: skip
        bottom = [(x + (x - look.cx) * 0.12, y - 1.8) for x, y in upper]
        canvas.polygon(top + bottom[::-1], fill=colour)
    if p.goatee:
        # From under the lower lip down to the chin; the jaw is wider than this there.
        top, half = max(y for _, y in lower) + 4.0, p.mouth_dx * 0.6
        chin = _face_centre_y(look) + p.face_ry
        goatee = [(look.cx - half * 0.8, top), (look.cx + half * 0.8, top),
                  (look.cx + half, chin - 6), (look.cx + half * 0.55, chin - 1),
                  (look.cx, chin + 0.5), (look.cx - half * 0.55, chin - 1),
                  (look.cx - half, chin - 6)]  # fmt: skip
        canvas.polygon(goatee, fill=colour)


def _draw_mouth(canvas: _Canvas, look: Look) -> None:
    p = look.person
    upper, lower, opening = _mouth_curves(look)
    natural = (min(255, int(p.skin[0] * 0.88 + 24)), int(p.skin[1] * 0.66), int(p.skin[2] * 0.7))
    lips = look.lipstick_rgb if look.lipstick else natural
    n = len(upper)
    bulge = [math.sqrt(max(0.0, 1 - (-1 + 2 * i / (n - 1)) ** 2)) for i in range(n)]
    top_lip = [(x, y - 2.6 * b) for (x, y), b in zip(upper, bulge, strict=True)]
    bottom_lip = [(x, y + 3.6 * b) for (x, y), b in zip(lower, bulge, strict=True)]
    canvas.polygon(top_lip + upper[::-1], fill=lips)
    canvas.polygon(lower + bottom_lip[::-1], fill=lips)
    dark = (72, 24, 30)
    if opening:
        canvas.polygon(upper + lower[::-1], fill=dark)
        if look.smiling:
            teeth = [(x, y + 2.4 * b) for (x, y), b in zip(upper, bulge, strict=True)]
            canvas.polygon(upper + teeth[::-1], fill=(242, 238, 228))
    else:
        canvas.line(upper, fill=_shade(lips, 0.55), width=1.1)
    for x, y in (upper[0], upper[-1]):
        canvas.ellipse(x, y, 1.0, 1.0, fill=_shade(lips, 0.5))


def _draw_glasses(canvas: _Canvas, look: Look) -> None:
    p = look.person
    rx, ry = p.eye_rx + 4.5, 7.5
    # Frames as bold as CelebA's at 96x96 (about 1.5 px there), often sunglasses: thinner
    # ones vanish in a small VAE's reconstructions and the attribute cannot be learned.
    lens = (20, 22, 30, 170) if look.sunglasses else (255, 255, 255, 30)
    for side in (-1, 1):
        ex = look.cx + side * p.eye_dx
        canvas.ellipse(ex, look.eye_y, rx, ry, fill=lens, outline=look.frame_rgb, width=2.6)
        temple = [(ex + side * rx, look.eye_y - 2), (look.cx + side * (p.face_rx + 1), look.eye_y)]
        canvas.line(temple, fill=look.frame_rgb, width=2.0)
    inner = p.eye_dx - rx
    bridge = [(look.cx - inner, look.eye_y - 1.5), (look.cx, look.eye_y - 3),
              (look.cx + inner, look.eye_y - 1.5)]  # fmt: skip
    canvas.line(bridge, fill=look.frame_rgb, width=2.0)


def _draw_hat(canvas: _Canvas, look: Look) -> None:
    p = look.person
    brim_y = _hairline_y(look) + 3
    crown_top = _face_centre_y(look) - p.face_ry - p.hair_volume - 14
    rx = p.face_rx + 7
    crown = [
        (look.cx + rx * math.cos(t), brim_y + (brim_y - crown_top) * math.sin(t))
        for t in np.linspace(math.pi, 2 * math.pi, 30)
    ]
    canvas.polygon(crown, fill=look.hat_rgb)
    band = _shade(look.hat_rgb, 0.7)
    if look.hat_brim:
        canvas.ellipse(look.cx, brim_y, rx + 12, 4.5, fill=band)
    else:
        canvas.polygon(
            [(look.cx - rx, brim_y - 7), (look.cx + rx, brim_y - 7),
             (look.cx + rx, brim_y + 2), (look.cx - rx, brim_y + 2)],
            fill=band,
        )  # fmt: skip


def _draw_earrings(canvas: _Canvas, look: Look) -> None:
    p = look.person
    for side in (-1, 1):
        x, y = look.cx + side * (p.face_rx + 0.5), look.eye_y + 24
        canvas.ellipse(x, y, 2.6, 2.6, fill=(236, 196, 70), outline=(150, 110, 30), width=0.6)


def render(look: Look) -> Image.Image:
    """Draws `look` as a 178x218 RGB image (painter's order: back to front)."""
    canvas = _Canvas(look.background)
    _draw_body(canvas, look)
    if look.person.hair != "none":
        _draw_back_hair(canvas, look)
    _draw_head(canvas, look)
    if look.earrings:
        _draw_earrings(canvas, look)
    if look.person.hair != "none":
        _draw_hair_cap(canvas, look)
    _draw_eyes(canvas, look)
    _draw_nose(canvas, look)
    _draw_beard(canvas, look)
    _draw_mouth(canvas, look)
    if look.eyeglasses:
        _draw_glasses(canvas, look)
    if look.hat:
        _draw_hat(canvas, look)
    return canvas.result()


def draw_face(
    rng: np.random.Generator, person: Person, forced: Mapping[str, bool] | None = None
) -> Face:
    """Draws one picture of `person` with its attributes and landmarks.

    `forced` sets drawn attributes (names from DRAWN_ATTRIBUTES) after sampling, so the
    same `rng` state with and without a forced attribute gives the same picture otherwise.
    """
    look = sample_look(rng, person)
    if forced:
        look = with_attributes(look, forced)
    return Face(render(look), attributes_of(look), landmarks_of(look))


def num_people(n: int) -> int:
    return n // 20 + 1


@functools.lru_cache(maxsize=4096)
def person_for(seed: int, identity: int) -> Person:
    """The fixed person behind identity number `identity` (1-based, as in CelebA)."""
    return make_person(np.random.default_rng([seed, PERSON_STREAM, identity]))


def face_for(seed: int, index: int, n: int) -> tuple[Face, int]:
    """Image `index` (0-based) of an n-image source and its identity, from (seed, index) only."""
    rng = np.random.default_rng([seed, IMAGE_STREAM, index])
    identity = int(rng.integers(num_people(n))) + 1
    return draw_face(rng, person_for(seed, identity)), identity
