"""CelebA (official or Kaggle layout, folder or .zip) or any image folder -> TFRecord shards.

    python -m tools.prepare_celeba --src ~/celeba --out data/celeba96

Every image is cropped (default "auto": the original recipe's box (0, 40, 178, 218) for
CelebA's aligned 178x218 faces, the largest centred square for a plain folder), resized to
--size x --size and encoded; its labels go along: attributes as 0/1, landmarks moved into
output pixel coordinates by the same crop and scale, identities as ints. Decoding and resizing
run in worker processes that use PIL only; the main process writes the shards in source order,
so the output is byte-identical whatever --workers is. The record and the manifest are those
of pipeline/schema.py.

Memory stays bounded whatever the source holds; sizes are checked before reading. Source
images over --max_file_mb or --max_megapixels, archive members that inflate more than 200:1
or whose paths are absolute or contain '..', are skipped unread and listed with the reason
in dataset.json. Label files over 32 MB, 500,000 rows or 10,000-character lines stop
with an error naming the file.
"""

from facevae.model.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import collections
import contextlib
import csv
import ctypes
import dataclasses
import hashlib
import io
import itertools
import math
import multiprocessing
import multiprocessing.pool
import os
import posixpath
import re
import shutil
import signal
import stat
import sys
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image, ImageOps

from facevae.model.console import Progress, run_app
from facevae.model.judge import JUDGE_SUBDIR
from facevae.pipeline import schema
from facevae.pipeline.atomic import fresh_temp_dir, move_into_place

# A (left, top, right, bottom) box, "center", "none", or "auto" (resolved by resolve_crop).
Crop = tuple[int, int, int, int] | str
Box = tuple[int, int, int, int]

CROP_WORDS = ("auto", "center", "none")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
IMAGE_DIR = "img_align_celeba"
LABEL_STEMS = {
    "partition": "list_eval_partition",
    "attributes": "list_attr_celeba",
    "landmarks": "list_landmarks_align_celeba",
    "identity": "identity_CelebA",
}
PARTITION_SPLITS = {0: "train", 1: "validation", 2: "test"}
RESAMPLE_FILTERS = {f.name.lower(): f for f in Image.Resampling}
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
TARGET_SHARD_BYTES = 20 * 2**20
# Rough encoded bytes per raw byte, only to size shards when --examples_per_shard is 0.
_COMPRESSION_RATIO = {"jpeg": 1 / 6, "png": 0.6, "raw": 1.0}
# fork hands the recipe to the workers for free and starts them in milliseconds; the workers
# never call TensorFlow, and the CLI starts its pool before any TF op has created TF's thread
# pools. spawn elsewhere (slower start-up: each worker imports this module).
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"

# Limits that keep memory bounded whatever the source holds (sizes are checked before reading).
MAX_SIZE = 1024  # --size: CelebA's faces are 178x218; bigger records only cost memory
MAX_FILE_MB = 50  # default --max_file_mb: no source image is read beyond this
FILE_MB_CEILING = 200  # --max_file_mb upper bound: each worker may hold one such file
MAX_MEGAPIXELS = 40  # default --max_megapixels: decoding costs ~4-15 bytes per pixel
MEGAPIXELS_CEILING = 100  # --max_megapixels upper bound (PIL refuses ~179 MP anyway)
# Label files: CelebA's largest (attributes) has 27 MB, 202,599 rows, lines under 600 chars.
# All four at these limits hold ~1 GB while they are checked (measured).
MAX_LABEL_FILE_MB = 32
MAX_LABEL_ROWS = 500_000
MAX_LABEL_LINE_CHARS = 10_000
# An archived member that inflates more than this, and past 1 MiB, is a bomb: images are
# compressed already (deflate can reach ~1000:1 only on runs of identical bytes).
MAX_COMPRESSION_RATIO = 200
_RATIO_MIN_BYTES = 2**20
# Processed images waiting for the shard writer, at most: bounds the main process's memory
# for any --size and --workers.
_IN_FLIGHT_BYTES = 256 * 2**20
WORKERS_PER_CORE = 4


class PrepareError(ValueError):
    """The source or --out cannot be used: no images, labels that disagree, a foreign --out."""


# --------------------------------------------------------------------------- image recipe


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
            raise ValueError(f"--size must be in 1..{MAX_SIZE}, got {self.size}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample {self.resample!r} is not one of {list(RESAMPLE_FILTERS)}")
        if self.fmt not in schema.FORMATS:
            raise ValueError(f"format {self.fmt!r} is not one of {schema.FORMATS}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if isinstance(self.crop, str):
            if self.crop not in CROP_WORDS:
                raise ValueError(f"crop {self.crop!r} is not a box, 'auto', 'center' or 'none'")
        else:
            left, top, right, bottom = self.crop
            if not 0 <= left < right or not 0 <= top < bottom:
                raise ValueError(
                    f"crop box {tuple(self.crop)} needs 0 <= left < right, top < bottom"
                )


def parse_crop(text: str) -> Crop:
    """`--crop` text: "left,top,right,bottom", "auto", "center" or "none"."""
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
            f"--crop={text!r}: give left,top,right,bottom (e.g. 0,40,178,218), auto, center or none"
        )
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


class _SkipError(Exception):
    """An input that cannot enter the dataset; the message is the reason in the manifest."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """How big a source file may be; bigger ones are skipped with the reason, unread."""

    max_file_mb: int = MAX_FILE_MB
    max_megapixels: int = MAX_MEGAPIXELS

    def __post_init__(self) -> None:
        if not 1 <= self.max_file_mb <= FILE_MB_CEILING:
            raise ValueError(
                f"--max_file_mb must be in 1..{FILE_MB_CEILING}, got {self.max_file_mb}"
            )
        if not 1 <= self.max_megapixels <= MEGAPIXELS_CEILING:
            raise ValueError(
                f"--max_megapixels must be in 1..{MEGAPIXELS_CEILING}, got {self.max_megapixels}"
            )

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 2**20

    @property
    def max_pixels(self) -> int:
        return self.max_megapixels * 10**6


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
        raise _SkipError(
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


def _too_many_pixels(pixels: int | str, limit: int) -> _SkipError:
    return _SkipError(
        f"image declares {pixels} pixels, over the --max_megapixels {limit // 10**6} limit "
        "(a decompression bomb, or raise --max_megapixels)"
    )


def _unreadable(e: Exception) -> _SkipError:
    # PIL raises many types for bad data; every one means "skip it".
    return _SkipError(f"not a readable image ({type(e).__name__}: {e})")


def transform(
    data: bytes,
    recipe: Recipe,
    max_pixels: int = MAX_MEGAPIXELS * 10**6,
    reserve: Callable[[int], contextlib.AbstractContextManager] | None = None,
) -> tuple[bytes, Box]:
    """Decodes, converts to RGB, crops, resizes and encodes one image; raises _SkipError.

    The pixel count is checked from the header before anything is decoded; `reserve(pixels)`
    (a _PixelBudget's) is held until every full-size copy of the image is freed.
    """
    if not data:
        raise _SkipError("empty file (0 bytes)")
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
    except _SkipError:
        raise
    except Exception as e:
        raise _unreadable(e) from e
    return _crop_resize_encode(image, recipe)


def _crop_resize_encode(image: Image.Image, recipe: Recipe) -> tuple[bytes, Box]:
    width, height = image.size
    box = crop_box(recipe.crop, width, height)
    if box[2] > width or box[3] > height:
        raise _SkipError(
            f"image is {width}x{height}, smaller than the crop box {box}; "
            "use --crop center or --crop none for images of other sizes"
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


@contextlib.contextmanager
def _no_reservation(pixels: int) -> Iterator[None]:
    yield


class _PixelBudget:
    """Megapixels that all worker processes together may hold decoded at once.

    One large image in each of many workers would multiply the memory of the largest image
    allowed by the workers; with the budget a large image waits until enough pixels are
    free. Images up to 1 MP (CelebA's are 0.04) take none, so they never wait.
    """

    def __init__(self, context: Any, megapixels: int) -> None:
        self._free = context.BoundedSemaphore(megapixels)  # one unit per megapixel
        self._taking = context.Lock()

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        units = math.ceil(pixels / 10**6) if pixels > 10**6 else 0
        with self._taking:  # one taker at a time: two half-served takers never deadlock
            for _ in range(units):
                self._free.acquire()
        try:
            yield
        finally:
            if units:
                _return_freed_memory()
            for _ in range(units):
                self._free.release()


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim, or no way to ask
        return None


_MALLOC_TRIM = _libc_malloc_trim() if sys.platform.startswith("linux") else None


def _return_freed_memory() -> None:
    """Hands the heap's free pages back to the OS.

    glibc keeps the freed blocks of a large image (PIL allocates in 16 MB blocks, under
    malloc's mmap threshold) in the process's heap, so every worker that once decoded a
    large image would keep its size resident; the pixel budget must count what is resident.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# --------------------------------------------------------------------------- reading the source


@dataclasses.dataclass(frozen=True)
class _File:
    path: str  # posix path in the source, as if every archive were extracted
    container: str | None  # the .zip holding it; None for a plain file
    member: str  # name inside the container, or path relative to the source folder


class _TooBigError(_SkipError):
    """A file over the size limit of its kind; the caller names the limit's flag."""


def _too_big(size: int, limit: int) -> _TooBigError:
    return _TooBigError(f"{size / 2**20:,.1f} MB, over the {limit / 2**20:g} MB limit")


def _check_member(info: zipfile.ZipInfo, limit: int) -> None:
    """Skips an archived member by its header's sizes, before inflating a byte of it."""
    if info.file_size > limit:
        raise _too_big(info.file_size, limit)
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_MIN_BYTES and ratio > MAX_COMPRESSION_RATIO:
        raise _SkipError(
            f"inflates {ratio:,.0f}:1 in the archive (over {MAX_COMPRESSION_RATIO}:1, which no "
            "image reaches): a zip bomb or padding, not read"
        )


class _Reader:
    """Reads files of a source; keeps one open ZipFile per archive in this process."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._archives: dict[str, zipfile.ZipFile] = {}

    def read(self, container: str | None, member: str, limit: int) -> bytes:
        """The file's bytes; _SkipError, unread, when it is larger than `limit` bytes.

        Sizes are checked before reading (the file's, or the archive header's) and the read
        itself stops after `limit` bytes, so a file that grows or a header that lies costs
        no more memory.
        """
        if container is None:
            path = os.path.join(self.root, member)
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
                raise _SkipError("not a regular file (a device, FIFO or socket)")
            if info.st_size > limit:
                raise _too_big(info.st_size, limit)
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        else:
            if container not in self._archives:
                self._archives[container] = zipfile.ZipFile(container)
            archive = self._archives[container]
            info = archive.getinfo(member)
            _check_member(info, limit)
            with archive.open(info) as f:
                data = f.read(limit + 1)
        if len(data) > limit:
            raise _too_big(len(data), limit)
        return data

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        self._archives.clear()


# Archives fail in many ways: an encrypted member (RuntimeError), an unknown compression
# (NotImplementedError), a truncated or damaged stream (EOFError, zlib.error, BadZipFile).
_READ_ERRORS = (
    OSError,
    KeyError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    zipfile.BadZipFile,
)

# (payload, crop box, None) for an image in the dataset, (None, None, reason) for a skipped one.
_Result = tuple[bytes | None, Box | None, str | None]


class _Worker:
    """Turns a (container, member) task into a result; PIL only, so it never touches TF."""

    def __init__(
        self, root: str, recipe: Recipe, limits: Limits, budget: _PixelBudget | None = None
    ) -> None:
        self.reader = _Reader(root)
        self.recipe = recipe
        self.limits = limits
        self.reserve = budget.reserve if budget else None  # None: the only worker

    def __call__(self, task: tuple[str | None, str]) -> _Result:
        container, member = task
        try:
            data = self.reader.read(container, member, self.limits.max_file_bytes)
        except _TooBigError as e:
            return None, None, f"{e} of --max_file_mb (raise it to include the file)"
        except _SkipError as e:
            return None, None, str(e)
        except _READ_ERRORS as e:
            return None, None, f"cannot read the file ({type(e).__name__}: {e})"
        try:
            payload, box = transform(data, self.recipe, self.limits.max_pixels, self.reserve)
        except _SkipError as e:
            return None, None, str(e)
        return payload, box, None

    def close(self) -> None:
        self.reader.close()


_WORKER: _Worker | None = None  # one per pool process, set by _init_worker


def _init_worker(root: str, recipe: Recipe, limits: Limits, budget: _PixelBudget) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _WORKER = _Worker(root, recipe, limits, budget)


def _run_chunk(tasks: list[tuple[str | None, str]]) -> list[_Result]:
    assert _WORKER is not None
    return [_WORKER(task) for task in tasks]


def _hidden(path: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.split("/"))


def _unsafe_member(name: str) -> bool:
    """An absolute path, a drive letter or a `..` part: a name no extraction should follow."""
    parts = name.replace("\\", "/").split("/")
    return (
        name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None or (".." in parts)
    )


UNSAFE_MEMBER_REASON = "unsafe path in the archive (absolute, a drive, or '..'): not read"


def _zip_files(archive: str, prefix: str = "") -> tuple[list[_File], list[dict[str, str]]]:
    """The archive's files, and its members with unsafe paths as skipped entries."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = sorted(i.filename for i in z.infolist() if not i.is_dir())
    except (OSError, zipfile.BadZipFile) as e:
        raise PrepareError(f"cannot open the archive {archive}: {e}") from e
    unsafe = [n for n in names if _unsafe_member(n)]
    skipped = [{"source_id": prefix + n, "reason": UNSAFE_MEMBER_REASON} for n in unsafe]
    files = [_File(prefix + n, archive, n) for n in names if not (n in unsafe or _hidden(n))]
    return files, skipped


def _folder_files(root: str) -> list[_File]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in sorted(names):
            path = name if rel == "." else f"{rel}/{name}"
            if not _hidden(path):
                files.append(_File(path, None, path))
    return files


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _celeba_image_dir(images: list[_File]) -> tuple[str, str] | None:
    """(layout, image folder) when the images sit in CelebA's folder, else None."""
    dirs = {posixpath.dirname(f.path) for f in images}
    kaggle = sorted(d for d in dirs if d.split("/")[-2:] == [IMAGE_DIR, IMAGE_DIR])
    official = sorted(d for d in dirs if d.split("/")[-1] == IMAGE_DIR and d not in kaggle)
    for layout, found in (("kaggle", kaggle), ("official", official)):
        if len(found) > 1:
            raise PrepareError(f"several CelebA image folders in the source: {found}; keep one")
        if found:
            return layout, found[0]
    return None


def _list_files(src: str) -> tuple[list[_File], bool, list[dict[str, str]]]:
    """Every file of a folder or .zip source, whether any comes from an archive, and the
    archive members skipped for their unsafe paths.

    A folder holding CelebA's img_align_celeba.zip unextracted (as downloaded beside the
    label files) is read as if it were extracted in place.
    """
    if os.path.isdir(src):
        files, skipped = _folder_files(src), []
        if _celeba_image_dir([f for f in files if _is_image(f.path)]) is None:
            for f in [f for f in files if posixpath.basename(f.path) == IMAGE_DIR + ".zip"]:
                prefix = posixpath.dirname(f.path)
                nested, unsafe = _zip_files(
                    os.path.join(src, f.member), prefix + "/" if prefix else ""
                )
                files += nested
                skipped += unsafe
        return files, any(f.container for f in files), skipped
    if os.path.isfile(src) and zipfile.is_zipfile(src):
        files, skipped = _zip_files(src)
        return files, True, skipped
    if not os.path.exists(src):
        raise PrepareError(f"--src {src} does not exist")
    raise PrepareError(f"--src {src} is neither a folder nor a .zip archive")


# --------------------------------------------------------------------------- label files


@dataclasses.dataclass
class _Table:
    where: str  # the file, for error messages
    names: list[str] | None  # the header's column names (without the file-name column)
    # file name -> (line number, its values joined by single spaces): one string per row,
    # not one per value, keeps CelebA's 8 million attribute values out of memory.
    rows: dict[str, tuple[int, str]]


def _numbered_rows(where: str, text: str, is_csv: bool) -> Iterator[tuple[int, list[str]]]:
    """(line number, tokens) of the non-empty lines; PrepareError on an overlong line."""

    def lines() -> Iterator[str]:
        for no, line in enumerate(io.StringIO(text), 1):
            if len(line) > MAX_LABEL_LINE_CHARS:
                raise PrepareError(
                    f"{where}:{no}: a line of {len(line):,} characters (CelebA's are under 600, "
                    f"the limit is {MAX_LABEL_LINE_CHARS:,}): not a CelebA label file; remove it"
                )
            yield line

    rows = csv.reader(lines()) if is_csv else (line.split() for line in lines())
    for no, tokens in enumerate(rows, 1):
        if tokens:
            yield no, tokens


def _parse_table(where: str, text: str, is_csv: bool) -> _Table:
    """A CelebA label file: optional count line, optional header line, rows `name v1 v2 ...`."""
    lines = _numbered_rows(where, text, is_csv)
    first = next(lines, None)
    count_line, names = None, None
    if is_csv:
        if first is None:
            raise PrepareError(f"{where}: the file is empty; remove it or replace it")
        names, first = [n.strip() for n in first[1][1:]], next(lines, None)
    else:
        if first and len(first[1]) == 1 and first[1][0].isdigit():
            count_line, first = first, next(lines, None)
        if first and not _is_image(first[1][0]):  # rows start with a file name, headers not
            names, first = first[1], next(lines, None)
            if first and len(names) == len(first[1]):  # the header names the file column too
                names = names[1:]
    rows: dict[str, tuple[int, str]] = {}
    for no, tokens in itertools.chain([first] if first else [], lines):
        name = tokens[0].strip()
        if name in rows:
            raise PrepareError(
                f"{where}:{no}: {name} appears again (first on line {rows[name][0]})"
            )
        if len(rows) == MAX_LABEL_ROWS:
            raise PrepareError(
                f"{where}:{no}: more than {MAX_LABEL_ROWS:,} rows (CelebA has 202,599): "
                "not a CelebA label file; remove it"
            )
        rows[name] = (no, " ".join(t.strip() for t in tokens[1:]))
    if count_line is not None and int(count_line[1][0]) != len(rows):
        raise PrepareError(
            f"{where}:{count_line[0]}: the count line says {count_line[1][0]} rows but the file "
            f"has {len(rows)}; the file is incomplete or edited - download it again"
        )
    return _Table(where, names, rows)


def _read_table(
    reader: _Reader, files: list[_File], src: str, stem: str, layout: str
) -> _Table | None:
    """The label file `stem`.txt/.csv anywhere in the source (the shallowest), or None."""
    extensions = (".csv", ".txt") if layout == "kaggle" else (".txt", ".csv")
    found = [
        (extensions.index(ext), f.path.count("/"), f.path, f)
        for f in files
        for ext in extensions
        if posixpath.basename(f.path) == stem + ext
    ]
    if not found:
        return None
    f = min(found, key=lambda t: t[:3])[3]
    where = os.path.join(src, f.path)
    try:
        data = reader.read(f.container, f.member, MAX_LABEL_FILE_MB * 2**20)
    except _SkipError as e:
        raise PrepareError(
            f"{where}: {e}; CelebA's label files are under 27 MB and the limit for them is "
            f"{MAX_LABEL_FILE_MB} MB: remove or replace the file"
        ) from e
    except _READ_ERRORS as e:
        raise PrepareError(f"cannot read {where} ({type(e).__name__}: {e})") from e
    text = data.decode("utf-8-sig", errors="replace")
    del data
    return _parse_table(where, text, f.path.endswith(".csv"))


def _values(table: _Table, name: str, count: int, kind: type, allowed: set | None = None) -> list:
    """The row of `name` converted to `count` values of `kind`, or PrepareError naming the line."""
    no, text = table.rows[name]
    tokens = text.split()
    problem = None
    if len(tokens) != count:
        problem = f"expected {count} values after the file name, got {len(tokens)}"
    else:
        try:
            values = [kind(t) for t in tokens]
        except ValueError:
            problem = f"values must be {kind.__name__}s, got {' '.join(tokens)!r}"
        else:
            if allowed is not None and not set(values) <= allowed:
                problem = f"values must be in {sorted(allowed)}, got {' '.join(tokens)!r}"
            elif kind is float and not all(math.isfinite(v) for v in values):
                problem = f"values must be finite, got {' '.join(tokens)!r}"
    if problem:
        raise PrepareError(f"{table.where}:{no}: malformed row for {name}: {problem}")
    return values


# --------------------------------------------------------------------------- the listing


@dataclasses.dataclass
class Item:
    """One image of the listing with its labels."""

    index: int  # position in the source listing
    source_id: str
    container: str | None
    member: str
    split: str
    attributes: list[int] | None = None
    landmarks: list[float] | None = None
    identity: int | None = None


@dataclasses.dataclass
class Source:
    """A scanned source: what prepare() processes and what the manifest says about it."""

    path: str
    layout: str  # official, kaggle or folder
    archive: bool
    items: list[Item]
    skipped: list[dict[str, str]]
    attribute_names: list[str]
    has_landmarks: bool
    has_identity: bool
    split_fractions: list[float] | None  # None: the official partition


def _split_by_fractions(ids: list[str], fractions: Sequence[float], seed: int) -> list[str]:
    """A seeded split with exact counts; ranking by a hash of (seed, id) keeps it stable.

    The cumulative boundaries are rounded, not each count, so a split of fraction 0 stays empty.
    """
    n, total = len(ids), sum(fractions)
    n_train = round(fractions[0] / total * n)
    n_train_validation = round((fractions[0] + fractions[1]) / total * n)
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}/{ids[i]}".encode()).digest())
    splits = [""] * n
    for rank, i in enumerate(order):
        splits[i] = (
            "train" if rank < n_train else "validation" if rank < n_train_validation else "test"
        )
    return splits


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split_fractions {fractions} must be three non-negative numbers "
            "(train, validation, test) that sum to 1"
        )
    return fractions


def scan_source(
    src: str,
    *,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    limit: int | None = None,
) -> Source:
    """Lists the images of `src`, reads and checks its label files, assigns the splits."""
    src = os.path.abspath(os.path.expanduser(src))
    fractions = _check_fractions(split_fractions)
    files, archive, unsafe = _list_files(src)
    images = [f for f in files if _is_image(f.path)]
    if not images:
        archives = [f.path for f in files if f.path.lower().endswith(".zip")]
        hint = (
            f"; it holds {archives[:3]}: pass the one with the images as --src" if archives else ""
        )
        raise PrepareError(
            f"no images in {src}: expected {IMAGE_DIR}/ (official CelebA), "
            f"{IMAGE_DIR}/{IMAGE_DIR}/ (Kaggle) or any folder of "
            f"{'/'.join(IMAGE_EXTENSIONS)} files{hint}"
        )
    found = _celeba_image_dir(images)
    if found is None:
        source = _folder_source(src, archive, images, fractions, seed, limit)
        return dataclasses.replace(source, skipped=unsafe + source.skipped)
    layout, image_dir = found
    in_dir = {
        posixpath.basename(f.path): f for f in images if posixpath.dirname(f.path) == image_dir
    }
    reader = _Reader(src)
    try:
        tables = {
            kind: _read_table(reader, files, src, stem, layout)
            for kind, stem in LABEL_STEMS.items()
        }
    finally:
        reader.close()
    source = _celeba_source(src, layout, archive, image_dir, in_dir, tables, fractions, seed, limit)
    return dataclasses.replace(source, skipped=unsafe + source.skipped)


def _folder_source(
    src: str,
    archive: bool,
    images: list[_File],
    fractions: list[float],
    seed: int,
    limit: int | None,
) -> Source:
    images = images[:limit]
    ids = [f.path for f in images]
    splits = _split_by_fractions(ids, fractions, seed)
    pairs = enumerate(zip(images, splits, strict=True))
    items = [Item(i, f.path, f.container, f.member, split) for i, (f, split) in pairs]
    return Source(src, "folder", archive, items, [], [], False, False, fractions)


def _check_rows(table: _Table, known: set[str], present: list[str], folder: str) -> None:
    """Every row names an image of the source and every image has a row."""
    for name, (no, _) in table.rows.items():
        if name not in known:
            raise PrepareError(
                f"{table.where}:{no}: {name} is not an image of {folder}: the label file and the "
                "images disagree; use the label files that came with these images"
            )
    missing = [name for name in present if name not in table.rows]
    if missing:
        raise PrepareError(
            f"{table.where}: no row for {missing[0]} ({len(missing)} images of {folder} have "
            "none): the label file and the images disagree; use the label files that came with "
            "these images, or remove the file"
        )


def _celeba_source(
    src: str,
    layout: str,
    archive: bool,
    image_dir: str,
    in_dir: dict[str, _File],
    tables: dict[str, _Table | None],
    fractions: list[float],
    seed: int,
    limit: int | None,
) -> Source:
    folder = os.path.join(src, image_dir)
    partition = tables.pop("partition")
    skipped = []
    if partition is None:
        names = sorted(in_dir)
        splits = _split_by_fractions(names[:limit], fractions, seed)
    else:
        names = list(partition.rows)
        allowed = set(PARTITION_SPLITS)
        splits = [
            PARTITION_SPLITS[_values(partition, n, 1, int, allowed)[0]] for n in names[:limit]
        ]
        for name in sorted(set(in_dir) - set(partition.rows)):
            reason = f"not listed in {partition.where}, so it has no split"
            skipped.append({"source_id": name, "reason": reason})
    present = [name for name in names if name in in_dir]
    for table in tables.values():
        if table is not None:
            _check_rows(table, set(names) | set(in_dir), present, folder)
    attributes, landmarks, identity = tables["attributes"], tables["landmarks"], tables["identity"]
    attribute_names = (attributes.names or list(schema.CELEBA_ATTRIBUTES)) if attributes else []
    if landmarks and landmarks.names and len(landmarks.names) != schema.NUM_LANDMARK_VALUES:
        raise PrepareError(
            f"{landmarks.where}: the header names {len(landmarks.names)} columns, expected "
            f"{schema.NUM_LANDMARK_VALUES} (x, y of eyes, nose and mouth corners)"
        )
    items = []
    for index, (name, split) in enumerate(zip(names[:limit], splits, strict=True)):
        if name not in in_dir:
            line = partition.rows[name][0]  # only a partition lists files that are not there
            reason = f"listed in {partition.where} (line {line}) but missing from {folder}"
            skipped.append({"source_id": name, "reason": reason})
            continue
        f = in_dir[name]
        item = Item(index, name, f.container, f.member, split)
        if attributes:
            values = _values(attributes, name, len(attribute_names), int, {-1, 0, 1})
            item.attributes = [int(v == 1) for v in values]  # CelebA's 1 / -1 -> 1 / 0
        if landmarks:
            item.landmarks = _values(landmarks, name, schema.NUM_LANDMARK_VALUES, float)
        if identity:
            item.identity = _values(identity, name, 1, int)[0]
        items.append(item)
    return Source(
        src,
        layout,
        archive,
        items,
        skipped,
        attribute_names,
        landmarks is not None,
        identity is not None,
        None if partition else fractions,
    )


# --------------------------------------------------------------------------- writing


def auto_examples_per_shard(recipe: Recipe) -> int:
    """A power of two giving shards of about TARGET_SHARD_BYTES (4096 at 96x96 JPEG)."""
    estimate = recipe.size * recipe.size * schema.CHANNELS * _COMPRESSION_RATIO[recipe.fmt]
    return max(64, 2 ** int(math.log2(max(TARGET_SHARD_BYTES / estimate, 1))))


class _SplitWriter:
    """Writes one split's records into shards; names them once their number is known."""

    def __init__(self, folder: str, split: str, per_shard: int, compression: str | None) -> None:
        self.folder, self.split, self.per_shard = folder, split, per_shard
        self.compression = compression
        self._options = tf.io.TFRecordOptions(compression_type=compression or "")
        self._writer: tf.io.TFRecordWriter | None = None
        self._paths: list[str] = []
        self._counts: list[int] = []

    def write(self, record: bytes) -> None:
        if self._writer is None or self._counts[-1] == self.per_shard:
            self._close()
            path = os.path.join(self.folder, f"{self.split}-{len(self._paths):05d}.partial")
            self._writer = tf.io.TFRecordWriter(path, self._options)
            self._paths.append(path)
            self._counts.append(0)
        self._writer.write(record)
        self._counts[-1] += 1

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self) -> dict[str, Any]:
        """Closes the last shard, renames all to their final names; the manifest's split entry."""
        self._close()
        shards = []
        for i, (path, count) in enumerate(zip(self._paths, self._counts, strict=True)):
            name = schema.shard_name(self.split, i, len(self._paths), self.compression)
            final = os.path.join(self.folder, name)
            os.replace(path, final)
            shards.append(
                {
                    "name": name,
                    "num_examples": count,
                    "bytes": os.path.getsize(final),
                    "sha256": schema.file_sha256(final),
                }
            )
        return {"num_examples": sum(self._counts), "shards": shards}


def _in_order(
    pool: multiprocessing.pool.Pool, tasks: list[Any], chunksize: int, max_chunks: int
) -> Iterator[_Result]:
    """pool.imap with at most `max_chunks` chunks submitted and not yet consumed.

    imap queues every task at once, so results pile up whenever the writer is slower than
    the workers; here memory stays bounded by max_chunks x chunksize results.
    """
    pending: collections.deque = collections.deque()
    for start in range(0, len(tasks), chunksize):
        if len(pending) == max_chunks:
            yield from pending.popleft().get()
        pending.append(pool.apply_async(_run_chunk, (tasks[start : start + chunksize],)))
    while pending:
        yield from pending.popleft().get()


@contextlib.contextmanager
def _processed(
    tasks: list[tuple[str | None, str]], root: str, recipe: Recipe, limits: Limits, workers: int
) -> Iterator[Iterator[_Result]]:
    """The results of `tasks`, in order: in this process for one worker, else from a pool."""
    if workers <= 1 or len(tasks) <= 1:
        worker = _Worker(root, recipe, limits)
        try:
            yield map(worker, tasks)
        finally:
            worker.close()
        return
    # Chunks big enough to amortise the inter-process traffic, small enough to balance the
    # load; two in flight per worker keep every worker busy, and no more than
    # _IN_FLIGHT_BYTES of (at most raw-sized) results wait for the writer.
    per_image = recipe.size * recipe.size * schema.CHANNELS
    chunksize = max(
        1, min(64, len(tasks) // (workers * 8), _IN_FLIGHT_BYTES // (2 * workers * per_image))
    )
    context = multiprocessing.get_context(_START_METHOD)
    budget = _PixelBudget(context, limits.max_megapixels)
    with context.Pool(workers, _init_worker, (root, recipe, limits, budget)) as pool:
        yield _in_order(pool, tasks, chunksize, max_chunks=2 * workers)


def _write_splits(
    folder: str,
    source: Source,
    recipe: Recipe,
    *,
    limits: Limits,
    workers: int,
    per_shard: int,
    compression: str | None,
    progress: Progress | None,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Processes every item and writes the shards; returns the splits and the skipped inputs."""
    writers: dict[str, _SplitWriter] = {}
    skipped = []
    tasks = [(item.container, item.member) for item in source.items]
    root = source.path if os.path.isdir(source.path) else os.path.dirname(source.path)
    with _processed(tasks, root, recipe, limits, workers) as results:
        for item, (payload, box, reason) in zip(source.items, results, strict=True):
            if progress:
                progress.update()
            if payload is None:
                skipped.append({"source_id": item.source_id, "reason": reason})
                continue
            if item.split not in writers:
                writers[item.split] = _SplitWriter(folder, item.split, per_shard, compression)
            landmarks = item.landmarks and move_landmarks(item.landmarks, box, recipe.size)
            record = schema.encode_example(
                payload,
                fmt=recipe.fmt,
                height=recipe.size,
                width=recipe.size,
                channels=schema.CHANNELS,
                source_id=item.source_id,
                index=item.index,
                attributes=item.attributes,
                landmarks=landmarks,
                identity=item.identity,
            )
            writers[item.split].write(record)
    if progress:
        progress.close()
    splits = {split: writers[split].finish() for split in schema.SPLITS if split in writers}
    return splits, skipped


# --------------------------------------------------------------------------- the output folder


def _is_dataset_file(name: str) -> bool:
    # The judge (tools.train_judge) is stored with the dataset and goes stale with it.
    return (
        name.endswith((".tfrecord", ".tfrecord.gz"))
        or name.startswith(".tmp-")
        or name == JUDGE_SUBDIR
    )


def _check_out(out: str, overwrite: bool) -> None:
    """Refuses to replace a complete dataset without `overwrite`, or anything not a dataset."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise PrepareError(f"--out {out} is a file; choose a folder path")
    names = os.listdir(out)
    if schema.MANIFEST_NAME in names and not overwrite:
        raise PrepareError(
            f"{out} already holds a complete dataset ({schema.MANIFEST_NAME}); pass --overwrite "
            "to replace it, or choose another --out"
        )
    foreign = sorted(n for n in names if n != schema.MANIFEST_NAME and not _is_dataset_file(n))
    if foreign:
        raise PrepareError(
            f"--out {out} exists and holds files that are not part of a dataset ({foreign[:3]}); "
            "refusing to replace it: choose another --out or remove the folder yourself"
        )


# --------------------------------------------------------------------------- prepare


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def summary_line(manifest: dict[str, Any], out: str, seconds: float, images: int) -> str:
    """examples per split, skipped, seconds, images/s."""
    splits = manifest["splits"]
    total = sum(info["num_examples"] for info in splits.values())
    per_split = ", ".join(f"{split} {info['num_examples']}" for split, info in splits.items())
    skipped = len(manifest["skipped"])
    why = f" (reasons under 'skipped' in {schema.manifest_path(out)})" if skipped else ""
    return (
        f"prepared {total} examples ({per_split}) in {out}; skipped {skipped}{why}; "
        f"{seconds:.1f} s, {images / max(seconds, 1e-9):,.0f} images/s"
    )


def prepare(
    src: str,
    out: str,
    *,
    size: int = schema.IMAGE_SIZE,
    crop: Crop = "auto",
    resample: str = schema.DEFAULT_RESAMPLE,
    fmt: str = schema.DEFAULT_FORMAT,
    quality: int = schema.DEFAULT_QUALITY,
    examples_per_shard: int = 0,
    workers: int | None = None,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    limit: int | None = None,
    compression: str | None = None,
    max_file_mb: int = MAX_FILE_MB,
    max_megapixels: int = MAX_MEGAPIXELS,
    overwrite: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Prepares `src` (CelebA folder/.zip or image folder) as a dataset in `out`.

    Args mirror the command-line flags; examples_per_shard 0 sizes shards automatically,
    workers None uses every core, compression is None or "GZIP", crop "auto" is CelebA's box
    for the official and Kaggle layouts and "center" for an image folder (see resolve_crop).
    Source images over max_file_mb or max_megapixels are skipped unread, with the reason in
    the manifest, so memory stays bounded whatever the source holds. With `verbose`,
    progress goes to stderr and a summary line to stdout. Returns the manifest as written.
    Raises PrepareError for an unusable source or --out, ValueError for bad arguments.
    """
    recipe = Recipe(size=size, crop=crop, resample=resample, fmt=fmt, quality=quality)
    limits = Limits(max_file_mb=max_file_mb, max_megapixels=max_megapixels)
    if compression not in (None, "GZIP"):
        raise ValueError(f"compression {compression!r} is not None or 'GZIP'")
    if examples_per_shard < 0 or (limit is not None and limit < 1):
        raise ValueError("examples_per_shard must be >= 0 and limit >= 1")
    # More processes than 4 per core only cost memory (each holds its own heap).
    workers = min(workers or default_workers(), WORKERS_PER_CORE * default_workers())
    per_shard = examples_per_shard or auto_examples_per_shard(recipe)

    def say(message: str) -> None:
        if verbose:
            print(message, file=sys.stderr, flush=True)

    out = os.path.abspath(os.path.expanduser(out))
    _check_out(out, overwrite)
    start = time.perf_counter()
    source = scan_source(src, split_fractions=split_fractions, seed=seed, limit=limit)
    recipe = dataclasses.replace(recipe, crop=resolve_crop(crop, source.layout))
    tmp = fresh_temp_dir(out, say)
    try:
        progress = Progress(len(source.items), "prepare_celeba") if verbose else None
        splits, skipped = _write_splits(
            tmp,
            source,
            recipe,
            limits=limits,
            workers=workers,
            per_shard=per_shard,
            compression=compression,
            progress=progress,
        )
        skipped = source.skipped + skipped
        if not splits:
            reasons = "; ".join(f"{s['source_id']}: {s['reason']}" for s in skipped[:3])
            raise PrepareError(f"none of the images of {source.path} could be used ({reasons})")
        manifest = {
            "image": {
                "height": size,
                "width": size,
                "channels": schema.CHANNELS,
                "format": fmt,
                "quality": quality,
            },
            "crop": recipe.crop if isinstance(recipe.crop, str) else list(recipe.crop),
            "resample": resample,
            "compression": compression,
            "source": {"layout": source.layout, "path": source.path, "archive": source.archive},
            "attribute_names": source.attribute_names,
            "has_landmarks": source.has_landmarks,
            "has_identity": source.has_identity,
            "seed": seed,
            "split_fractions": source.split_fractions,
            "splits": splits,
            "skipped": skipped,
        }
        schema.write_manifest(tmp, manifest)  # last: its presence means the dataset is complete
        _check_out(out, overwrite)  # nothing appeared at --out in the meantime
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = schema.read_manifest(out)
    if verbose:
        print(summary_line(manifest, out, time.perf_counter() - start, len(source.items)))
    return manifest


# --------------------------------------------------------------------------- command line


def define_flags() -> None:
    """The CLI's flags; defined by run(), so importing prepare() adds none to another CLI."""
    flags.DEFINE_string(
        "src", None, "CelebA folder or .zip (official or Kaggle), or any image folder."
    )
    flags.DEFINE_string("out", None, "Output folder for the shards and dataset.json.")
    flags.DEFINE_integer(
        "size",
        schema.IMAGE_SIZE,
        f"Output height and width in pixels (at most {MAX_SIZE}).",
        lower_bound=1,
        upper_bound=MAX_SIZE,
    )
    flags.DEFINE_string(
        "crop",
        "auto",
        "Cut before resizing: 'auto' (CelebA: 0,40,178,218; folder: center), a box "
        "left,top,right,bottom, 'center' (largest square) or 'none'.",
    )
    flags.DEFINE_enum(
        "resample", schema.DEFAULT_RESAMPLE, list(RESAMPLE_FILTERS), "PIL resize filter."
    )
    flags.DEFINE_enum(
        "format", schema.DEFAULT_FORMAT, list(schema.FORMATS), "Image encoding in the records."
    )
    flags.DEFINE_integer(
        "quality", schema.DEFAULT_QUALITY, "JPEG quality.", lower_bound=1, upper_bound=100
    )
    flags.DEFINE_integer(
        "examples_per_shard",
        0,
        "Examples per shard; 0: ~20 MB shards (4096 at 96x96 JPEG).",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "workers",
        None,
        f"Worker processes (default: all cores; at most {WORKERS_PER_CORE} per core are started).",
        lower_bound=1,
    )
    flags.DEFINE_list(
        "split_fractions",
        [str(f) for f in DEFAULT_SPLIT_FRACTIONS],
        "train,validation,test fractions, used only when there is no official partition.",
    )
    flags.DEFINE_integer("seed", 0, "Seed of the split by --split_fractions.")
    flags.DEFINE_integer(
        "limit", None, "Use only the first N images of the source (quick tries).", lower_bound=1
    )
    flags.DEFINE_enum("compression", "none", ["none", "gzip"], "Shard compression.")
    flags.DEFINE_integer(
        "max_file_mb",
        MAX_FILE_MB,
        "Source images larger than this (MB) are skipped unread, listed in the manifest "
        f"(at most {FILE_MB_CEILING}).",
        lower_bound=1,
        upper_bound=FILE_MB_CEILING,
    )
    flags.DEFINE_integer(
        "max_megapixels",
        MAX_MEGAPIXELS,
        "Source images with more pixels (millions) are skipped before decoding; also the "
        f"most all workers decode at once (~12 bytes a pixel; at most {MEGAPIXELS_CEILING}).",
        lower_bound=1,
        upper_bound=MEGAPIXELS_CEILING,
    )
    flags.DEFINE_bool("overwrite", False, "Replace an existing dataset at --out.")
    flags.mark_flags_as_required(["src", "out"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS  # noqa: N806 - absl's name
    try:
        crop = parse_crop(FLAGS.crop)
        fractions = _check_fractions([float(v) for v in FLAGS.split_fractions])
        Recipe(crop=crop)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    try:
        prepare(
            FLAGS.src,
            FLAGS.out,
            size=FLAGS.size,
            crop=crop,
            resample=FLAGS.resample,
            fmt=FLAGS.format,
            quality=FLAGS.quality,
            examples_per_shard=FLAGS.examples_per_shard,
            workers=FLAGS.workers,
            split_fractions=fractions,
            seed=FLAGS.seed,
            limit=FLAGS.limit,
            compression=None if FLAGS.compression == "none" else "GZIP",
            max_file_mb=FLAGS.max_file_mb,
            max_megapixels=FLAGS.max_megapixels,
            overwrite=FLAGS.overwrite,
        )
    except PrepareError as e:
        sys.exit(f"prepare_celeba: error: {e}")
    except KeyboardInterrupt:
        sys.exit(f"prepare_celeba: interrupted; {FLAGS.out} was left as it was")


def run() -> None:
    define_flags()
    run_app(main)


if __name__ == "__main__":
    run()
