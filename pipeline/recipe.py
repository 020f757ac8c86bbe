"""What happens to every image of a source: crop, resize to size x size, encode.

`transform(data, recipe)` turns one source file's bytes into the payload of its record
(JPEG, PNG or raw uint8 pixels) and the box it cut out, which moves the image's landmarks
(`move_landmarks`). Images in any mode (16-bit, palette, CMYK, transparent, rotated by EXIF)
come out as 8-bit RGB. The pixel count is checked from the header before anything is
decoded, so a decompression bomb costs nothing; `Limits` are the sizes a source file may
have. PIL and numpy only: prepare's worker processes run this and never touch TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from facevae.pipeline import schema
from facevae.pipeline.sources import SkipError

# A (left, top, right, bottom) box, "center", "none", or "auto" (resolved by resolve_crop).
Crop = tuple[int, int, int, int] | str
Box = tuple[int, int, int, int]

CROP_WORDS = ("auto", "center", "none")
RESAMPLE_FILTERS = {f.name.lower(): f for f in Image.Resampling}

# Limits that keep memory bounded whatever the source holds (sizes are checked before reading).
MAX_SIZE = 1024  # `size`: CelebA's faces are 178x218; bigger records only cost memory
MAX_FILE_MB = 50  # default `max_file_mb`: no source image is read beyond this
FILE_MB_CEILING = 200  # `max_file_mb` upper bound: each worker may hold one such file
MAX_MEGAPIXELS = 40  # default `max_megapixels`: decoding costs ~4-15 bytes per pixel
MEGAPIXELS_CEILING = 100  # `max_megapixels` upper bound (PIL refuses ~179 MP anyway)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What happens to every image: crop, resize to size x size, encode."""

    size: int = schema.IMAGE_SIZE
    crop: Crop = "auto"
    resample: str = schema.DEFAULT_RESAMPLE
    fmt: str = schema.DEFAULT_FORMAT
    quality: int = schema.DEFAULT_QUALITY

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_SIZE:
            raise ValueError(f"`size` must be in 1..{MAX_SIZE}, got {self.size}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(
                f"`resample` {schema._short(self.resample)} is not one of {list(RESAMPLE_FILTERS)}"
            )
        if self.fmt not in schema.FORMATS:
            raise ValueError(f"`format` {schema._short(self.fmt)} is not one of {schema.FORMATS}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"`quality` must be in 1..100, got {self.quality}")
        _check_crop(self.crop)


def _check_crop(crop: Crop) -> None:
    if isinstance(crop, str):
        if crop not in CROP_WORDS:
            raise ValueError(
                f"`crop` {schema._short(crop)} is not a box, 'auto', 'center' or 'none'"
            )
        return
    left, top, right, bottom = crop
    if not 0 <= left < right or not 0 <= top < bottom:
        raise ValueError(f"crop box {tuple(crop)} needs 0 <= left < right, top < bottom")


def parse_crop(text: str) -> Crop:
    """`crop` as text: "left,top,right,bottom", "auto", "center" or "none"; checked."""
    text = text.strip().lower()
    if text in CROP_WORDS:
        return text
    parts = text.split(",")
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ValueError(
            f"`crop` {schema._short(text)}: give left,top,right,bottom (e.g. 0,40,178,218), "
            "auto, center or none"
        )
    _check_crop(box)  # type: ignore[arg-type]
    return box  # type: ignore[return-value]


def resolve_crop(crop: Crop, layout: str) -> Crop:
    """ "auto" -> CelebA's box for its aligned 178x218 faces, "center" for any other images.

    The box would silently cut the top-left 178x218 out of a larger photo of a plain folder.
    """
    if crop != "auto":
        return crop
    return "center" if layout == "folder" else schema.CELEBA_CROP


def crop_box(crop: Crop, width: int, height: int) -> Box:
    """The box cut out of a width x height image; `crop` is resolved (not "auto")."""
    if crop == "auto":
        raise ValueError("crop 'auto' depends on the source layout: pass it through resolve_crop")
    if crop == "none":
        return (0, 0, width, height)
    if crop == "center":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return (left, top, left + side, top + side)
    return tuple(crop)  # type: ignore[return-value]


def move_landmarks(points: Sequence[float], box: Box, size: int) -> list[float]:
    """(x, y, x, y, ...) in source pixels -> the same points in the size x size output."""
    left, top, right, bottom = box
    scale_x, scale_y = size / (right - left), size / (bottom - top)
    return [
        (v - left) * scale_x if i % 2 == 0 else (v - top) * scale_y for i, v in enumerate(points)
    ]


@dataclasses.dataclass(frozen=True)
class Limits:
    """How big a source file may be; bigger ones are skipped with the reason, unread."""

    max_file_mb: int = MAX_FILE_MB
    max_megapixels: int = MAX_MEGAPIXELS

    def __post_init__(self) -> None:
        if not 1 <= self.max_file_mb <= FILE_MB_CEILING:
            raise ValueError(
                f"`max_file_mb` must be in 1..{FILE_MB_CEILING}, got {self.max_file_mb}"
            )
        if not 1 <= self.max_megapixels <= MEGAPIXELS_CEILING:
            raise ValueError(
                f"`max_megapixels` must be in 1..{MEGAPIXELS_CEILING}, got {self.max_megapixels}"
            )

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 2**20

    @property
    def max_pixels(self) -> int:
        return self.max_megapixels * 10**6


# --------------------------------------------------------------------------- one image


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit or 32-bit grayscale -> 8-bit "L" over the range its mode implies.

    convert("RGB") clips these values at 255, which turns a 16-bit image near-white. The
    range is taken from the mode, not the image's min/max, so brightness stays as shot:
    I;16* is 0..65535; I (how Pillow decodes some 16-bit PNG/TIFF) is read as 16-bit when its
    values fit 0..65535; F is read as 0..1. Other values have no known range: skipped.
    """
    values = np.asarray(image)  # (H, W) uint16, int32 or float32
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        # round(v * 255 / 65535) in uint32, in place: 4 bytes a pixel instead of float64's
        # 3 x 8. Exact: v * 255 / 65535 is never a tie, so half-up is numpy's half-even.
        scaled = values.astype(np.uint32)  # (H, W)
        scaled *= 255
        scaled += 65535 // 2
        scaled //= 65535
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = values.astype(np.float64)  # (H, W), scaled in place
        scaled *= 255
        np.round(scaled, out=scaled)
    else:
        raise SkipError(
            f"{image.mode} grayscale with values {low}..{high}: no known range to map to "
            "8 bits (expected 0..65535 for integers, 0..1 for floats); convert it to 8 bits first"
        )
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation: photos from phones
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _to_8bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels hold arbitrary colours; show them as a white background instead.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        composite = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        del rgba  # large images: one full-size copy fewer while converting
        return composite.convert("RGB")
    return image.convert("RGB")


def _too_many_pixels(pixels: int | str, limit: int) -> SkipError:
    return SkipError(
        f"image declares {pixels} pixels, over the `max_megapixels` {limit // 10**6} limit "
        "(a decompression bomb, or raise `max_megapixels`)"
    )


def _unreadable(e: Exception) -> SkipError:
    # PIL raises many types for bad data; every one means "skip it".
    return SkipError(f"not a readable image ({type(e).__name__}: {e})")


@contextlib.contextmanager
def _no_reservation(pixels: int) -> Iterator[None]:
    yield


def transform(
    data: bytes,
    recipe: Recipe,
    max_pixels: int = MAX_MEGAPIXELS * 10**6,
    reserve: Callable[[int], contextlib.AbstractContextManager] | None = None,
) -> tuple[bytes, Box]:
    """Decodes, converts to RGB, crops, resizes and encodes one image; raises SkipError.

    The pixel count is checked from the header before anything is decoded; `reserve(pixels)`
    (prepare's pixel budget) is held until every full-size copy of the image is freed.
    """
    if not data:
        raise SkipError("empty file (0 bytes)")
    with warnings.catch_warnings():  # PIL's bomb warning: the limit here is stricter
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as e:  # PIL's own, hard limit (~179 MP)
            raise _too_many_pixels("more than 179M", max_pixels) from e
        except Exception as e:
            raise _unreadable(e) from e
        width, height = opened.size
        if width * height > max_pixels:
            opened.close()
            raise _too_many_pixels(f"{width}x{height}", max_pixels)
        with (reserve or _no_reservation)(width * height), opened:
            return _decode_crop_encode(opened, recipe)


def _decode_crop_encode(opened: Image.Image, recipe: Recipe) -> tuple[bytes, Box]:
    try:
        opened.load()  # raises on truncated data instead of filling it with grey
        image = _to_rgb(opened)
    except SkipError:
        raise
    except Exception as e:
        raise _unreadable(e) from e
    return _crop_resize_encode(image, recipe)


def _crop_resize_encode(image: Image.Image, recipe: Recipe) -> tuple[bytes, Box]:
    width, height = image.size
    box = crop_box(recipe.crop, width, height)
    if box[2] > width or box[3] > height:
        raise SkipError(
            f"image is {width}x{height}, smaller than the crop box {box}; "
            "use `crop` center or `crop` none for images of other sizes"
        )
    size = recipe.size
    image = image.crop(box).resize((size, size), RESAMPLE_FILTERS[recipe.resample])
    if recipe.fmt == "raw":
        return image.tobytes(), box  # uint8 (size, size, 3), row-major
    buffer = io.BytesIO()
    if recipe.fmt == "jpeg":
        image.save(buffer, "JPEG", quality=recipe.quality)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue(), box
