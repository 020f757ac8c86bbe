"""The TFRecord schema and the dataset manifest: the one place that names them.

One `tf.train.Example` per image (the keys below); a prepared dataset is a
folder of shards `<split>-<i:05d>-of-<n:05d>.tfrecord` beside `dataset.json`,
which is written last, so its presence means the dataset is complete.

The manifest (every writer fills these; readers rely on them):

    {
      "schema_version": 1,
      "image": {"height": 96, "width": 96, "channels": 3, "format": "jpeg", "quality": 95},
      "crop": [0, 40, 178, 218] | "center" | "none",
      "resample": "lanczos",
      "compression": null | "GZIP",
      "source": {"layout": "official" | "kaggle" | "folder", "path": str, "archive": bool},
      "attribute_names": [str, ...],        # [] when the source has no attributes
      "has_landmarks": bool,
      "has_identity": bool,
      "seed": int,
      "split_fractions": [train, validation, test] | null,  # null: official partition
      "splits": {"train": {"num_examples": int,
                           "shards": [{"name": str, "num_examples": int,
                                       "bytes": int, "sha256": str}, ...]}, ...},
      "skipped": [{"source_id": str, "reason": str}, ...]
    }

One module, over 500 lines, because the record and the manifest are the one contract of a
prepared dataset: its writers and all of its readers meet here, and nowhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from facevae.pipeline import files

if TYPE_CHECKING:
    import tensorflow as tf

# TensorFlow is imported inside the functions that need it, so the constants here can be
# read by TF-free code (tools.make_synthetic, prepare_celeba's worker processes) quickly.

SCHEMA_VERSION = 1
MANIFEST_NAME = "dataset.json"
JUDGE_DIR = "judge"  # the dataset's attribute judge (model/judge.py) is stored beside it

# Record keys.
KEY_ENCODED = "image/encoded"
KEY_FORMAT = "image/format"
KEY_HEIGHT = "image/height"
KEY_WIDTH = "image/width"
KEY_CHANNELS = "image/channels"
KEY_SOURCE_ID = "image/source_id"
KEY_INDEX = "image/index"
KEY_ATTRIBUTES = "image/attributes"
KEY_LANDMARKS = "image/landmarks"
KEY_IDENTITY = "image/identity"

FORMATS = ("jpeg", "png", "raw")
SPLITS = ("train", "validation", "test")
NUM_LANDMARK_VALUES = 10  # five (x, y) points: eyes, nose, mouth corners
MISSING = -1  # parsed value of an absent int label (attribute, identity)
MISSING_LANDMARK = -1.0

# The original recipe's defaults.
IMAGE_SIZE = 96
CHANNELS = 3
DEFAULT_FORMAT = "jpeg"
DEFAULT_QUALITY = 95
DEFAULT_RESAMPLE = "lanczos"
CELEBA_IMAGE_SIZE = (178, 218)  # (width, height) of the aligned images
CELEBA_CROP = (0, 40, 178, 218)  # (left, top, right, bottom) -> 178x178

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair",
    "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

MAX_MANIFEST_BYTES = 64 << 20  # CelebA's is ~10 KB; a bigger one is not a manifest of ours
# A TFRecord record is its data plus 16 bytes of length and checksums; gzip (deflate)
# shrinks data at most ~1032:1. A count the shard's bytes cannot hold is not believed.
RECORD_OVERHEAD_BYTES = 16
MAX_DEFLATE_RATIO = 1032
_SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")  # at most NAME_MAX (255)


class DatasetError(ValueError):
    """A prepared dataset is missing, incomplete, damaged or of another schema version.

    `data_dir` is the dataset folder; `reprepare` says the fix is to prepare the dataset
    again (a command line adds how); the message says it in words.
    """

    def __init__(self, message: str, data_dir: str | None = None, reprepare: bool = True):
        super().__init__(message)
        self.data_dir = data_dir
        self.reprepare = reprepare


def shard_name(split: str, index: int, num_shards: int, compression: str | None = None) -> str:
    """`train-00003-of-00010.tfrecord` (`.gz` appended for GZIP shards)."""
    name = f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"
    return name + ".gz" if compression == "GZIP" else name


# --------------------------------------------------------------------------- records


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def encode_example(
    encoded: bytes,
    *,
    fmt: str,
    height: int,
    width: int,
    channels: int,
    source_id: str,
    index: int,
    attributes: Sequence[int] | None = None,
    landmarks: Sequence[float] | None = None,
    identity: int | None = None,
) -> bytes:
    """Serializes one image and its labels as a `tf.train.Example`.

    Labels that are unknown (None) are left out of the record.
    """
    if fmt not in FORMATS:
        raise ValueError(f"image format {fmt!r} is not one of {FORMATS}")
    if landmarks is not None and len(landmarks) != NUM_LANDMARK_VALUES:
        raise ValueError(f"landmarks need {NUM_LANDMARK_VALUES} values, got {len(landmarks)}")
    feature = {
        KEY_ENCODED: _bytes([encoded]),
        KEY_FORMAT: _bytes([fmt.encode()]),
        KEY_HEIGHT: _ints([height]),
        KEY_WIDTH: _ints([width]),
        KEY_CHANNELS: _ints([channels]),
        KEY_SOURCE_ID: _bytes([source_id.encode()]),
        KEY_INDEX: _ints([index]),
    }
    if attributes is not None:
        feature[KEY_ATTRIBUTES] = _ints(attributes)
    if landmarks is not None:
        feature[KEY_LANDMARKS] = _floats(landmarks)
    if identity is not None:
        feature[KEY_IDENTITY] = _ints([identity])
    import tensorflow as tf

    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Features are a protobuf map: only deterministic serialization gives the same bytes
    # in every process, which byte-identical shards need.
    return example.SerializeToString(deterministic=True)


def feature_spec(num_attributes: int = 0) -> dict[str, tf.io.FixedLenFeature]:
    """The parsing spec; absent labels parse as MISSING so every field has a fixed shape."""
    import tensorflow as tf

    spec = {
        KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
        KEY_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=DEFAULT_FORMAT),
        KEY_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        KEY_WIDTH: tf.io.FixedLenFeature([], tf.int64),
        KEY_CHANNELS: tf.io.FixedLenFeature([], tf.int64),
        KEY_SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        KEY_INDEX: tf.io.FixedLenFeature([], tf.int64, default_value=MISSING),
        KEY_LANDMARKS: tf.io.FixedLenFeature(
            [NUM_LANDMARK_VALUES], tf.float32, [MISSING_LANDMARK] * NUM_LANDMARK_VALUES
        ),
        KEY_IDENTITY: tf.io.FixedLenFeature([], tf.int64, default_value=MISSING),
    }
    if num_attributes:
        spec[KEY_ATTRIBUTES] = tf.io.FixedLenFeature(
            [num_attributes], tf.int64, default_value=[MISSING] * num_attributes
        )
    return spec


def _short_names(parsed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    # "image/encoded" -> "encoded": the keys a caller sees after parsing.
    return {key.split("/", 1)[1]: value for key, value in parsed.items()}


def parse_example(serialized: tf.Tensor, num_attributes: int = 0) -> dict[str, tf.Tensor]:
    """Parses one serialized Example into a dict of tensors keyed by short name.

    Keys: encoded, format, height, width, channels, source_id, index, landmarks
    (10,), identity and, when `num_attributes` > 0, attributes (A,). Pure tf ops,
    so it works eagerly and inside `tf.data.Dataset.map`.
    """
    import tensorflow as tf

    return _short_names(tf.io.parse_single_example(serialized, feature_spec(num_attributes)))


def parse_examples(serialized: tf.Tensor, num_attributes: int = 0) -> dict[str, tf.Tensor]:
    """Batched `parse_example`: a (B,) string tensor in, (B, ...) tensors out."""
    import tensorflow as tf

    return _short_names(tf.io.parse_example(serialized, feature_spec(num_attributes)))


# --------------------------------------------------------------------------- manifest


def manifest_path(data_dir: str) -> str:
    return os.path.join(data_dir, MANIFEST_NAME)


def write_manifest(data_dir: str, manifest: dict[str, Any]) -> str:
    """Writes `dataset.json` whole or not at all, stamping the schema version; returns its path."""
    return files.write_json(manifest_path(data_dir), {"schema_version": SCHEMA_VERSION, **manifest})


def file_sha256(path: str) -> str:
    """The shard checksum recorded in the manifest (hex sha256, read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(content: Any) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard file as the manifest records it."""

    name: str
    num_examples: int
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: its examples, its shards and a fingerprint of its content.

    The fingerprint (16 hex digits) covers the image format, crop, resampling and every
    shard's name and sha256: caches made from a split (codes, statistics, a judge) are
    keyed by it, so a re-prepared dataset is never served stale results.
    """

    name: str
    num_examples: int
    shards: tuple[Shard, ...]
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """`dataset.json`, read once and checked: what every reader of a dataset needs.

    Build it with `Manifest.read(data_dir)` and pass the object on; nothing reads the file
    again. Every problem with the file is a DatasetError naming the file and the key.
    """

    data_dir: str
    image_shape: tuple[int, int, int]  # (height, width, channels)
    image_format: str  # jpeg, png or raw
    compression: str | None  # None or "GZIP"
    crop: Any  # [left, top, right, bottom], "center" or "none"
    resample: str
    attribute_names: tuple[str, ...]
    splits: Mapping[str, Split]  # every split the file lists, empty ones included
    split_fractions: tuple[float, ...] | None  # None: the source's official partition
    source_layout: str
    num_skipped: int
    raw: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)  # the file as read

    @property
    def path(self) -> str:
        return manifest_path(self.data_dir)

    @property
    def present_splits(self) -> tuple[str, ...]:
        """The splits that hold examples, sorted."""
        return tuple(sorted(name for name, split in self.splits.items() if split.num_examples))

    @property
    def version(self) -> str:
        """A fingerprint of the whole dataset: every split's."""
        return _digest({name: split.fingerprint for name, split in sorted(self.splits.items())})

    def split(self, name: str) -> Split:
        """The split `name`; DatasetError listing the splits there are if it is absent or empty."""
        found = self.splits.get(name)
        if found is not None and found.num_examples:
            return found
        if self.split_fractions is None:
            fix = "the source's partition file assigns no images to it"
        else:
            fix = "or prepare the dataset again with split fractions that create it"
        raise DatasetError(
            f"split {name!r} is not in the dataset in {self.path}; it has "
            f"{list(self.present_splits)}. Choose one of those; {fix}",
            self.data_dir,
            reprepare=False,
        )

    def num_examples(self, split: str) -> int:
        return self.split(split).num_examples

    def has_split(self, split: str) -> bool:
        return split in self.present_splits

    def shard_paths(self, split: str) -> list[str]:
        """The shard files of a split, each checked to be a regular file of the recorded size.

        A stat per shard is cheap and catches missing, truncated or swapped shards (a FIFO,
        a device) before TensorFlow meets them half-way through an epoch.
        """
        paths = []
        for shard in self.split(split).shards:
            path = os.path.join(self.data_dir, shard.name)
            try:
                info = os.stat(path)
            except FileNotFoundError:
                problem = "is missing"
            except OSError as e:
                problem = f"cannot be read ({e.strerror})"
            else:
                if not stat.S_ISREG(info.st_mode):
                    problem = f"is {_file_kind(info.st_mode)}, not a regular file"
                elif info.st_size != shard.bytes:
                    problem = (
                        f"has {info.st_size} bytes, the manifest says {shard.bytes} (truncated "
                        "or overwritten)"
                    )
                else:
                    paths.append(path)
                    continue
            raise DatasetError(
                f"shard {path} of split {split!r} {problem}: prepare the dataset again",
                self.data_dir,
            )
        return paths

    def check_image_shape(self, shape: Sequence[int]) -> None:
        """DatasetError unless the images are `shape` (a model's), naming both."""
        if tuple(shape) != self.image_shape:
            raise DatasetError(
                f"{self.data_dir} holds {self.image_shape} images but the model takes "
                f"{tuple(shape)}: use the dataset the run was trained on",
                self.data_dir,
                reprepare=False,
            )

    @classmethod
    def read(cls, data_dir: str) -> Manifest:
        """Reads and checks `<data_dir>/dataset.json`; DatasetError saying what is wrong."""
        path = manifest_path(data_dir)
        if not os.path.isdir(data_dir):
            raise DatasetError(f"no dataset directory at {data_dir}: prepare one", data_dir)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise DatasetError(
                f"{data_dir} has no {MANIFEST_NAME}, so it is not a complete dataset (an "
                "interrupted preparation leaves none): prepare it again, overwriting it",
                data_dir,
            ) from None
        except OSError as e:
            raise DatasetError(f"cannot read {path} ({e.strerror})", data_dir) from None
        if not stat.S_ISREG(info.st_mode):
            raise DatasetError(f"{path} is not a regular file: prepare the dataset again", data_dir)
        if info.st_size > MAX_MANIFEST_BYTES:
            raise DatasetError(
                f"{path} has {info.st_size:,} bytes, more than a manifest of ours (at most "
                f"{MAX_MANIFEST_BYTES:,}); it was not read: prepare the dataset again",
                data_dir,
            )
        try:
            with open(path, "rb") as f:
                content = json.loads(f.read(MAX_MANIFEST_BYTES + 1))
        except (OSError, ValueError, RecursionError) as e:
            reason = getattr(e, "strerror", None) or str(e)[:200]
            raise DatasetError(
                f"cannot read {path} ({reason}): prepare the dataset again", data_dir
            ) from None
        return cls.from_dict(content, data_dir)

    @classmethod
    def from_dict(cls, content: Any, data_dir: str) -> Manifest:
        """The checked object of a parsed `dataset.json`; DatasetError naming the first bad key."""
        return _Checker(content, data_dir).manifest()


class _Checker:
    """Checks a parsed dataset.json key by key: each problem is one DatasetError naming it."""

    def __init__(self, content: Any, data_dir: str) -> None:
        self.content, self.data_dir = content, data_dir
        self.path = manifest_path(data_dir)

    def fail(self, key: str, problem: str) -> DatasetError:
        return DatasetError(
            f"{self.path}: {_short(key)} {problem}: prepare the dataset again", self.data_dir
        )

    def get(self, parent: Mapping, key: str, kind: type | tuple, where: str = "") -> Any:
        name = f"{where}.{key}" if where else key
        if key not in parent:
            raise self.fail(name, "is missing")
        value = parent[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(name, f"is {_short(value)}, not a whole number")
        if not isinstance(value, kind):
            raise self.fail(name, f"is {_short(value)}, not of the expected type")
        return value

    def count(self, parent: Mapping, key: str, where: str, low: int = 0) -> int:
        value = self.get(parent, key, int, where)
        if value < low:
            raise self.fail(f"{where}.{key}", f"is {value}, below {low}")
        return value

    def manifest(self) -> Manifest:
        content = self.content
        if not isinstance(content, dict):
            raise DatasetError(
                f"{self.path} holds a JSON {type(content).__name__}, not a manifest: prepare "
                "the dataset again",
                self.data_dir,
            )
        version = content.get("schema_version")
        if type(version) is not int or version != SCHEMA_VERSION:  # True and 1.0 equal 1
            raise DatasetError(
                f"{self.path} has schema version {_short(version)}, this code reads version "
                f"{SCHEMA_VERSION}: prepare the dataset again with this version",
                self.data_dir,
            )
        image = self.get(content, "image", dict)
        shape = tuple(self.count(image, key, "image", low=1) for key in ("height", "width"))
        channels = self.count(image, "channels", "image", low=1)
        if channels not in (1, 3, 4):
            raise self.fail("image.channels", f"is {channels}, not 1, 3 or 4")
        fmt = self.get(image, "format", str, "image")
        if fmt not in FORMATS:
            raise self.fail("image.format", f"is {_short(fmt)}, not one of {FORMATS}")
        compression = content.get("compression")
        if compression not in (None, "GZIP"):
            raise self.fail("compression", f"is {_short(compression)}, not null or 'GZIP'")
        names = content.get("attribute_names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self.fail("attribute_names", "is not a list of names")
        fractions = content.get("split_fractions")
        if fractions is not None and not (
            isinstance(fractions, list)
            and all(isinstance(f, (int, float)) and math.isfinite(f) for f in fractions)
        ):
            raise self.fail("split_fractions", "is neither null nor a list of numbers")
        skipped = content.get("skipped", [])
        if not isinstance(skipped, list):
            raise self.fail("skipped", "is not a list")
        source = content.get("source") or {}
        layout = source.get("layout", "") if isinstance(source, dict) else ""
        common = {  # what a split's fingerprint covers besides its shards
            "image": image,
            "crop": content.get("crop"),
            "resample": content.get("resample"),
        }
        splits = {}
        for name, entry in self.get(content, "splits", dict).items():
            splits[name] = self.split(name, entry, common, compression)
        return Manifest(
            data_dir=self.data_dir,
            image_shape=(*shape, channels),
            image_format=fmt,
            compression=compression,
            crop=content.get("crop"),
            resample=str(content.get("resample") or ""),
            attribute_names=tuple(names),
            splits=splits,
            split_fractions=tuple(fractions) if fractions is not None else None,
            source_layout=str(layout),
            num_skipped=len(skipped),
            raw=content,
        )

    def split(self, name: str, entry: Any, common: dict, compression: str | None) -> Split:
        where = f"splits.{name}"
        if not isinstance(entry, dict):
            raise self.fail(where, "is not an object")
        total = self.count(entry, "num_examples", where)
        shards, seen = [], set()
        for i, shard in enumerate(self.get(entry, "shards", list, where)):
            at = f"{where}.shards[{i}]"
            if not isinstance(shard, dict):
                raise self.fail(at, "is not an object")
            shard_name = self.get(shard, "name", str, at)
            if not _SHARD_NAME.fullmatch(shard_name) or ".." in shard_name:
                raise self.fail(
                    f"{at}.name",
                    f"is {_short(shard_name)}: a shard is a plain file name inside the "
                    "dataset folder (no separators, no '..', not hidden, not absolute)",
                )
            if shard_name in seen:
                raise self.fail(f"{at}.name", f"names {_short(shard_name)} a second time")
            seen.add(shard_name)
            count = self.count(shard, "num_examples", at)
            size = self.count(shard, "bytes", at)
            digest = self.get(shard, "sha256", str, at)
            ratio = MAX_DEFLATE_RATIO if compression else 1
            if count * RECORD_OVERHEAD_BYTES > size * ratio:
                raise self.fail(
                    f"{at}.num_examples",
                    f"is {count:,}, more records than {size:,} bytes can hold",
                )
            shards.append(Shard(shard_name, count, size, digest))
        counted = sum(shard.num_examples for shard in shards)
        if counted != total:
            raise self.fail(
                f"{where}.num_examples", f"is {total:,} but its shards hold {counted:,}"
            )
        content = {**common, "shards": [(s.name, s.sha256) for s in shards]}
        return Split(name, total, tuple(shards), _digest(content))


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, for a message."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "neither a file nor a folder"


def _short(value: Any, limit: int = 80) -> str:
    """repr of a value cut to `limit` characters: a hostile file's value is not echoed whole."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
