"""pipeline/schema.py: the record round trip, the manifest checks and the Manifest object."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from facevae.model import console
from facevae.pipeline import files, schema

LANDMARKS = [10.5, 20.0, 30.0, 20.0, 25.0, 30.0, 12.0, 40.0, 28.0, 40.5]


def record(index: int = 7, labelled: bool = True) -> bytes:
    labels = {"attributes": [1, 0, 1], "landmarks": LANDMARKS, "identity": 42} if labelled else {}
    return schema.encode_example(
        b"\x01\x02\x03",
        fmt="raw",
        height=1,
        width=1,
        channels=3,
        source_id=f"{index:06d}.jpg",
        index=index,
        **labels,
    )


def check_labelled(parsed: dict, index: int = 7) -> None:
    assert parsed["encoded"] == b"\x01\x02\x03" and parsed["format"] == b"raw"
    assert (parsed["height"], parsed["width"], parsed["channels"]) == (1, 1, 3)
    assert parsed["source_id"] == f"{index:06d}.jpg".encode() and parsed["index"] == index
    assert parsed["attributes"].tolist() == [1, 0, 1]
    np.testing.assert_allclose(parsed["landmarks"], LANDMARKS)
    assert parsed["identity"] == 42


def test_round_trip_eagerly():
    parsed = {k: v.numpy() for k, v in schema.parse_example(record(), num_attributes=3).items()}
    check_labelled(parsed)
    assert parsed["landmarks"].dtype == np.float32 and parsed["attributes"].dtype == np.int64


def test_round_trip_inside_tf_data():
    dataset = tf.data.Dataset.from_tensor_slices([record(i) for i in range(4)])
    dataset = dataset.map(lambda s: schema.parse_example(s, 3))
    assert dataset.element_spec["landmarks"].shape == (schema.NUM_LANDMARK_VALUES,)
    for i, parsed in enumerate(dataset.as_numpy_iterator()):
        check_labelled(parsed, index=i)


def test_batched_parse_examples():
    parsed = schema.parse_examples(tf.constant([record(1), record(2, labelled=False)]), 3)
    assert parsed["attributes"].shape == (2, 3) and parsed["landmarks"].shape == (2, 10)
    assert parsed["index"].numpy().tolist() == [1, 2]
    assert parsed["identity"].numpy().tolist() == [42, schema.MISSING]


def test_absent_labels_parse_as_missing():
    parsed = schema.parse_example(record(labelled=False), num_attributes=40)
    assert parsed["attributes"].numpy().tolist() == [schema.MISSING] * 40
    assert parsed["landmarks"].numpy().tolist() == [schema.MISSING_LANDMARK] * 10
    assert parsed["identity"] == schema.MISSING
    assert "attributes" not in schema.parse_example(record())  # none asked for


def test_encode_rejects_bad_values():
    with pytest.raises(ValueError, match="format"):
        schema.encode_example(b"", fmt="gif", height=1, width=1, channels=3, source_id="", index=0)
    with pytest.raises(ValueError, match="landmarks need 10"):
        schema.encode_example(
            b"", fmt="png", height=1, width=1, channels=3, source_id="", index=0, landmarks=[1.0]
        )


def test_shard_names():
    assert schema.shard_name("train", 3, 10) == "train-00003-of-00010.tfrecord"
    assert schema.shard_name("test", 0, 1, "GZIP") == "test-00000-of-00001.tfrecord.gz"


def test_file_sha256_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 7)  # spans several read blocks
    path = tmp_path / "shard.tfrecord"
    path.write_bytes(data)
    assert schema.file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- manifests

SHARD_BYTES = 100  # each shard of the manifests below: room for 100 // 16 = 6 records


def shard(name: str, count: int = 4, size: int = SHARD_BYTES) -> dict[str, Any]:
    return {
        "name": name,
        "num_examples": count,
        "bytes": size,
        "sha256": hashlib.sha256(name.encode()).hexdigest(),
    }


def manifest_content(
    counts: dict[str, list[int]] | None = None, split_fractions: list[float] | None = None
) -> dict[str, Any]:
    """A valid dataset.json (without schema_version): shards of `counts` examples each."""
    counts = {"train": [4, 3], "validation": [2], "test": []} if counts is None else counts
    splits = {}
    for split, sizes in counts.items():
        shards = [shard(schema.shard_name(split, i, len(sizes)), n) for i, n in enumerate(sizes)]
        splits[split] = {"num_examples": sum(sizes), "shards": shards}
    return {
        "image": {"height": 16, "width": 12, "channels": 3, "format": "jpeg", "quality": 95},
        "crop": "center",
        "resample": "lanczos",
        "compression": None,
        "source": {"layout": "folder", "path": "/somewhere", "archive": False},
        "attribute_names": ["Smiling", "Young"],
        "has_landmarks": False,
        "has_identity": False,
        "seed": 3,
        "split_fractions": split_fractions,
        "splits": splits,
        "skipped": [{"source_id": "x.jpg", "reason": "unreadable"}],
    }


def write_raw(folder, content: Any) -> str:
    """Writes `content` as dataset.json exactly as given (no schema version added): what
    another tool may have left. Returns the dataset folder."""
    folder.mkdir(exist_ok=True)
    (folder / schema.MANIFEST_NAME).write_text(json.dumps(content))
    return str(folder)


def valid(folder, **changes: Any) -> str:
    """A dataset folder whose dataset.json is manifest_content() with `changes`."""
    return write_raw(folder, {"schema_version": schema.SCHEMA_VERSION, **manifest_content(),
                              **changes})  # fmt: skip


def assert_one_short_line(message: str, data_dir: str) -> None:
    """One line that quotes no long run of a bad value (~80 characters at most)."""
    assert "\n" not in message and "\r" not in message
    words = message.replace(str(data_dir), "<dir>").split()
    assert max(len(word) for word in words) <= 90, message
    assert len(message) < 400 + len(str(data_dir)), message


def refused(data_dir: str, *needles: str) -> schema.DatasetError:
    """Manifest.read's DatasetError: one short line naming dataset.json and each needle, which
    a command line turns into one line with the prepare command."""
    with pytest.raises(schema.DatasetError) as caught:
        schema.Manifest.read(data_dir)
    error = caught.value
    message = str(error)
    assert schema.manifest_path(data_dir) in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert_one_short_line(message, data_dir)
    assert error.data_dir == data_dir and error.reprepare
    command_line = console.one_line(error)
    assert "tools.prepare_celeba" in command_line and "--overwrite" in command_line
    assert "\n" not in command_line
    return error


def test_manifest_round_trip_is_atomic(tmp_path):
    content = manifest_content()
    path = schema.write_manifest(str(tmp_path), content)
    assert path == os.path.join(tmp_path, schema.MANIFEST_NAME)
    assert os.listdir(tmp_path) == [schema.MANIFEST_NAME]  # no temporary file left
    manifest = schema.Manifest.read(str(tmp_path))
    assert manifest.raw == {"schema_version": 1, **content}
    assert manifest.path == path and manifest.data_dir == str(tmp_path)


def test_manifest_fields(tmp_path):
    manifest = schema.Manifest.read(valid(tmp_path, split_fractions=[0.8, 0.1, 0.1]))
    assert manifest.image_shape == (16, 12, 3) and manifest.image_format == "jpeg"
    assert manifest.compression is None and manifest.crop == "center"
    assert manifest.resample == "lanczos" and manifest.source_layout == "folder"
    assert manifest.attribute_names == ("Smiling", "Young") and manifest.num_skipped == 1
    assert manifest.split_fractions == (0.8, 0.1, 0.1)
    train = manifest.split("train")
    assert train.num_examples == 7 and manifest.num_examples("validation") == 2
    assert [s.name for s in train.shards] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert train.shards[1] == schema.Shard(
        "train-00001-of-00002.tfrecord", 3, SHARD_BYTES, train.shards[1].sha256
    )
    assert manifest.has_split("validation") and not manifest.has_split("test")
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.data_dir = "elsewhere"  # type: ignore[misc]


def test_unreadable_manifests_say_what_to_run(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(schema.DatasetError, match=r"no dataset directory") as caught:
        schema.Manifest.read(missing)
    assert "tools.prepare_celeba" in console.one_line(caught.value)
    with pytest.raises(schema.DatasetError, match=r"no dataset\.json") as caught:
        schema.Manifest.read(str(tmp_path))
    assert "--overwrite" in console.one_line(caught.value)
    (tmp_path / schema.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(schema.DatasetError, match=r"cannot read") as caught:
        schema.Manifest.read(str(tmp_path))
    assert "tools.prepare_celeba" in console.one_line(caught.value)
    (tmp_path / schema.MANIFEST_NAME).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(schema.DatasetError, match=r"schema version 99") as caught:
        schema.Manifest.read(str(tmp_path))
    assert "tools.prepare_celeba" in console.one_line(caught.value)


def test_split_lists_the_available_splits(tmp_path):
    content = manifest_content({"train": [5], "validation": [2], "test": []}, [0.8, 0.2, 0.0])
    data_dir = str(tmp_path / "x")
    schema.write_manifest(data_dir, content)
    manifest = schema.Manifest.read(data_dir)
    assert manifest.split("train").num_examples == 5
    for split in ("test", "extra"):  # empty counts as absent
        with pytest.raises(
            schema.DatasetError,
            match=r"\['train', 'validation'\].*prepare the dataset again with split fractions",
        ) as caught:
            manifest.split(split)
        assert manifest.path in str(caught.value) and caught.value.data_dir == data_dir
        assert not caught.value.reprepare  # choosing another split is a fix too
        assert "\n" not in console.one_line(caught.value)


def test_split_of_an_official_partition_does_not_suggest_fractions(tmp_path):
    schema.write_manifest(str(tmp_path), manifest_content({"train": [5]}))
    manifest = schema.Manifest.read(str(tmp_path))
    with pytest.raises(schema.DatasetError, match="partition file assigns no images") as caught:
        manifest.split("test")
    assert "fractions" not in str(caught.value)
    assert "fractions" not in console.one_line(caught.value)


def test_manifest_is_readable_by_others(tmp_path):
    path = schema.write_manifest(str(tmp_path), {"splits": {}})
    assert os.stat(path).st_mode & 0o044 == 0o044 & ~files._UMASK


def test_present_splits_are_the_non_empty_ones_sorted(tmp_path):
    counts = {"validation": [1], "train": [2], "test": [], "extra": [0]}
    manifest = schema.Manifest.read(valid(tmp_path, **_splits(counts)))
    assert manifest.present_splits == ("train", "validation")
    assert set(manifest.splits) == {"validation", "train", "test", "extra"}  # empty ones listed


def _splits(counts: dict[str, list[int]]) -> dict[str, Any]:
    return {"splits": manifest_content(counts)["splits"]}


def test_check_image_shape(tmp_path):
    manifest = schema.Manifest.read(valid(tmp_path))
    manifest.check_image_shape((16, 12, 3))
    manifest.check_image_shape([16, 12, 3])
    for shape in [(12, 16, 3), (16, 12, 1), (96, 96, 3)]:
        with pytest.raises(schema.DatasetError) as caught:
            manifest.check_image_shape(shape)
        message = str(caught.value)
        assert "(16, 12, 3)" in message and str(shape) in message and str(tmp_path) in message
        assert not caught.value.reprepare  # another dataset, not a re-preparation, is the fix
        assert "prepare_celeba" not in console.one_line(caught.value)


def test_split_fingerprint_covers_the_shards_and_the_images_only(tmp_path):
    def fingerprints(content: dict) -> dict[str, str]:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        manifest = schema.Manifest.read(write_raw(folder, content))
        return {name: split.fingerprint for name, split in manifest.splits.items()}

    base = {"schema_version": 1, **manifest_content()}
    before = fingerprints(base)
    assert all(len(f) == 16 for f in before.values()) and before["train"] != before["validation"]
    assert fingerprints(copy.deepcopy(base)) == before  # a function of the content alone

    changed = copy.deepcopy(base)
    changed["splits"]["train"]["shards"][1]["sha256"] = "0" * 64
    after = fingerprints(changed)
    assert after["train"] != before["train"] and after["validation"] == before["validation"]

    source = {"layout": "kaggle", "path": "/x", "archive": True}
    for key, value in [("skipped", []), ("seed", 4), ("has_identity", True), ("source", source)]:
        assert fingerprints({**base, key: value}) == before, key
    for key, value in [("crop", "none"), ("resample", "bicubic"),
                       ("image", {**base["image"], "quality": 80})]:  # fmt: skip
        after = fingerprints({**base, key: value})
        assert all(after[name] != before[name] for name in before), key


def test_manifest_version_follows_the_fingerprints(tmp_path):
    first = schema.Manifest.read(valid(tmp_path / "a"))
    same = schema.Manifest.read(valid(tmp_path / "b", skipped=[]))
    other = schema.Manifest.read(valid(tmp_path / "c", crop="none"))
    assert first.version == same.version != other.version


# --------------------------------------------------------------------------- hostile manifests

LONG = 10_000  # characters of a hostile value: a message quotes at most ~80 of them


def short_id(value: Any) -> str:
    """A test id that does not repeat a hostile value whole."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 30 else f"{text[:12]}...({len(text)} characters)"


@pytest.mark.parametrize(
    "name",
    [
        "../OUTSIDE-train.tfrecord",
        "/abs/path.tfrecord",
        "a/b.tfrecord",
        "a\\b.tfrecord",
        ".hidden",
        "..",
        "train..tfrecord",
        "",
        "evil\nname.tfrecord",
        "x" * LONG,
        "x" * 256,  # one more than a file name can have
    ],
    ids=short_id,
)
def test_a_shard_name_must_be_a_plain_file_name_inside_the_folder(tmp_path, name):
    content = manifest_content()
    content["splits"]["train"]["shards"][1]["name"] = name
    refused(write_raw(tmp_path, {"schema_version": 1, **content}), "splits.train.shards[1].name")


@pytest.mark.parametrize("length", [10, 200])
def test_a_shard_named_twice(tmp_path, length):
    content = manifest_content({"train": [2, 2]})
    shards = content["splits"]["train"]["shards"]
    shards[0]["name"] = shards[1]["name"] = "t" * length
    error = refused(write_raw(tmp_path, {"schema_version": 1, **content}),
                    "splits.train.shards[1].name", "a second time")  # fmt: skip
    assert ("t" * length in str(error)) == (length < 80)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (1e15, "not a whole number"),
        (4.0, "not a whole number"),
        (10**15, "more records than 100 bytes can hold"),
        (7, "more records than 100 bytes can hold"),  # 7 * 16 > 100
        (-1, "below 0"),
        (True, "not a whole number"),
        ("4", "not a whole number"),
        ("9" * LONG, "not a whole number"),
        (None, "not a whole number"),
        ([4], "not a whole number"),
    ],
    ids=short_id,
)
def test_a_shard_count_must_be_a_count_its_bytes_can_hold(tmp_path, value, says):
    content = manifest_content()
    content["splits"]["train"]["shards"][0]["num_examples"] = value
    refused(write_raw(tmp_path, {"schema_version": 1, **content}),
            "splits.train.shards[0].num_examples", says)  # fmt: skip


def test_gzip_shards_may_hold_more_records_than_bytes(tmp_path):
    content = manifest_content({"train": [4]})
    content["splits"]["train"]["shards"][0]["num_examples"] = 1000  # 16 KB in 100 bytes
    content["splits"]["train"]["num_examples"] = 1000
    refused(write_raw(tmp_path / "plain", {"schema_version": 1, **content}), "can hold")
    gzip = write_raw(tmp_path / "gzip", {"schema_version": 1, **content, "compression": "GZIP"})
    assert schema.Manifest.read(gzip).num_examples("train") == 1000
    content["splits"]["train"]["shards"][0]["num_examples"] = 10**9  # beyond any deflate ratio
    content["splits"]["train"]["num_examples"] = 10**9
    again = write_raw(tmp_path / "gzip", {"schema_version": 1, **content, "compression": "GZIP"})
    refused(again, "splits.train.shards[0].num_examples", "can hold")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (8, "is 8 but its shards hold 7"),
        (6, "is 6 but its shards hold 7"),
        (1e15, "not a whole number"),
        (10**15, "but its shards hold 7"),
        (-1, "below 0"),
        (False, "not a whole number"),
        ("7", "not a whole number"),
    ],
)
def test_a_split_count_must_agree_with_its_shards(tmp_path, value, says):
    content = manifest_content()
    content["splits"]["train"]["num_examples"] = value
    refused(write_raw(tmp_path, {"schema_version": 1, **content}),
            "splits.train.num_examples", says)  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("bytes", -5, "splits.train.shards[0].bytes"),
        ("bytes", "100", "splits.train.shards[0].bytes"),
        ("sha256", None, "splits.train.shards[0].sha256"),
        ("name", 7, "splits.train.shards[0].name"),
    ],
)
def test_every_shard_key_is_checked(tmp_path, key, value, says):
    content = manifest_content()
    content["splits"]["train"]["shards"][0][key] = value
    refused(write_raw(tmp_path, {"schema_version": 1, **content}), says)


def test_a_missing_shard_key_is_named(tmp_path):
    content = manifest_content()
    del content["splits"]["train"]["shards"][0]["sha256"]
    refused(write_raw(tmp_path, {"schema_version": 1, **content}),
            "splits.train.shards[0].sha256", "is missing")  # fmt: skip


def test_a_manifest_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / schema.MANIFEST_NAME
    with open(path, "wb") as f:  # a sparse file: nothing of it is written but its start
        f.write(b"[not json")
        f.truncate(schema.MAX_MANIFEST_BYTES + 1)

    def never(*args, **kwargs):
        raise AssertionError("an oversized dataset.json was opened or parsed")

    monkeypatch.setattr(schema, "open", never, raising=False)  # schema's own `open`
    monkeypatch.setattr(schema.json, "loads", never)
    error = refused(str(tmp_path), f"{schema.MAX_MANIFEST_BYTES + 1:,} bytes", "not read")
    assert "json" not in str(error).replace(schema.MANIFEST_NAME, "").lower()


def test_a_manifest_under_the_size_limit_is_read(tmp_path):
    text = json.dumps({"schema_version": 1, **manifest_content()})
    (tmp_path / schema.MANIFEST_NAME).write_text(text + " " * 1000)
    assert schema.Manifest.read(str(tmp_path)).num_examples("train") == 7


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ([], "JSON list"),
        ([{"schema_version": 1}], "JSON list"),
        ("manifest", "JSON str"),
        (None, "JSON NoneType"),
        (3, "JSON int"),
    ],
)
def test_a_manifest_must_be_an_object(tmp_path, content, says):
    refused(write_raw(tmp_path, content), says, "not a manifest")


@pytest.mark.parametrize("version", [0, 2, "1", 1.0, 1.5, None, True, "v" * LONG], ids=short_id)
def test_a_manifest_of_another_schema_version(tmp_path, version):
    content = {"schema_version": version, **manifest_content()}
    if version is None:
        del content["schema_version"]
    refused(write_raw(tmp_path, content), "schema version")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda c: c.pop("image"), ["'image'", "is missing"]),
        (lambda c: c.update(image=[16, 12, 3]), ["'image'", "not of the expected type"]),
        (lambda c: c["image"].pop("height"), ["'image.height'", "is missing"]),
        (lambda c: c["image"].update(height=0), ["'image.height'", "below 1"]),
        (lambda c: c["image"].update(width=1e15), ["'image.width'", "not a whole number"]),
        (lambda c: c["image"].update(channels=7), ["'image.channels'", "is 7, not 1, 3 or 4"]),
        (lambda c: c["image"].update(channels=0), ["'image.channels'", "below 1"]),
        (lambda c: c["image"].update(format="gif"), ["'image.format'", "'gif'", "not one of"]),
        (lambda c: c["image"].update(format="g" * LONG), ["'image.format'", "not one of"]),
        (lambda c: c["image"].update(format=None), ["'image.format'"]),
        (lambda c: c.update(compression="ZLIB"), ["'compression'", "'ZLIB'"]),
        (lambda c: c.update(attribute_names="Smiling"), ["'attribute_names'"]),
        (lambda c: c.update(attribute_names=[1, 2]), ["'attribute_names'"]),
        (lambda c: c.update(split_fractions=[0.5, float("nan")]), ["'split_fractions'"]),
        (lambda c: c.update(split_fractions="0.8"), ["'split_fractions'"]),
        (lambda c: c.update(skipped={}), ["'skipped'"]),
        (lambda c: c.pop("splits"), ["'splits'", "is missing"]),
        (lambda c: c.update(splits=[]), ["'splits'"]),
        (lambda c: c["splits"].update(train=[]), ["'splits.train'", "not an object"]),
        (lambda c: c["splits"]["train"].pop("shards"), ["'splits.train.shards'", "is missing"]),
        (lambda c: c["splits"]["train"]["shards"].append("x"), ["'splits.train.shards[2]'"]),
        (lambda c: c["splits"].update({"s" * LONG: 1}), ["'splits.sss", "not an object"]),
    ],
)
def test_every_manifest_key_is_checked(tmp_path, change: Callable, says: list[str]):
    content = {"schema_version": 1, **manifest_content()}
    change(content)
    refused(write_raw(tmp_path, content), *says)


def _in_a_thread(call: Callable[[], Any], timeout: float = 20) -> Any:
    """call()'s result or exception; fails the test if it blocks (e.g. opening a FIFO)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as e:  # handed to the test's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{call} blocked for {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_manifest_that_is_not_a_file(tmp_path, kind):
    path = tmp_path / schema.MANIFEST_NAME
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with pytest.raises(schema.DatasetError, match="not a regular file") as caught:
        _in_a_thread(lambda: schema.Manifest.read(str(tmp_path)))
    assert str(path) in str(caught.value)


# --------------------------------------------------------------------------- shard files


def dataset_with_shard_files(folder) -> schema.Manifest:
    """A manifest whose shard files exist, each of its recorded size."""
    data_dir = valid(folder)
    manifest = schema.Manifest.read(data_dir)
    for split in manifest.splits.values():
        for entry in split.shards:
            with open(os.path.join(data_dir, entry.name), "wb") as f:
                f.write(b"\0" * entry.bytes)
    return manifest


def test_shard_paths_of_whole_shards(tmp_path):
    manifest = dataset_with_shard_files(tmp_path)
    assert manifest.shard_paths("train") == [
        str(tmp_path / "train-00000-of-00002.tfrecord"),
        str(tmp_path / "train-00001-of-00002.tfrecord"),
    ]
    assert manifest.shard_paths("validation") == [
        str(tmp_path / "validation-00000-of-00001.tfrecord")
    ]
    with pytest.raises(schema.DatasetError, match="'test' is not in the dataset"):
        manifest.shard_paths("test")


def _make_fifo(path: str) -> None:
    os.mkfifo(path)


def _make_device(path: str) -> None:
    os.symlink("/dev/zero", path)


def _make_folder(path: str) -> None:
    os.mkdir(path)


def _truncate(path: str) -> None:
    with open(path, "ab") as f:
        f.truncate(SHARD_BYTES - 1)


def _grow(path: str) -> None:
    with open(path, "ab") as f:
        f.write(b"\0")


def _dangling_link(path: str) -> None:
    os.symlink(path + ".nowhere", path)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_make_fifo, "is a FIFO, not a regular file"),
        (_make_device, "is a device, not a regular file"),
        (_make_folder, "is a folder, not a regular file"),
        (None, "is missing"),
        (_dangling_link, "is missing"),
        (_truncate, "has 99 bytes, the manifest says 100 (truncated"),
        (_grow, "has 101 bytes, the manifest says 100"),
    ],
)
def test_shard_paths_names_a_shard_that_is_not_a_whole_file(tmp_path, damage, says):
    manifest = dataset_with_shard_files(tmp_path)
    path = str(tmp_path / "train-00001-of-00002.tfrecord")
    if damage not in (_truncate, _grow):
        os.remove(path)
    if damage is not None:
        damage(path)
    with pytest.raises(schema.DatasetError) as caught:
        _in_a_thread(lambda: manifest.shard_paths("train"))  # a stat only: never blocks
    message = str(caught.value)
    assert f"shard {path} of split 'train' {says}" in message, message
    assert_one_short_line(message, str(tmp_path))
    assert caught.value.reprepare and "--overwrite" in console.one_line(caught.value)
    assert manifest.shard_paths("validation")  # the other split is whole
