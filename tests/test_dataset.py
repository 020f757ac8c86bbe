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

import corrupt
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facevae.pipeline import dataset, schema

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
    image[..., 0] = index
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
) -> str:
    os.makedirs(data_dir)
    splits, index = {}, 0
    for split, sizes in layout.items():
        shards = []
        for i, count in enumerate(sizes):
            name = schema.shard_name(split, i, len(sizes), compression)
            path = os.path.join(data_dir, name)
            with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression or "")) as writer:
                for _ in range(count):
                    writer.write(
                        schema.encode_example(
                            _encode(_pixels(index), fmt),
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
    ds = dataset.load(datasets[name], "train", 4, training=False, cache="none")
    batches = list(ds)
    assert ds.element_spec.dtype == tf.float32
    assert all(b.shape[1:] == (SIZE, SIZE, 3) for b in batches)
    assert all(b.shape[0] == 4 for b in batches[:-1])
    assert sum(b.shape[0] for b in batches) == dataset.num_examples(datasets[name], "train")
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
    ds = dataset.load(datasets["png"], "train", batch_size, training=False, cache=cache)
    sizes = [int(b.shape[0]) for b in ds]
    assert sum(sizes) == _split_size("png")
    assert sorted(_epoch(ds)) == list(range(_split_size("png")))


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_training_epoch_is_exactly_once_and_drops_partial_batch(
    datasets: dict[str, str], cache: str
) -> None:
    n = _split_size("png")
    ds = dataset.load(datasets["png"], "train", 5, training=True, cache=cache, repeat=False)
    seen = _epoch(ds)
    assert len(seen) == n // 5 * 5
    assert len(set(seen)) == len(seen)
    kept = dataset.load(
        datasets["png"], "train", 5, training=True, cache=cache, repeat=False, drop_remainder=False
    )
    assert sorted(_epoch(kept)) == list(range(n))


def test_training_repeats_each_example_once_per_epoch(datasets: dict[str, str]) -> None:
    n = _split_size("png")
    ds = dataset.load(datasets["png"], "train", 4, training=True, cache="none", seed=1)
    seen = [i for batch in ds.take(-(-3 * n // 4)) for i in _indices(batch)]  # >= 3 epochs
    for epoch in range(3):
        assert sorted(seen[epoch * n : (epoch + 1) * n]) == list(range(n))


def test_validation_split_is_separate(datasets: dict[str, str]) -> None:
    ds = dataset.load(datasets["png"], "validation", 2, training=False)
    assert sorted(_epoch(ds)) == list(range(_split_size("png"), _split_size("png") + 5))


def test_evaluation_order_is_deterministic(datasets: dict[str, str]) -> None:
    first = dataset.load(datasets["png"], "train", 3, training=False, cache="none")
    second = dataset.load(datasets["png"], "train", 7, training=False, cache="memory")
    assert _epoch(first) == _epoch(first) == _epoch(second)


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_training_reshuffles_every_epoch_reproducibly(datasets: dict[str, str], cache: str) -> None:
    def two_epochs(seed: int) -> tuple[list[int], list[int]]:
        ds = dataset.load(
            datasets["png"], "train", 4, training=True, cache=cache, seed=seed, repeat=False
        )
        return _epoch(ds), _epoch(ds)

    first, second = two_epochs(seed=3)
    assert first != second
    assert two_epochs(seed=3) == (first, second)
    assert two_epochs(seed=4) != (first, second)


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
            datasets[name],
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
        ds = dataset.load(data_dir, "train", 4, training=True, cache=cache, repeat=False)
        ds_kept = dataset.load(
            data_dir, "train", 4, training=False, cache=cache, drop_remainder=False
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
    train = dataset.load(datasets["png"], "train", 4, training=False, cache=cache)
    first = _epoch(train)
    written = _cache_files(tmp_path / "cache")
    assert written and all(name.startswith("train-") for name in written)
    again = dataset.load(datasets["png"], "train", 4, training=False, cache=cache)
    assert _epoch(again) == first
    assert _cache_files(tmp_path / "cache") == written  # reused, not rewritten
    validation = dataset.load(datasets["png"], "validation", 4, training=False, cache=cache)
    assert len(_epoch(validation)) == 5
    labelled = dataset.load(
        datasets["png"], "train", 4, training=False, cache=cache, with_labels=True
    )
    assert sorted(_epoch(labelled)) == sorted(first)


@pytest.mark.parametrize("seed", [None, 5])
def test_disk_cache_filled_in_training_keeps_the_evaluation_order(
    datasets: dict[str, str], tmp_path, seed: int | None
) -> None:
    expected = _epoch(dataset.load(datasets["png"], "train", 4, training=False, cache="none"))
    cache = f"disk:{tmp_path / 'cache'}"
    training = dataset.load(
        datasets["png"], "train", 4, training=True, cache=cache, seed=seed, repeat=False
    )
    seen = _epoch(training)  # fills the cache
    assert seen != sorted(seen)  # and is still shuffled: after the cache
    written = _cache_files(tmp_path / "cache")
    evaluation = dataset.load(datasets["png"], "train", 4, training=False, cache=cache)
    assert _epoch(evaluation) == expected
    assert _cache_files(tmp_path / "cache") == written  # read the training run's cache


def test_resolve_cache(datasets: dict[str, str]) -> None:
    data_dir = datasets["png"]
    assert dataset.resolve_cache("auto", data_dir, "train") == "memory"  # a few KB
    for mode in ["memory", "none", "disk:/tmp/x"]:
        assert dataset.resolve_cache(mode, data_dir, "train") == mode
    for bad in ["disk:", "ram", ""]:
        with pytest.raises(ValueError, match="cache="):
            dataset.resolve_cache(bad, data_dir, "train")


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
    assert dataset.resolve_cache("auto", datasets["png"], "train") == "none"
    assert "cannot be measured" in caplog.text
    ds = dataset.load(datasets["png"], "train", 4, training=False)  # the default cache="auto"
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
        datasets[name], "train", 4, training=True, cache="memory", with_labels=True, flip=True
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
            datasets["png"], "train", 8, training=training, flip=True, repeat=False, seed=0
        )
        images = np.concatenate([b.numpy() for b in ds])
        return images[:, 0, 0, 2] < images[:, 0, -1, 2]  # the blue half moved to the right

    assert flipped(training=False).sum() == 0
    in_training = flipped(training=True)
    assert 0 < in_training.sum() < len(in_training)


# --------------------------------------------------------------------------- examples and facts


def test_examples_fields_in_index_order(datasets: dict[str, str]) -> None:
    items = list(dataset.examples(datasets["png"], "train"))
    assert [int(e["index"]) for e in items] == list(range(_split_size("png")))
    first = items[5]
    assert first["image"].dtype == tf.uint8
    np.testing.assert_array_equal(first["image"].numpy(), _pixels(5))
    assert first["source_id"].numpy() == b"000005.jpg"
    assert first["attributes"].dtype == tf.int64
    assert first["attributes"].numpy().tolist() == _attributes(5)
    assert int(first["identity"]) == 1
    assert first["landmarks"].shape == (schema.NUM_LANDMARK_VALUES,)
    assert "attributes" not in next(iter(dataset.examples(datasets["unlabelled"], "train")))


def test_jpeg_decodes_like_pil(datasets: dict[str, str]) -> None:
    for item in dataset.examples(datasets["jpeg"], "train").take(3):
        encoded = _encode(_pixels(int(item["index"])), "jpeg")
        expected = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
        np.testing.assert_array_equal(item["image"].numpy(), expected)


def test_manifest_facts(datasets: dict[str, str]) -> None:
    assert dataset.num_examples(datasets["png"], "train") == _split_size("png")
    assert dataset.num_examples(datasets["png"], "validation") == 5
    assert dataset.attribute_names(datasets["png"]) == NAMES
    assert dataset.attribute_names(datasets["unlabelled"]) == []
    assert dataset.image_shape(datasets["jpeg"]) == (SIZE, SIZE, 3)


# --------------------------------------------------------------------------- errors


def _copy(datasets: dict[str, str], tmp_path) -> str:
    return shutil.copytree(datasets["png"], tmp_path / "copy")


def test_missing_directory(tmp_path) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(schema.DatasetError, match=r"nowhere.*prepare_celeba"):
        dataset.load(missing, "train", 4, training=True)


def test_missing_split(datasets: dict[str, str]) -> None:
    with pytest.raises(schema.DatasetError, match=r"'test'.*\['train', 'validation'\]"):
        dataset.load(datasets["png"], "test", 4, training=False)


def test_missing_shard(datasets: dict[str, str], tmp_path) -> None:
    data_dir = _copy(datasets, tmp_path)
    os.remove(os.path.join(data_dir, "train-00001-of-00003.tfrecord"))
    with pytest.raises(schema.DatasetError, match=r"train-00001-of-00003.*missing.*--overwrite"):
        dataset.load(data_dir, "train", 4, training=True)
    with pytest.raises(schema.DatasetError, match=r"train-00001-of-00003.*missing"):
        dataset.verify(data_dir)


def test_truncated_shard(datasets: dict[str, str], tmp_path) -> None:
    data_dir = _copy(datasets, tmp_path)
    path = os.path.join(data_dir, "train-00002-of-00003.tfrecord")
    os.truncate(path, os.path.getsize(path) - 10)
    with pytest.raises(
        schema.DatasetError, match=r"train-00002-of-00003.*truncated.*prepare_celeba"
    ):
        dataset.load(data_dir, "train", 4, training=False)
    with pytest.raises(schema.DatasetError, match="train-00002-of-00003"):
        dataset.examples(data_dir, "train")


def test_corrupt_shard(datasets: dict[str, str], tmp_path) -> None:
    data_dir = _copy(datasets, tmp_path)
    dataset.verify(data_dir)
    path = os.path.join(data_dir, "train-00000-of-00003.tfrecord")
    corrupt.flip_a_byte(path)
    with pytest.raises(schema.DatasetError, match=r"train-00000-of-00003.*sha256.*--overwrite"):
        dataset.verify(data_dir)
    ds = dataset.load(data_dir, "train", 4, training=False)
    with pytest.raises(tf.errors.DataLossError) as caught:  # TensorFlow's CRC check stops it
        _epoch(ds)
    explained = dataset.explain_data_loss(data_dir, caught.value)
    assert isinstance(explained, schema.DatasetError)
    assert "train-00000-of-00003" in str(explained) and "--overwrite" in str(explained)


@pytest.mark.parametrize("reader", ["load", "examples"])
def test_corrupt_validation_shard_is_named_by_explain_corrupt_shards(
    datasets: dict[str, str], tmp_path, reader: str
) -> None:
    data_dir = str(_copy(datasets, tmp_path))
    corrupt.flip_a_byte(os.path.join(data_dir, "validation-00000-of-00001.tfrecord"))
    if reader == "load":
        ds = dataset.load(data_dir, "validation", 2, training=False)
    else:
        ds = dataset.examples(data_dir, "validation")
    with pytest.raises(schema.DatasetError) as caught, dataset.explain_corrupt_shards(data_dir):
        list(ds)
    message = str(caught.value)
    assert "validation-00000-of-00001.tfrecord" in message and "--overwrite" in message
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, tf.errors.DataLossError)


def test_explain_corrupt_shards_leaves_other_errors_and_results_alone(
    datasets: dict[str, str],
) -> None:
    with dataset.explain_corrupt_shards(datasets["png"]):
        count = sum(
            len(batch) for batch in dataset.load(datasets["png"], "train", 8, training=False)
        )
    assert count == _split_size("png")
    with pytest.raises(KeyError), dataset.explain_corrupt_shards(datasets["png"]):
        raise KeyError("not a data loss")


def test_explain_data_loss_when_every_shard_matches(datasets: dict[str, str]) -> None:
    error = tf.errors.DataLossError(None, None, "corrupted record at 12")
    explained = dataset.explain_data_loss(datasets["png"], error)
    assert isinstance(explained, schema.DatasetError)
    assert "corrupted record at 12" in str(explained)
    assert datasets["png"] in str(explained) and "prepare_celeba" in str(explained)


def test_labels_need_attributes(datasets: dict[str, str]) -> None:
    with pytest.raises(schema.DatasetError, match=r"with_labels.*attribute"):
        dataset.load(datasets["unlabelled"], "train", 2, training=False, with_labels=True)


def test_bad_batch_size(datasets: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        dataset.load(datasets["png"], "train", 0, training=False)
