"""TFDS metadata beside prepared datasets: TensorFlow Datasets reads what our pipeline reads.

Each split is read through `tfds.builder_from_directory(...).as_dataset(split=...)` and
compared, example by example and in order, with `pipeline.dataset.examples`: pixels,
attributes, landmarks, identity, source id and index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cli_driver
import numpy as np
import pytest
import tensorflow as tf

from facevae.pipeline import dataset, prepare, schema, synthetic, tfds_metadata
from facevae.pipeline.sources import PrepareError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tfds = pytest.mark.skipif(
    not tfds_metadata.available(),
    reason=f"tensorflow-datasets is the optional tfds extra: {tfds_metadata.INSTALL}",
)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """12 synthetic faces in CelebA's official layout, with every label."""
    path = str(tmp_path_factory.mktemp("tfds") / "source")
    synthetic.write_source(path, 12, seed=1, workers=1, verbose=False)
    return path


def _prepare(src: str, out: str, **settings) -> schema.Manifest:
    settings = {"size": 16, "examples_per_shard": 5, "workers": 1, "verbose": False, **settings}
    return prepare.prepare(src, out, **settings)


def _ours(manifest: schema.Manifest, split: str) -> list[dict]:
    return list(dataset.examples(manifest, split).as_numpy_iterator())


def _theirs(manifest: schema.Manifest, split: str, **options) -> list[dict]:
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(manifest.data_dir)
    return [ex["image"] for ex in builder.as_dataset(split=split, **options).as_numpy_iterator()]


def _same_labels(manifest: schema.Manifest, ours: list[dict], theirs: list[dict]) -> None:
    """Every label of every example, in order; only the labels the source has are features."""
    assert len(theirs) == len(ours) > 0
    labels = ["source_id", "index"]
    labels += ["attributes"] if manifest.attribute_names else []
    labels += ["landmarks"] if manifest.raw["has_landmarks"] else []
    labels += ["identity"] if manifest.raw["has_identity"] else []
    for mine, read in zip(ours, theirs, strict=True):
        assert set(read) == {"encoded", *labels}
        for key in labels:
            np.testing.assert_array_equal(read[key], mine[key], err_msg=key)


@needs_tfds
def test_tfds_reads_every_example_of_a_jpeg_dataset_as_our_pipeline(tiny_manifest):
    """The conftest dataset (prepared with TFDS installed): every split, every example."""
    import tensorflow_datasets as tfds

    assert {*tfds_metadata.FILES} <= set(os.listdir(tiny_manifest.data_dir))
    assert tiny_manifest.image_format == "jpeg" and len(tiny_manifest.present_splits) == 3
    assert len(tiny_manifest.split("train").shards) == 3  # several shards, read in order
    # Ordered: TFDS reads shard after shard (interleaving them would mix the order).
    assert tfds.builder_from_directory(tiny_manifest.data_dir).info.disable_shuffling
    raw = {"image": {"encoded": tfds.decode.SkipDecoding()}}
    for split in tiny_manifest.present_splits:
        ours = _ours(tiny_manifest, split)
        theirs = _theirs(tiny_manifest, split)
        _same_labels(tiny_manifest, ours, theirs)
        # TFDS decodes our JPEG bytes with TensorFlow's default DCT ...
        encoded = _theirs(tiny_manifest, split, decoders=raw)
        for read, record in zip(theirs, encoded, strict=True):
            fast = tf.io.decode_jpeg(record["encoded"], channels=3).numpy()
            np.testing.assert_array_equal(read["encoded"], fast)
        # ... and as our pipeline does (INTEGER_ACCURATE) with jpeg_decoders: the same pixels.
        exact = _theirs(tiny_manifest, split, decoders=tfds_metadata.jpeg_decoders())
        _same_labels(tiny_manifest, ours, exact)
        for mine, read in zip(ours, exact, strict=True):
            assert read["encoded"].dtype == np.uint8
            np.testing.assert_array_equal(read["encoded"], mine["image"])


@needs_tfds
@pytest.mark.parametrize("fmt", ["png", "raw"])
def test_tfds_decodes_png_and_raw_images_exactly(source, tmp_path, fmt):
    manifest = _prepare(source, str(tmp_path / fmt), fmt=fmt)
    for split in manifest.present_splits:
        ours, theirs = _ours(manifest, split), _theirs(manifest, split)
        _same_labels(manifest, ours, theirs)
        for mine, read in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(read["encoded"], mine["image"])


@needs_tfds
def test_a_folder_source_has_only_images_and_ids(source, tmp_path):
    images = os.path.join(source, "img_align_celeba")  # any image folder: no labels
    manifest = _prepare(images, str(tmp_path / "folder"), split_fractions=(0.5, 0.25, 0.25))
    assert manifest.source_layout == "folder" and not manifest.attribute_names
    with open(os.path.join(manifest.data_dir, tfds_metadata.METADATA)) as f:
        assert json.load(f) == {"attribute_names": []}
    for split in manifest.present_splits:
        ours, theirs = _ours(manifest, split), _theirs(manifest, split)
        _same_labels(manifest, ours, theirs)  # encoded, source_id and index only


def _fingerprint(folder: str) -> dict[str, bytes]:
    result = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            result[name] = f.read()
    return result


def test_without_tfds_prepare_says_how_to_add_the_metadata_later(
    source, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(tfds_metadata, "available", lambda: False)
    out = str(tmp_path / "plain")
    manifest = _prepare(source, out, verbose=True)
    err = capsys.readouterr().err
    assert tfds_metadata.MISSING_EXTRA in err and "tools.tfds_metadata" in err
    assert not set(tfds_metadata.FILES) & set(os.listdir(out))
    with pytest.raises(tfds_metadata.TfdsMetadataError, match="not installed") as caught:
        tfds_metadata.write(manifest)
    assert caught.value.missing_extra
    monkeypatch.undo()
    if not tfds_metadata.available():
        return
    before = _fingerprint(out)
    paths = tfds_metadata.write(manifest)  # what tools.tfds_metadata does
    assert [os.path.basename(p) for p in paths] == list(tfds_metadata.FILES)
    after = _fingerprint(out)
    assert {name: after[name] for name in before} == before  # shards and dataset.json unchanged
    _same_labels(manifest, _ours(manifest, "train"), _theirs(manifest, "train"))
    # The files are part of the dataset: replacing it replaces them, with nothing refused.
    replaced = _prepare(source, out, fmt="png", overwrite=True)
    assert replaced.image_format == "png"
    with pytest.raises(PrepareError, match="`overwrite`"):
        _prepare(source, out)


@needs_tfds
def test_gzip_shards_get_no_metadata_and_one_line_why(source, tmp_path, capsys):
    manifest = _prepare(source, str(tmp_path / "gzip"), compression="GZIP", verbose=True)
    err = capsys.readouterr().err
    assert "no TFDS metadata written" in err and "GZIP-compressed" in err
    assert not set(tfds_metadata.FILES) & set(os.listdir(manifest.data_dir))
    with pytest.raises(tfds_metadata.TfdsMetadataError, match="again without compression"):
        tfds_metadata.write(manifest)


@needs_tfds
def test_missing_shard_is_named_and_nothing_is_written(source, tmp_path):
    manifest = _prepare(source, str(tmp_path / "broken"))
    for name in tfds_metadata.FILES:
        os.remove(os.path.join(manifest.data_dir, name))
    shard = manifest.split("train").shards[0].name
    os.remove(os.path.join(manifest.data_dir, shard))
    with pytest.raises(schema.DatasetError, match=f"{shard}.*is missing"):
        tfds_metadata.write(manifest)
    assert not set(tfds_metadata.FILES) & set(os.listdir(manifest.data_dir))


@needs_tfds
def test_command_line_writes_the_metadata_and_fails_in_one_line(source, tmp_path):
    manifest = _prepare(source, str(tmp_path / "cli"))
    for name in tfds_metadata.FILES:
        os.remove(os.path.join(manifest.data_dir, name))
    runs = {
        "ok": [f"--data_dir={manifest.data_dir}"],
        "nowhere": [f"--data_dir={tmp_path / 'nowhere'}"],
    }
    done = subprocess.run(
        [sys.executable, "-c", cli_driver.script("tools.tfds_metadata"), json.dumps(runs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reports = json.loads(done.stdout.splitlines()[-1])
    assert reports["ok"]["code"] == 0, reports["ok"]
    assert reports["ok"]["stdout"].startswith("wrote ")
    assert set(tfds_metadata.FILES) <= set(os.listdir(manifest.data_dir))
    _same_labels(manifest, _ours(manifest, "test"), _theirs(manifest, "test"))
    nowhere = reports["nowhere"]
    assert nowhere["code"] == 1 and "\n" not in nowhere["message"].strip()
    assert nowhere["message"].startswith("tfds_metadata: no dataset directory at ")
    assert "Traceback" not in nowhere["stderr"]
