"""SampleConfig: every setting of a picture (sample.py's flags), checked in one place, and the
checks made before any work: the outputs can be written, the grid fits the memory limits.

Every problem is a SampleError naming the setting in backticks (`n`), which a command line
shows as its flag (--n); a bad value is quoted to at most console.MAX_ECHO characters.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from facevae.model import prior as priors  # `prior` is also a setting's name
from facevae.model.console import short
from facevae.model.vae import MAX_SEED

MODES = (
    "random", "reconstruct", "interpolate", "attribute", "traverse", "boundary", "denoise",
    "stats",
)  # fmt: skip
METHODS = ("linear", "spherical")
CORRUPTIONS = ("gaussian", "mask")

# Limits that keep memory bounded (a grid is decoded whole, then drawn).
MAX_N = 1024  # `n`, and images named by `indices` / `source_ids`
MAX_VALUES = 32  # `strengths`, `boundaries`
MAX_GRID_IMAGES = 4096
# Decoded float32 images are copied a few times on their way to the PNG (~4 x 12 bytes a
# pixel at the peak): 16 megapixels stay under 2 GB; the PNG after `scale` is uint8.
MAX_DECODED_MEGAPIXELS = 16
MAX_GRID_MEGAPIXELS = 64
# stats and traverse keep the codes of `max_examples` images, ~40 bytes a value at the
# peak with the statistics (measured): 65,536 images at z_dim 256 take ~0.7 GB.
MAX_CODE_VALUES = 2**24
INT_RANGES = {  # inclusive
    "seed": (0, MAX_SEED),
    "scale": (1, 16),
    "batch_size": (1, 1024),
    "num_dims": (1, 1024),
    "steps": (2, 64),
    "n": (0, MAX_N),
    "max_examples": (0, MAX_CODE_VALUES),
}
# Positive and finite, at most this: beyond, decoded pictures are saturated noise, and a
# typo (1e308) would overflow float32 on its way into the decoder.
FLOAT_BOUNDS = {"temperature": 10.0, "traverse_range": 100.0, "noise": 1.0}
MAX_STRENGTH = 100.0  # |strength| of an attribute vector
MAX_BOUNDARY = 1000.0

DEFAULT_N = {"random": 64, "reconstruct": 16, "interpolate": 4, "attribute": 4,
             "boundary": 8, "denoise": 8}  # fmt: skip


class SampleError(ValueError):
    """Settings or data the chosen mode cannot use: the message names the setting and the fix."""


# --------------------------------------------------------------------------- settings


def _int_values(values: Sequence[Any]) -> tuple[int, ...]:
    # Strings (a command line's) or whole numbers; 2.5 is refused rather than truncated.
    parsed = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
            raise ValueError(value)
        parsed.append(int(value))
    return tuple(parsed)


def _float_values(values: Sequence[Any]) -> tuple[float, ...]:
    parsed = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int, float, np.number)):
            raise ValueError(value)
        parsed.append(float(value))
    return tuple(parsed)


def _values(
    name: str,
    values: Sequence[Any] | str,
    kind: type,
    valid: Callable[[Any], bool] | None = None,
    rule: str = "",
) -> tuple:
    """A list setting as a tuple of `kind`, at most MAX_N / MAX_VALUES values, each `valid`.

    Values may be strings (a command line's list) or numbers; messages quote at most
    console.MAX_ECHO characters of them.
    """
    values = (values,) if isinstance(values, (str, int, float)) else tuple(values)
    most = MAX_N if name in ("indices", "source_ids") else MAX_VALUES
    if len(values) > most:
        raise SampleError(f"`{name}`: {len(values)} values, at most {most} are allowed")
    text = short(",".join(str(v) for v in values))
    convert = {int: _int_values, float: _float_values}.get(kind)
    try:
        parsed = convert(values) if convert else tuple(str(v) for v in values)
    except (ValueError, TypeError, OverflowError):
        raise SampleError(f"`{name}`={text}: give comma-separated {kind.__name__} values") from None
    for given, value in zip(values, parsed, strict=True):
        if valid and not valid(value):
            raise SampleError(f"`{name}`={text}: {short(given, 20)} is not {rule}")
    return parsed


def _strength(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= MAX_STRENGTH


def _boundary(value: float) -> bool:
    return math.isfinite(value) and 0 < value <= MAX_BOUNDARY


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Every setting of a picture; sample.py's flags have the same names and defaults.

    Checked when made: a value out of range is a SampleError naming the setting. Lists
    (`indices`, `strengths`, ...) may be given as strings, as a command line has them.
    """

    workdir: str
    mode: str = "random"
    out: str | None = None  # None: <workdir>/<mode>.png
    scale: int = 1  # integer enlargement of the grid (nearest neighbour)
    seed: int = 0  # of every random draw: the same seed, the same files
    n: int = 0  # faces, images, rows or columns by mode; 0: DEFAULT_N of the mode
    batch_size: int = 64  # images per encoder/decoder call
    # Data.
    data_dir: str | None = None  # None: the dataset the run was trained on
    split: str | None = None  # None: test, else the first of validation, train present
    indices: tuple[int, ...] = ()  # positions of images in the split
    source_ids: tuple[str, ...] = ()  # source file names of images in the split
    max_examples: int = 5000  # images encoded by stats and traverse; 0: all that fit
    # Sampling and latent paths.
    temperature: float = 1.0  # std T of the prior samples z ~ N(0, T^2 I)
    prior: str = "normal"  # or "gmm": model.prior's mixture of the training codes
    steps: int = 8
    method: str = "spherical"
    save_individual: str | None = None  # random: also each face as a PNG in this folder
    # Attributes and traversals.
    attribute: str = "Smiling"
    attribute_split: str = "train"
    strengths: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    num_dims: int = 8
    traverse_range: float = 3.0
    # Boundary and denoise.
    boundaries: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 50.0)
    corruption: str = "gaussian"
    noise: float = 0.2  # gaussian: the std; mask: the square's side as a fraction of the image

    def __post_init__(self) -> None:
        if not isinstance(self.workdir, str) or not self.workdir:
            raise SampleError("`workdir` is needed: the run directory written by training")
        for name, allowed in (("mode", MODES), ("prior", priors.PRIORS), ("method", METHODS),
                              ("corruption", CORRUPTIONS)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise SampleError(f"`{name}`={short(getattr(self, name))}: use one of "
                                  f"{', '.join(allowed)}")  # fmt: skip
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not low <= value <= high
            ):
                raise SampleError(f"`{name}` must be in {low}..{high} (whole), got {short(value)}")
        for name, high in FLOAT_BOUNDS.items():
            value = getattr(self, name)
            number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and 0 < value <= high):
                raise SampleError(
                    f"`{name}` must be a positive finite number, at most {high:g}; got "
                    f"{short(value)}"
                )
        lists = {
            "indices": _values("indices", self.indices, int),
            "source_ids": _values("source_ids", self.source_ids, str),
            "strengths": _values(
                "strengths", self.strengths, float, _strength,
                f"a finite number of at most {MAX_STRENGTH:g} either way",
            ),
            "boundaries": _values(
                "boundaries", self.boundaries, float, _boundary,
                f"a positive finite number of at most {MAX_BOUNDARY:g}",
            ),
        }  # fmt: skip
        for name, value in lists.items():
            object.__setattr__(self, name, value)

    @property
    def out_path(self) -> str:
        """Where the grid goes."""
        return self.out or os.path.join(self.workdir, f"{self.mode}.png")

    @property
    def json_path(self) -> str:
        """Where the results of stats and denoise go: beside the grid."""
        return os.path.splitext(self.out_path)[0] + ".json"

    @property
    def chosen(self) -> bool:
        """Whether dataset images were named (`indices` / `source_ids`)."""
        return bool(self.indices or self.source_ids)

    @property
    def reads_data(self) -> bool:
        """Whether the mode needs the dataset (random faces and boundary rows do not)."""
        if self.mode == "random":
            return self.prior == "gmm"
        if self.mode == "interpolate":
            return self.chosen
        return self.mode != "boundary"


# --------------------------------------------------------------------------- checks


def check_outputs(config: SampleConfig) -> None:
    """SampleError before any work when the grid (or its JSON, or `save_individual`) cannot
    be written."""
    out = config.out_path
    for path in (out, config.json_path):
        if os.path.isdir(path):
            example = os.path.join(path, config.mode + ".png")
            raise SampleError(
                f"`out`={short(path)} is a folder: give the path of a file, e.g. {short(example)}"
            )
    folders = [("out", os.path.dirname(os.path.abspath(out)))]
    if config.save_individual:
        folders.append(("save_individual", os.path.abspath(config.save_individual)))
    for name, folder in folders:
        existing = folder
        while not os.path.exists(existing):  # the nearest folder that exists gets the writes
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise SampleError(f"`{name}`: {short(existing)} is a file, so {short(folder)} "
                              "cannot be made; choose a path")  # fmt: skip
        if not os.access(existing, os.W_OK):
            raise SampleError(f"`{name}`: {short(existing)} is not writable (read-only); "
                              "choose another path")  # fmt: skip


def grid_images(config: SampleConfig, z_dim: int) -> int:
    """How many images the mode's grid will hold, from the settings alone (`n` resolved)."""
    chosen = len(config.indices) + len(config.source_ids)
    images = chosen or config.n  # the dataset images a mode starts from
    steps = config.steps
    return {
        "random": config.n,
        "reconstruct": 2 * images,
        "interpolate": chosen // 2 * (steps + 2) if chosen else config.n * steps,
        "attribute": images * (1 + len(config.strengths)),
        "traverse": min(config.num_dims, z_dim) * steps,
        "boundary": (len(config.boundaries) + 1) * config.n,
        "denoise": 3 * images,
    }.get(config.mode, 1)


def check_limits(config: SampleConfig, image_shape: tuple[int, ...], z_dim: int) -> SampleConfig:
    """SampleError before any work when the grid would be too big to hold in memory; returns
    the config with `n` 0 made the mode's default and `max_examples` 0 ("all") a number of
    images whose codes fit in memory."""
    config = dataclasses.replace(config, n=config.n or DEFAULT_N.get(config.mode, 0))
    most = MAX_CODE_VALUES // z_dim  # z_mean and z_log_var of every image encoded
    if config.max_examples > most:
        raise SampleError(
            f"`max_examples`={config.max_examples}: at z_dim {z_dim} at most {most:,} images "
            f"are encoded at once ({MAX_CODE_VALUES:,} code values); lower it, or 0 for that "
            "many"
        )
    count = grid_images(config, z_dim)
    decoded = count * image_shape[0] * image_shape[1] / 1e6
    scaled = decoded * config.scale**2
    if count > MAX_GRID_IMAGES or decoded > MAX_DECODED_MEGAPIXELS or scaled > MAX_GRID_MEGAPIXELS:
        raise SampleError(
            f"`mode`={config.mode}: these settings make a grid of {count:,} images, "
            f"{decoded:,.2f} megapixels ({scaled:,.2f} at `scale`={config.scale}); the limits "
            f"are {MAX_GRID_IMAGES:,} images, {MAX_DECODED_MEGAPIXELS} megapixels "
            f"({MAX_GRID_MEGAPIXELS} scaled): lower `n`, `steps`, `num_dims`, `scale` or the "
            "number of `strengths` / `boundaries`"
        )
    return dataclasses.replace(config, max_examples=config.max_examples or most)
