"""Tests of pipeline/dataset.py on tiny datasets written here with schema.encode_example.

Every image carries its own identity: the red channel is the example's index
(lossless formats), green is 255 when attribute 0 is set, and blue marks the left
half, so order, completeness, labels and flips can all be read back from pixels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import traceback
import zlib

import corrupt
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facevae.model.console import one_line
from facevae.pipeline import dataset, schema

M = schema.Manifest.read  # each test reads the manifest of the folder it was given

SIZE = 8
NAMES = ["Bit0", "Bit1", "Third"]
# Uneven shards so shard and batch boundaries fall in different places.
LAYOUTS = {
    "png": {"train": [17, 12, 8], "validation": [5]},
    "jpeg": {"train": [9, 9, 4, 1]},
    "raw": {"train": [21]},  # one shard: two input pipelines must split it by example
}


def _attributes(index: int) -> list[int]:
    return [index & 1, (index >> 1) & 1, int(index % 3 == 0)]


def _pixels(index: int) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[..., 0] = index % 256  # the bad-record datasets hold more than 256
    image[..., 1] = 255 * _attributes(index)[0]
    image[:, : SIZE // 2, 2] = 255  # left half: shows whether the image was flipped
    return image


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    if fmt == "raw":
        return pixels.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG" if fmt == "jpeg" else "PNG", quality=95)
    return buffer.getvalue()


def _write_dataset(
    data_dir: str,
    fmt: str,
    layout: dict[str, list[int]],
    *,
    compression: str | None = None,
    with_attributes: bool = True,
    replaced: dict[tuple[str, int, int], bytes] | None = None,
) -> str:
    """`replaced` maps (split, shard, record in the shard) to the `image/encoded` bytes
    written there instead of the example's image (a damaged or hostile record)."""
    replaced = replaced or {}
    os.makedirs(data_dir)
    splits, index = {}, 0
    for split, sizes in layout.items():
        shards = []
        for i, count in enumerate(sizes):
            name = schema.shard_name(split, i, len(sizes), compression)
            path = os.path.join(data_dir, name)
            with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression or "")) as writer:
                for record in range(count):
                    encoded = replaced.get((split, i, record))
                    if encoded is None:
                        encoded = _encode(_pixels(index), fmt)
                    writer.write(
                        schema.encode_example(
                            encoded,
                            fmt=fmt,
                            height=SIZE,
                            width=SIZE,
                            channels=3,
                            source_id=f"{index:06d}.jpg",
                            index=index,
                            attributes=_attributes(index) if with_attributes else None,
                            identity=index % 4,
                        )
                    )
                    index += 1
            with open(path, "rb") as f:
                content = f.read()
            shards.append(
                {
                    "name": name,
                    "num_examples": count,
                    "bytes": len(content),
                    "sha256": hashlib.sha256(content).hexdigest(),
                }
            )
        splits[split] = {"num_examples": sum(sizes), "shards": shards}
    schema.write_manifest(
        data_dir,
        {
            "image": {"height": SIZE, "width": SIZE, "channels": 3, "format": fmt, "quality": 95},
            "crop": "none",
            "resample": "lanczos",
            "compression": compression,
            "source": {"layout": "folder", "path": "fixture", "archive": False},
            "attribute_names": NAMES if with_attributes else [],
            "has_landmarks": False,
            "has_identity": True,
            "seed": 0,
            "split_fractions": None,
            "splits": splits,
            "skipped": [],
        },
    )
    return data_dir


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("datasets")
    dirs = {fmt: _write_dataset(str(root / fmt), fmt, layout) for fmt, layout in LAYOUTS.items()}
    dirs["gzip"] = _write_dataset(str(root / "gzip"), "png", {"train": [7, 6]}, compression="GZIP")
    dirs["unlabelled"] = _write_dataset(
        str(root / "unlabelled"), "png", {"train": [4]}, with_attributes=False
    )
    return dirs


def _split_size(fmt: str, split: str = "train") -> int:
    return sum(LAYOUTS[fmt][split])


def _indices(images: tf.Tensor | np.ndarray) -> list[int]:
    """The example index each (lossless) image was written with."""
    return [round(float(v) * 255) for v in np.asarray(images)[:, 0, 0, 0]]


def _epoch(ds: tf.data.Dataset) -> list[int]:
    return [i for batch in ds for i in _indices(batch[0] if isinstance(batch, tuple) else batch)]


# --------------------------------------------------------------------------- shapes and order


@pytest.mark.parametrize("name", ["png", "jpeg", "raw", "gzip"])
def test_batches_are_float_images_in_unit_range(datasets: dict[str, str], name: str) -> None:
    ds = dataset.load(M(datasets[name]), "train", 4, training=False, cache="none")
    batches = list(ds)
    assert ds.element_spec.dtype == tf.float32
    assert all(b.shape[1:] == (SIZE, SIZE, 3) for b in batches)
    assert all(b.shape[0] == 4 for b in batches[:-1])
    assert sum(b.shape[0] for b in batches) == M(datasets[name]).num_examples("train")
    values = np.concatenate([b.numpy() for b in batches])
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert values.max() == 1.0  # 255 maps to exactly 1
    if name != "jpeg":  # lossless: exactly the written pixels
        expected = np.stack([_pixels(i) for i in _indices(values)])
        np.testing.assert_array_equal(np.round(values * 255).astype(np.uint8), expected)


@pytest.mark.parametrize("batch_size", [1, 5, 16, 64])
@pytest.mark.parametrize("cache", ["none", "memory"])
def test_evaluation_sees_every_example_once_keeping_the_last_batch(
    datasets: dict[str, str], batch_size: int, cache: str
) -> None:
    ds = dataset.load(M(datasets["png"]), "train", batch_size, training=False, cache=cache)
    sizes = [int(b.shape[0]) for b in ds]
    assert sum(sizes) == _split_size("png")
    assert sorted(_epoch(ds)) == list(range(_split_size("png")))


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_training_epoch_is_exactly_once_and_drops_partial_batch(
    datasets: dict[str, str], cache: str
) -> None:
    n = _split_size("png")
    ds = dataset.load(M(datasets["png"]), "train", 5, training=True, cache=cache, repeat=False)
    seen = _epoch(ds)
    assert len(seen) == n // 5 * 5
    assert len(set(seen)) == len(seen)
    kept = dataset.load(
        M(datasets["png"]),
        "train",
        5,
        training=True,
        cache=cache,
        repeat=False,
        drop_remainder=False,
    )
    assert sorted(_epoch(kept)) == list(range(n))


def test_training_repeats_each_example_once_per_epoch(datasets: dict[str, str]) -> None:
    n = _split_size("png")
    ds = dataset.load(M(datasets["png"]), "train", 4, training=True, cache="none", seed=1)
    seen = [i for batch in ds.take(-(-3 * n // 4)) for i in _indices(batch)]  # >= 3 epochs
    for epoch in range(3):
        assert sorted(seen[epoch * n : (epoch + 1) * n]) == list(range(n))


def test_validation_split_is_separate(datasets: dict[str, str]) -> None:
    ds = dataset.load(M(datasets["png"]), "validation", 2, training=False)
    assert sorted(_epoch(ds)) == list(range(_split_size("png"), _split_size("png") + 5))


def test_evaluation_order_is_deterministic(datasets: dict[str, str]) -> None:
    first = dataset.load(M(datasets["png"]), "train", 3, training=False, cache="none")
    second = dataset.load(M(datasets["png"]), "train", 7, training=False, cache="memory")
    assert _epoch(first) == _epoch(first) == _epoch(second)


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_training_reshuffles_every_epoch_reproducibly(datasets: dict[str, str], cache: str) -> None:
    n = _split_size("png")

    def two_epochs(seed: int) -> tuple[list[int], list[int]]:
        # The stream of passes, batched across their boundaries: its first 2n examples.
        ds = dataset.load(M(datasets["png"]), "train", 4, training=True, cache=cache, seed=seed)
        seen = [i for batch in ds.take(-(-2 * n // 4)) for i in _indices(batch)]
        return seen[:n], seen[n : 2 * n]

    first, second = two_epochs(seed=3)
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != second
    assert two_epochs(seed=3) == (first, second)
    assert two_epochs(seed=4) != (first, second)


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
@pytest.mark.parametrize(("seed", "flip"), [(0, True), (7, False)])  # seed 0: no default
def test_a_stream_stopped_three_times_and_restarted_reads_the_uninterrupted_one(
    datasets: dict[str, str], cache: str, flip: bool, seed: int, tmp_path
) -> None:
    """The resume contract: from start_batch k the batches equal those of a stream read
    from its start, across pass boundaries, with every cache mode and with flips; so a run
    stopped at three steps and resumed reads every example exactly once per pass."""
    mode = f"disk:{tmp_path / 'cache'}" if cache == "disk" else cache
    n = _split_size("png")

    def stream(start: int, count: int) -> list[np.ndarray]:
        ds = dataset.load(M(datasets["png"]), "train", 4, training=True, cache=mode,
                          seed=seed, flip=flip, shuffle_buffer=16, start_batch=start)  # fmt: skip
        return [batch.numpy() for batch in ds.take(count)]

    whole = stream(0, 30)  # 120 examples: more than three passes of 37
    again = stream(0, 30)
    stops = sorted(np.random.default_rng(seed).choice(np.arange(1, 30), 3, replace=False))
    pieces = []
    for start, end in zip([0, *stops], [*stops, 30], strict=True):
        pieces += stream(start, end - start)
    for a, b, c in zip(pieces, whole, again, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, c)
    if not flip:  # the pixels say which example each image is: every one once per pass
        seen = [i for batch in whole for i in _indices(batch)]
        for p in range(3):
            assert sorted(seen[p * n : (p + 1) * n]) == list(range(n))


# --------------------------------------------------------------------------- distribution


@pytest.mark.parametrize("name", ["png", "raw"])  # 3 shards: by shard; 1 shard: by example
@pytest.mark.parametrize("training", [False, True])
def test_two_input_pipelines_read_disjoint_parts_covering_the_split(
    datasets: dict[str, str], name: str, training: bool
) -> None:
    parts = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        ds = dataset.load(
            M(datasets[name]),
            "train",
            6,
            training=training,
            cache="none",
            repeat=False,
            drop_remainder=False,
            input_context=context,
        )
        assert all(b.shape[0] <= 3 for b in ds)  # the per-replica share of the global batch
        parts.append(_epoch(ds))
    assert parts[0] and parts[1]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(_split_size(name)))


# --------------------------------------------------------------------------- caches


def test_cache_modes_give_the_same_examples(datasets: dict[str, str], tmp_path) -> None:
    data_dir = datasets["png"]
    expected = list(range(_split_size("png")))
    for cache in ["none", "memory", "auto", f"disk:{tmp_path / 'cache'}"]:
        ds = dataset.load(M(data_dir), "train", 4, training=True, cache=cache, repeat=False)
        ds_kept = dataset.load(
            M(data_dir), "train", 4, training=False, cache=cache, drop_remainder=False
        )
        assert len(_epoch(ds)) == len(expected) // 4 * 4
        assert sorted(_epoch(ds_kept)) == expected, cache


def _cache_files(folder) -> dict[str, tuple[int, int]]:
    """name -> (mtime in ns, size) of every file in a disk cache folder."""
    return {
        entry.name: (entry.stat().st_mtime_ns, entry.stat().st_size) for entry in os.scandir(folder)
    }


def test_disk_cache_is_split_specific_and_reused(datasets: dict[str, str], tmp_path) -> None:
    cache = f"disk:{tmp_path / 'cache'}"
    train = dataset.load(M(datasets["png"]), "train", 4, training=False, cache=cache)
    first = _epoch(train)
    written = _cache_files(tmp_path / "cache")
    assert written and all(name.startswith("train-") for name in written)
    again = dataset.load(M(datasets["png"]), "train", 4, training=False, cache=cache)
    assert _epoch(again) == first
    assert _cache_files(tmp_path / "cache") == written  # reused, not rewritten
    validation = dataset.load(M(datasets["png"]), "validation", 4, training=False, cache=cache)
    assert len(_epoch(validation)) == 5
    labelled = dataset.load(
        M(datasets["png"]), "train", 4, training=False, cache=cache, with_labels=True
    )
    assert sorted(_epoch(labelled)) == sorted(first)


@pytest.mark.parametrize("seed", [None, 5])
def test_disk_cache_filled_in_training_keeps_the_evaluation_order(
    datasets: dict[str, str], tmp_path, seed: int | None
) -> None:
    expected = _epoch(dataset.load(M(datasets["png"]), "train", 4, training=False, cache="none"))
    cache = f"disk:{tmp_path / 'cache'}"
    training = dataset.load(
        M(datasets["png"]), "train", 4, training=True, cache=cache, seed=seed, repeat=False
    )
    seen = _epoch(training)  # fills the cache
    assert seen != sorted(seen)  # and is still shuffled: after the cache
    written = _cache_files(tmp_path / "cache")
    evaluation = dataset.load(M(datasets["png"]), "train", 4, training=False, cache=cache)
    assert _epoch(evaluation) == expected
    assert _cache_files(tmp_path / "cache") == written  # read the training run's cache


def test_resolve_cache(datasets: dict[str, str]) -> None:
    data_dir = datasets["png"]
    assert dataset.resolve_cache("auto", M(data_dir), "train") == "memory"  # a few KB
    for mode in ["memory", "none", "disk:/tmp/x"]:
        assert dataset.resolve_cache(mode, M(data_dir), "train") == mode
    for bad in ["disk:", "ram", ""]:
        with pytest.raises(ValueError, match="cache="):
            dataset.resolve_cache(bad, M(data_dir), "train")


def _no_memory_figures(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Makes this look like macOS: os.sysconf rejects the name and there is no /proc."""

    def sysconf(name: str) -> int:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(dataset.os, "sysconf", sysconf)
    for name in ("_MEMINFO", "_CGROUP_MAX", "_CGROUP_CURRENT"):
        monkeypatch.setattr(dataset, name, str(tmp_path / "absent" / name))


def test_auto_cache_without_memory_figures_is_none(
    datasets: dict[str, str], tmp_path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    _no_memory_figures(monkeypatch, tmp_path)
    caplog.set_level(logging.INFO, logger="absl")
    assert dataset._available_memory() is None
    assert dataset.resolve_cache("auto", M(datasets["png"]), "train") == "none"
    assert "cannot be measured" in caplog.text
    ds = dataset.load(M(datasets["png"]), "train", 4, training=False)  # the default cache="auto"
    assert sorted(_epoch(ds)) == list(range(_split_size("png")))


def test_available_memory_sources(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_memory_figures(monkeypatch, tmp_path)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000 kB\nMemAvailable:  4000 kB\n")
    monkeypatch.setattr(dataset, "_MEMINFO", str(meminfo))
    assert dataset._available_memory() == 4000 * 1024
    (tmp_path / "max").write_text("3000000\n")
    (tmp_path / "current").write_text("1000000\n")
    monkeypatch.setattr(dataset, "_CGROUP_MAX", str(tmp_path / "max"))
    monkeypatch.setattr(dataset, "_CGROUP_CURRENT", str(tmp_path / "current"))
    assert dataset._available_memory() == 2_000_000  # the cgroup leaves less than the host
    monkeypatch.setattr(dataset, "_MEMINFO", str(tmp_path / "absent"))
    assert dataset._available_memory() == 2_000_000  # the cgroup alone is enough


# --------------------------------------------------------------------------- labels and flips


@pytest.mark.parametrize("name", ["png", "jpeg"])
def test_labels_line_up_with_images(datasets: dict[str, str], name: str) -> None:
    ds = dataset.load(
        M(datasets[name]), "train", 4, training=True, cache="memory", with_labels=True, flip=True
    )
    images, labels = next(iter(ds))
    assert labels.dtype == tf.float32 and labels.shape == (4, len(NAMES))
    for images, labels in ds.take(10):
        green = images[:, 0, 0, 1].numpy() > 0.5  # attribute 0 painted into the image
        np.testing.assert_array_equal(green, labels[:, 0].numpy() == 1.0)
        if name == "png":
            expected = [_attributes(i) for i in _indices(images)]
            np.testing.assert_array_equal(labels.numpy(), np.array(expected, np.float32))


def test_flip_only_in_training(datasets: dict[str, str]) -> None:
    def flipped(training: bool) -> np.ndarray:
        ds = dataset.load(
            M(datasets["png"]), "train", 8, training=training, flip=True, repeat=False, seed=0
        )
        images = np.concatenate([b.numpy() for b in ds])
        return images[:, 0, 0, 2] < images[:, 0, -1, 2]  # the blue half moved to the right

    assert flipped(training=False).sum() == 0
    in_training = flipped(training=True)
    assert 0 < in_training.sum() < len(in_training)


# --------------------------------------------------------------------------- examples and facts


def test_examples_fields_in_index_order(datasets: dict[str, str]) -> None:
    items = list(dataset.examples(M(datasets["png"]), "train"))
    assert [int(e["index"]) for e in items] == list(range(_split_size("png")))
    first = items[5]
    assert first["image"].dtype == tf.uint8
    np.testing.assert_array_equal(first["image"].numpy(), _pixels(5))
    assert first["source_id"].numpy() == b"000005.jpg"
    assert first["attributes"].dtype == tf.int64
    assert first["attributes"].numpy().tolist() == _attributes(5)
    assert int(first["identity"]) == 1
    assert first["landmarks"].shape == (schema.NUM_LANDMARK_VALUES,)
    assert "attributes" not in next(iter(dataset.examples(M(datasets["unlabelled"]), "train")))


def test_jpeg_decodes_like_pil(datasets: dict[str, str]) -> None:
    for item in dataset.examples(M(datasets["jpeg"]), "train").take(3):
        encoded = _encode(_pixels(int(item["index"])), "jpeg")
        expected = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
        np.testing.assert_array_equal(item["image"].numpy(), expected)


def test_manifest_facts(datasets: dict[str, str]) -> None:
    assert M(datasets["png"]).num_examples("train") == _split_size("png")
    assert M(datasets["png"]).num_examples("validation") == 5
    assert list(M(datasets["png"]).attribute_names) == NAMES
    assert list(M(datasets["unlabelled"]).attribute_names) == []
    assert M(datasets["jpeg"]).image_shape == (SIZE, SIZE, 3)


# --------------------------------------------------------------------------- errors


def _copy(datasets: dict[str, str], tmp_path) -> str:
    return shutil.copytree(datasets["png"], tmp_path / "copy")


def test_missing_directory(tmp_path) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(schema.DatasetError, match=r"nowhere") as caught:
        dataset.load(M(missing), "train", 4, training=True)
    assert "prepare_celeba" in one_line(caught.value)  # the command line says how


def test_missing_split(datasets: dict[str, str]) -> None:
    with pytest.raises(schema.DatasetError, match=r"'test'.*\['train', 'validation'\]"):
        dataset.load(M(datasets["png"]), "test", 4, training=False)


def test_missing_shard(datasets: dict[str, str], tmp_path) -> None:
    data_dir = _copy(datasets, tmp_path)
    os.remove(os.path.join(data_dir, "train-00001-of-00003.tfrecord"))
    with pytest.raises(schema.DatasetError, match=r"train-00001-of-00003.*missing") as caught:
        dataset.load(M(data_dir), "train", 4, training=True)
    assert "--overwrite" in one_line(caught.value)
    with pytest.raises(schema.DatasetError, match=r"train-00001-of-00003.*missing"):
        dataset.verify(M(data_dir))


def test_truncated_shard(datasets: dict[str, str], tmp_path) -> None:
    data_dir = _copy(datasets, tmp_path)
    path = os.path.join(data_dir, "train-00002-of-00003.tfrecord")
    os.truncate(path, os.path.getsize(path) - 10)
    with pytest.raises(schema.DatasetError, match=r"train-00002-of-00003.*truncated") as caught:
        dataset.load(M(data_dir), "train", 4, training=False)
    assert "prepare_celeba" in one_line(caught.value)
    with pytest.raises(schema.DatasetError, match="train-00002-of-00003"):
        dataset.examples(M(data_dir), "train")


def test_corrupt_shard(datasets: dict[str, str], tmp_path) -> None:
    data_dir = _copy(datasets, tmp_path)
    dataset.verify(M(data_dir))
    path = os.path.join(data_dir, "train-00000-of-00003.tfrecord")
    corrupt.flip_a_byte(path)
    with pytest.raises(schema.DatasetError, match=r"train-00000-of-00003.*sha256") as caught:
        dataset.verify(M(data_dir))
    assert "--overwrite" in one_line(caught.value)
    ds = dataset.load(M(data_dir), "train", 4, training=False)
    with pytest.raises(tf.errors.DataLossError) as caught:  # TensorFlow's CRC check stops it
        _epoch(ds)
    explained = dataset.explain_data_loss(M(data_dir), caught.value)
    assert isinstance(explained, schema.DatasetError)
    assert "train-00000-of-00003" in str(explained) and "--overwrite" in one_line(explained)


@pytest.mark.parametrize("reader", ["load", "examples"])
def test_corrupt_validation_shard_is_named_by_explain_corrupt_shards(
    datasets: dict[str, str], tmp_path, reader: str
) -> None:
    data_dir = str(_copy(datasets, tmp_path))
    corrupt.flip_a_byte(os.path.join(data_dir, "validation-00000-of-00001.tfrecord"))
    if reader == "load":
        ds = dataset.load(M(data_dir), "validation", 2, training=False)
    else:
        ds = dataset.examples(M(data_dir), "validation")
    with pytest.raises(schema.DatasetError) as caught, dataset.explain_corrupt_shards(M(data_dir)):
        list(ds)
    message = one_line(caught.value)
    assert "validation-00000-of-00001.tfrecord" in message and "--overwrite" in message
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, tf.errors.DataLossError)


def test_explain_corrupt_shards_leaves_other_errors_and_results_alone(
    datasets: dict[str, str],
) -> None:
    with dataset.explain_corrupt_shards(M(datasets["png"])):
        count = sum(
            len(batch) for batch in dataset.load(M(datasets["png"]), "train", 8, training=False)
        )
    assert count == _split_size("png")
    with pytest.raises(KeyError), dataset.explain_corrupt_shards(M(datasets["png"])):
        raise KeyError("not a data loss")


def test_explain_data_loss_when_every_shard_matches(datasets: dict[str, str]) -> None:
    error = tf.errors.DataLossError(None, None, "corrupted record at 12")
    explained = dataset.explain_data_loss(M(datasets["png"]), error)
    assert isinstance(explained, schema.DatasetError)
    assert "corrupted record at 12" in str(explained)
    assert datasets["png"] in str(explained) and "prepare_celeba" in one_line(explained)


def test_labels_need_attributes(datasets: dict[str, str]) -> None:
    with pytest.raises(schema.DatasetError, match=r"with_labels.*attribute"):
        dataset.load(M(datasets["unlabelled"]), "train", 2, training=False, with_labels=True)


def test_bad_batch_size(datasets: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        dataset.load(M(datasets["png"]), "train", 0, training=False)


# --------------------------------------------------------------------------- hostile images

BOMB_SIDE = 20_000  # 1.2 GB decoded (RGB), a few hundred bytes encoded
BOMB_LAYOUT = {"train": [150, 150], "validation": [5]}
# Where the bad record sits: train's is read after the first 256-record decode chunk (the
# two shards are interleaved, so it is about the 281st record read; the 291st by
# examples), not by a check at start-up.
BOMB_AT = {"train": (1, 140), "validation": (0, 3)}


def _jpeg_claiming(height: int, width: int) -> bytes:
    """A tiny valid JPEG whose frame header (SOF0) says height x width: the bytes of an
    8x8 image, never a real image of that size."""
    data = bytearray(_encode(_pixels(0), "jpeg"))
    assert data[:2] == b"\xff\xd8"
    pos = 2
    while data[pos + 1] != 0xC0:  # walk the segments (marker, 2-byte length) to SOF0
        assert data[pos] == 0xFF
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    # FF C0, length (2), precision (1), then height and width (2 bytes each, big-endian)
    data[pos + 5 : pos + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _png_claiming(height: int, width: int) -> bytes:
    """A tiny PNG whose IHDR says width x height, its checksum recomputed to match."""
    data = bytearray(_encode(_pixels(0), "png"))
    assert data[12:16] == b"IHDR"
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # over type and data
    return bytes(data)


# kind -> (the dataset's format, the bad record's image/encoded, what the message says)
BAD_RECORDS = {
    "jpeg-bomb": ("jpeg", _jpeg_claiming(BOMB_SIDE, BOMB_SIDE), "a 20000x20000 image"),
    "png-bomb": ("png", _png_claiming(BOMB_SIDE, BOMB_SIDE), "a 20000x20000 image"),
    "jpeg-not-an-image": ("jpeg", b"not an image at all", "no jpeg image"),
    "png-not-an-image": ("png", b"\x00" * 40, "no png image"),
    "raw-wrong-length": ("raw", bytes(SIZE * SIZE * 3 - 1), "no raw image"),
}


def test_bomb_headers_say_what_they_claim() -> None:
    """The hostile records are what they pretend: PIL reads their headers' size (and
    refuses them as decompression bombs), TensorFlow the JPEG's."""
    for encoded in (_jpeg_claiming(BOMB_SIDE, BOMB_SIDE), _png_claiming(BOMB_SIDE, BOMB_SIDE)):
        assert len(encoded) < 2000
        with pytest.raises(Image.DecompressionBombError, match=f"{BOMB_SIDE**2} pixels"):
            Image.open(io.BytesIO(encoded))  # reads the header only
    shape = tf.image.extract_jpeg_shape(_jpeg_claiming(BOMB_SIDE, BOMB_SIDE))
    assert shape.numpy().tolist() == [BOMB_SIDE, BOMB_SIDE, 3]


@pytest.fixture(scope="module")
def bad_datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """kind -> a dataset with one bad record in train (late) and one in validation."""
    root = tmp_path_factory.mktemp("bad")
    dirs = {}
    for kind, (fmt, encoded, _) in BAD_RECORDS.items():
        replaced = {(split, *at): encoded for split, at in BOMB_AT.items()}
        dirs[kind] = _write_dataset(str(root / kind), fmt, BOMB_LAYOUT, replaced=replaced)
    return dirs


def _read_all(manifest: schema.Manifest, split: str, reader: str) -> None:
    """Reads a split to its end (two passes of a training stream) with one of the readers."""
    n = manifest.num_examples(split)
    if reader == "examples":
        ds = dataset.examples(manifest, split)
    elif reader.startswith("training"):
        cache = reader.split("-")[1]
        ds = dataset.load(manifest, split, 8, training=True, cache=cache, seed=0)
        ds = ds.take(2 * n // 8 + 2)  # the stream repeats: two passes hold every record
    else:
        cache = reader.split("-")[1]
        ds = dataset.load(manifest, split, 8, training=False, cache=cache)
    for _ in ds:
        pass


READERS = ["training-none", "training-memory", "evaluation-none", "evaluation-memory", "examples"]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.parametrize("kind", list(BAD_RECORDS))
def test_a_bad_image_record_is_named_not_decoded(
    bad_datasets: dict[str, str], kind: str, split: str, reader: str
) -> None:
    manifest = M(bad_datasets[kind])
    shard, record = BOMB_AT[split]
    name = manifest.split(split).shards[shard].name
    with pytest.raises(schema.DatasetError) as caught, dataset.explain_corrupt_shards(manifest):
        _read_all(manifest, split, reader)
    message = str(caught.value)
    path = os.path.join(manifest.data_dir, name)
    assert f"record {record} of {path} holds {BAD_RECORDS[kind][2]}" in message, message
    assert manifest.path in message and "\n" not in message
    assert caught.value.reprepare and caught.value.data_dir == manifest.data_dir
    command_line = one_line(caught.value)
    assert "tools.prepare_celeba" in command_line and "--overwrite" in command_line
    assert "\n" not in command_line
    _forget_frames(caught.value)


def _forget_frames(error: BaseException | None) -> None:
    """Clears the locals of the frames in an error's tracebacks (its cause's and context's
    too): a caught error otherwise keeps the datasets and iterators of the failed read
    alive in a reference cycle, and collecting fifty of those at once took Python's
    garbage collector over a minute."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def test_the_chunks_before_a_bad_record_are_read(bad_datasets: dict[str, str]) -> None:
    """The check stops the reader at the decode chunk holding the bad record, not before:
    examples yields every record of the chunks ahead of it, and nothing of its own chunk."""

    def read(split: str) -> list[int]:
        seen = []
        with pytest.raises(schema.DatasetError) as caught, dataset.explain_corrupt_shards(manifest):
            for item in dataset.examples(manifest, split):
                seen.append(int(item["index"]))
        _forget_frames(caught.value)
        return seen

    manifest = M(bad_datasets["png-bomb"])
    assert read("validation") == []  # one chunk holds the whole split
    assert read("train") == list(range(dataset._DECODE_CHUNK))  # the bad one is the 291st


_PEAK_MEMORY_READER = """
import resource, sys
import tensorflow as tf
from facevae.pipeline import dataset, schema
if sys.argv[1] == "unchecked":  # what reading was without the header check
    dataset._header_sizes = lambda fmt, encoded, shape: tf.tile(
        tf.constant([shape[:2]], tf.int64), [tf.shape(encoded)[0], 1])
for data_dir in sys.argv[2:]:
    manifest = schema.Manifest.read(data_dir)
    for reader in ("training-none", "training-memory", "examples"):
        try:
            with dataset.explain_corrupt_shards(manifest):
                if reader == "examples":
                    ds = dataset.examples(manifest, "train")
                else:
                    ds = dataset.load(manifest, "train", 64, training=True, seed=0,
                                      cache=reader.split("-")[1], repeat=False)
                for _ in ds:
                    pass
            outcome = "read"
        except Exception as e:
            outcome = "refused " + type(e).__name__ + " " + " ".join(str(e).split())[:200]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(data_dir.rsplit("/", 1)[-1], reader, "peak_mb", peak, outcome, flush=True)
"""


BOMBS_AT = range(5, 105, 10)  # ten records of one 120-record shard


def _peak_memory(data_dirs: list[str], unchecked: bool = False) -> list[tuple[str, int, str]]:
    """(dataset reader, peak MB so far, outcome) after each read, in one fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    argv = [sys.executable, "-c", _PEAK_MEMORY_READER, "unchecked" if unchecked else "checked"]
    result = subprocess.run(argv + data_dirs, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split(" ", 4) for line in result.stdout.splitlines() if "peak_mb" in line]
    return [(f"{name} {reader}", int(peak), outcome) for name, reader, _, peak, outcome in rows]


@pytest.fixture(scope="module")
def bomb_datasets(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A clean JPEG and PNG dataset (the baseline), then datasets with ten bombs each in
    the first decode chunk: 20000x20000 ones and 12000x12000 ones (432 MB, just under
    what TensorFlow 2.21's own decoders refuse), as JPEG and as PNG."""
    root = tmp_path_factory.mktemp("bombs")
    dirs = [_write_dataset(str(root / f"clean-{fmt}"), fmt, {"train": [120]})
            for fmt in ("jpeg", "png")]  # fmt: skip
    for side in (BOMB_SIDE, 12_000):
        for fmt, claiming in (("jpeg", _jpeg_claiming), ("png", _png_claiming)):
            replaced = {("train", 0, record): claiming(side, side) for record in BOMBS_AT}
            name = f"ten-{side}-{fmt}"
            dirs.append(_write_dataset(str(root / name), fmt, {"train": [120]}, replaced=replaced))
    return dirs


def test_ten_bombs_keep_peak_memory_bounded(bomb_datasets: list[str]) -> None:
    """Ten bombs read by three readers in one process: each read is refused naming a
    bomb, and the peak memory stays that of reading a clean dataset."""
    rows = _peak_memory(bomb_datasets)
    assert len(rows) == 3 * len(bomb_datasets), rows
    baseline = max(peak for name, peak, _ in rows if name.startswith("clean"))
    for name, peak, outcome in rows:
        if name.startswith("clean"):
            assert outcome == "read", (name, outcome)
        else:
            side = name.split("-")[1]
            record = outcome.removeprefix("refused DatasetError record ").split(" ")[0]
            assert record.isdigit() and int(record) in BOMBS_AT, (name, outcome)
            assert f"holds a {side}x{side} image" in outcome, (name, outcome)
        assert peak < baseline + 150, f"{name}: peak {peak} MB, {baseline} MB reading clean data"
    assert rows[-1][1] < 1500  # well under the 2 GB a single 20000x20000 RGB image needs
