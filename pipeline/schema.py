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
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

# TensorFlow is imported inside the functions that need it, so the constants here can be
# read by TF-free code (tools.make_synthetic, prepare_celeba's worker processes) quickly.

SCHEMA_VERSION = 1
MANIFEST_NAME = "dataset.json"

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

PREPARE_HINT = "python -m tools.prepare_celeba --src SRC --out {data_dir}"


class DatasetError(ValueError):
    """A prepared dataset is missing, incomplete or of another schema version."""


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


def file_sha256(path: str) -> str:
    """The shard checksum recorded in the manifest (hex sha256, read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(data_dir: str) -> str:
    return os.path.join(data_dir, MANIFEST_NAME)


def _read_umask() -> int:
    # os.umask can only be read by setting it: do that once, at import, before any threads.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def write_bytes_atomic(path: str, content: bytes) -> None:
    """Writes `content` to a temporary file beside `path`, then renames it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a shared dataset must be readable
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, content: Any) -> None:
    """Writes JSON atomically (write_bytes_atomic), indented, with a final newline."""
    write_bytes_atomic(path, (json.dumps(content, indent=2) + "\n").encode())


def write_manifest(data_dir: str, manifest: dict[str, Any]) -> str:
    """Writes `dataset.json` atomically, stamping the schema version; returns its path."""
    manifest = {"schema_version": SCHEMA_VERSION, **manifest}
    path = manifest_path(data_dir)
    write_json_atomic(path, manifest)
    return path


def read_manifest(data_dir: str) -> dict[str, Any]:
    """Reads and checks `dataset.json`; raises DatasetError saying what to run."""
    path = manifest_path(data_dir)
    if not os.path.isdir(data_dir):
        raise DatasetError(
            f"no dataset directory at {data_dir}: prepare one with "
            f"`{PREPARE_HINT.format(data_dir=data_dir)}` (or try `python train.py --demo`)"
        )
    if not os.path.isfile(path):
        raise DatasetError(
            f"{data_dir} has no {MANIFEST_NAME}, so it is not a complete dataset (an interrupted "
            f"run leaves none): run `{PREPARE_HINT.format(data_dir=data_dir)} --overwrite`"
        )
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        hint = PREPARE_HINT.format(data_dir=data_dir)
        raise DatasetError(f"cannot read {path} ({e}): re-run `{hint} --overwrite`") from e
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise DatasetError(
            f"{path} has schema version {version!r}, this code reads version {SCHEMA_VERSION}: "
            f"re-run `{PREPARE_HINT.format(data_dir=data_dir)} --overwrite` with this version"
        )
    return manifest


def split_info(manifest: dict[str, Any], split: str, data_dir: str = "") -> dict[str, Any]:
    """The manifest entry of one split; raises DatasetError listing the splits there are."""
    splits = manifest.get("splits", {})
    if split not in splits or not splits[split].get("num_examples"):
        present = sorted(name for name, info in splits.items() if info.get("num_examples"))
        where = f" in {manifest_path(data_dir)}" if data_dir else ""
        if manifest.get("split_fractions") is None:  # the source's official partition
            fix = "the source's partition file assigns no images to it"
        else:
            fix = (
                f"or re-run `{PREPARE_HINT.format(data_dir=data_dir or 'DIR')} "
                "--split_fractions TRAIN,VALIDATION,TEST --overwrite` to create it"
            )
        raise DatasetError(
            f"split {split!r} is not in the dataset{where}; it has {present}. "
            f"Choose one of those; {fix}"
        )
    return splits[split]
