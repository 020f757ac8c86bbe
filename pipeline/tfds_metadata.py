"""TensorFlow Datasets' metadata beside a prepared dataset's shards, so that TFDS loads it.

    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory("data/celeba96").as_dataset(split="train")
    # {"image": {"encoded": uint8 (H, W, C), "source_id": str, "index": int64,
    #            "attributes": int64 (A,), "landmarks": float32 (10,), "identity": int64}}

TFDS names a feature of a nested FeaturesDict by its path, joined with "/": the feature
`{"image": {"encoded": Image}}` reads the record key `image/encoded`, so the features below
read our records as they are (pipeline.schema's keys), with TFDS's own decoding. The shards
keep their names: every split records the template `{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}`
(`train-00000-of-00004.tfrecord`) and its shard lengths, taken from the manifest. The
dataset is marked ordered (`disable_shuffling`), so TFDS reads it in the manifest's order,
as `pipeline.dataset.examples` does; shuffling files in TFDS then needs
`read_config=tfds.ReadConfig(enable_ordering_guard=False)`.

What is written, beside dataset.json: dataset_info.json (splits, shard lengths, file
format), features.json (the features) and metadata.json (the attribute names, in the
order of the `attributes` vector). Nothing else changes: shard names, record keys and
dataset.json stay as they are.

Labels are in a record when the source has them (the manifest's attribute_names,
has_landmarks and has_identity say so for every record alike), and only those are features.
JPEG images: TFDS decodes with TensorFlow's default (fast) DCT, which differs from our
pipeline's INTEGER_ACCURATE decoding (bit-exact with PIL) by up to ~20 grey levels (mean ~1.3
on the synthetic faces); `jpeg_decoders()` makes TFDS decode as we do. PNG and raw images are
decoded identically.

`tensorflow-datasets` is an optional dependency (the `tfds` extra): without it, preparation
writes no TFDS metadata and says how to add it later (MISSING_EXTRA).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from typing import Any

from facevae.pipeline import files, schema

DATASET_INFO = "dataset_info.json"
FEATURES = "features.json"
METADATA = "metadata.json"
# The files written into the dataset folder; dataset_info.json, which TFDS looks for, last.
FILES = (FEATURES, METADATA, DATASET_INFO)
NAME = "facevae"  # the TFDS dataset name (TFDS's builder name; our shard names carry none)
FILENAME_TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}"  # schema.shard_name, as TFDS spells it
INSTALL = 'pip install -e ".[tfds]"'
MISSING_EXTRA = (
    "no TFDS metadata written: tensorflow-datasets is not installed; to load the dataset "
    f"with TFDS, install the tfds extra ({INSTALL}) and run tools.tfds_metadata on it"
)


class TfdsMetadataError(ValueError):
    """TFDS metadata cannot be written for this dataset, or TFDS is not installed; the
    message is one line naming the reason and the fix. As with schema.DatasetError,
    `reprepare` says the fix is to prepare the dataset again (a command line adds how)."""

    def __init__(
        self,
        message: str,
        data_dir: str | None = None,
        *,
        missing_extra: bool = False,
        reprepare: bool = False,
    ) -> None:
        super().__init__(message)
        self.data_dir = data_dir
        self.missing_extra = missing_extra
        self.reprepare = reprepare


def available() -> bool:
    """Whether tensorflow-datasets can be imported (the tfds extra is installed)."""
    return importlib.util.find_spec("tensorflow_datasets") is not None


def _tfds() -> Any:
    if not available():
        raise TfdsMetadataError(
            f"TFDS metadata needs tensorflow-datasets, which is not installed: {INSTALL}",
            missing_extra=True,
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # installed, but broken (a dependency missing or too new)
        raise TfdsMetadataError(
            f"tensorflow-datasets is installed but cannot be imported ({e}): reinstall the "
            f"tested version ({INSTALL})"
        ) from None
    return tfds


def check_supported(manifest: schema.Manifest) -> None:
    """TfdsMetadataError if TFDS cannot read this dataset's shards (GZIP-compressed)."""
    if manifest.compression:
        raise TfdsMetadataError(
            f"{manifest.data_dir} has {manifest.compression}-compressed shards, which TFDS "
            "does not read (its TFRecord reader takes uncompressed files): prepare the "
            "dataset again without compression to load it with TFDS",
            manifest.data_dir,
            reprepare=True,
        )


def features(manifest: schema.Manifest) -> Any:
    """The tfds.features.FeaturesDict that reads this dataset's records.

    Its one key, "image", holds the features named by the record keys below `image/`.
    """
    import numpy as np

    tfds = _tfds()
    shape = manifest.image_shape
    doc = tfds.features.Documentation
    if manifest.image_format == "raw":  # H * W * C bytes, row-major
        image = tfds.features.Tensor(
            shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
        )
    else:
        image = tfds.features.Image(shape=shape, encoding_format=manifest.image_format)
    fields: dict[str, Any] = {
        "encoded": image,
        "source_id": tfds.features.Text(doc="The image's file name in the source."),
        "index": tfds.features.Scalar(np.int64, doc="The image's position in the source."),
    }
    if manifest.attribute_names:
        fields["attributes"] = tfds.features.Tensor(
            shape=(len(manifest.attribute_names),),
            dtype=np.int64,
            doc=doc(desc="0 or 1 per attribute, in the order of metadata.json's attribute_names"),
        )
    if manifest.raw.get("has_landmarks"):
        fields["landmarks"] = tfds.features.Tensor(
            shape=(schema.NUM_LANDMARK_VALUES,),
            dtype=np.float32,
            doc=doc(desc="x, y of the eyes, the nose and the mouth corners, in image pixels"),
        )
    if manifest.raw.get("has_identity"):
        fields["identity"] = tfds.features.Scalar(np.int64, doc="The person's identity.")
    return tfds.features.FeaturesDict({"image": tfds.features.FeaturesDict(fields)})


def dataset_info(manifest: schema.Manifest) -> Any:
    """The tfds.core.DatasetInfo of a prepared dataset: its features, and every split that
    holds examples with its shard lengths."""
    tfds = _tfds()
    check_supported(manifest)
    root = tfds.core.Path(manifest.data_dir)
    template = tfds.core.ShardedFileTemplate(
        data_dir=root,
        template=FILENAME_TEMPLATE,
        dataset_name=NAME,
        filetype_suffix="tfrecord",
    )
    splits = []
    for name in manifest.present_splits:
        shards = manifest.split(name).shards
        splits.append(
            tfds.core.SplitInfo(
                name=name,
                shard_lengths=[shard.num_examples for shard in shards],
                num_bytes=sum(shard.bytes for shard in shards),
                filename_template=template,
            )
        )
    height, width, channels = manifest.image_shape
    identity = tfds.core.dataset_info.DatasetIdentity(
        name=NAME,
        version=tfds.core.Version(f"{schema.SCHEMA_VERSION}.0.0"),
        data_dir=manifest.data_dir,
        module_name="",
    )
    info = tfds.core.DatasetInfo(
        builder=identity,
        description=(
            f"Faces prepared by facevae ({manifest.source_layout or 'folder'} source layout): "
            f"{height}x{width}x{channels} {manifest.image_format} images in source order; "
            f"{schema.MANIFEST_NAME} beside the shards describes them"
        ),
        features=features(manifest),
        metadata=tfds.core.MetadataDict(attribute_names=list(manifest.attribute_names)),
        disable_shuffling=True,  # the records are in the manifest's order: read them so
    )
    info.set_file_format(tfds.core.FileFormat.TFRECORD)
    info.set_splits(tfds.core.SplitDict(splits))
    return info


def write(manifest: schema.Manifest) -> list[str]:
    """Writes FILES into the dataset folder (each whole or not at all); returns their paths.

    Checks first that every shard is there at its recorded size (DatasetError otherwise).
    TFDS writes the files into a scratch folder, from which they are put in place with
    pipeline.files, dataset_info.json last. Raises TfdsMetadataError when TFDS is not
    installed or cannot read the dataset, files.WriteError when a file cannot be written.
    """
    info = dataset_info(manifest)
    for name in manifest.present_splits:
        manifest.shard_paths(name)
    with tempfile.TemporaryDirectory(prefix="facevae-tfds-") as scratch:
        info.write_to_directory(scratch)
        written = set(os.listdir(scratch))
        unknown = sorted(written - set(FILES))
        if unknown:  # a TFDS version that writes more than we know would leave them foreign
            raise TfdsMetadataError(
                f"tensorflow-datasets wrote {unknown}, files this code does not know: "
                f"install the tested version ({INSTALL})",
                manifest.data_dir,
            )
        contents = {}
        for name in FILES:
            if name in written:
                with open(os.path.join(scratch, name), "rb") as f:
                    contents[name] = f.read()
    return [
        files.write_bytes(os.path.join(manifest.data_dir, name), content)
        for name, content in contents.items()
    ]


def write_if_available(manifest: schema.Manifest, say: Callable[[str], None]) -> bool:
    """`write`, for preparation: when TFDS is missing or cannot read the dataset, says so in
    one line (how to add the metadata later) and returns False instead of raising."""
    if manifest.compression:  # said without the folder's name: preparation's is temporary
        say(
            f"no TFDS metadata written: TFDS does not read {manifest.compression}-compressed "
            "shards; prepare the dataset without compression to load it with TFDS"
        )
        return False
    try:
        write(manifest)
    except TfdsMetadataError as e:
        say(MISSING_EXTRA if e.missing_extra else f"no TFDS metadata written: {e}")
        return False
    return True


def jpeg_decoders() -> dict[str, Any]:
    """`decoders` for TFDS's as_dataset that decode JPEG images as our pipeline does
    (INTEGER_ACCURATE DCT, bit-exact with PIL) instead of TensorFlow's default:

        builder.as_dataset(split="train", decoders=tfds_metadata.jpeg_decoders())
    """
    import tensorflow as tf

    tfds = _tfds()

    @tfds.decode.make_decoder()
    def accurate_jpeg(encoded: tf.Tensor, feature: Any) -> tf.Tensor:
        image = tf.io.decode_jpeg(
            encoded, channels=feature.shape[-1], dct_method="INTEGER_ACCURATE"
        )
        return tf.ensure_shape(image, feature.shape)

    return {"image": {"encoded": accurate_jpeg()}}
