"""pipeline/schema.py: the record round trip and the manifest checks."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from facevae.pipeline import schema

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


def test_manifest_round_trip_is_atomic(tmp_path):
    manifest = {"image": {"height": 96}, "splits": {"train": {"num_examples": 3, "shards": []}}}
    path = schema.write_manifest(str(tmp_path), manifest)
    assert path == os.path.join(tmp_path, schema.MANIFEST_NAME)
    assert os.listdir(tmp_path) == [schema.MANIFEST_NAME]  # no temporary file left
    assert schema.read_manifest(str(tmp_path)) == {"schema_version": 1, **manifest}


def test_unreadable_manifests_say_what_to_run(tmp_path):
    with pytest.raises(schema.DatasetError, match=r"no dataset directory.*tools\.prepare_celeba"):
        schema.read_manifest(str(tmp_path / "nowhere"))
    with pytest.raises(schema.DatasetError, match=r"no dataset\.json.*--overwrite"):
        schema.read_manifest(str(tmp_path))
    (tmp_path / schema.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(schema.DatasetError, match=r"cannot read.*tools\.prepare_celeba"):
        schema.read_manifest(str(tmp_path))
    (tmp_path / schema.MANIFEST_NAME).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(schema.DatasetError, match=r"schema version 99.*tools\.prepare_celeba"):
        schema.read_manifest(str(tmp_path))


def test_split_info_lists_the_available_splits():
    manifest = {
        "split_fractions": [0.8, 0.2, 0.0],
        "splits": {
            "train": {"num_examples": 5, "shards": []},
            "validation": {"num_examples": 2, "shards": []},
            "test": {"num_examples": 0, "shards": []},
        },
    }
    assert schema.split_info(manifest, "train")["num_examples"] == 5
    for split in ("test", "extra"):  # empty counts as absent
        with pytest.raises(
            schema.DatasetError,
            match=r"\['train', 'validation'\].*--out data/x --split_fractions .* --overwrite",
        ):
            schema.split_info(manifest, split, "data/x")


def test_split_info_of_an_official_partition_does_not_suggest_fractions():
    manifest = {"split_fractions": None, "splits": {"train": {"num_examples": 5}}}
    with pytest.raises(schema.DatasetError, match="partition file assigns no images") as error:
        schema.split_info(manifest, "test", "data/x")
    assert "--split_fractions" not in str(error.value)


def test_manifest_is_readable_by_others(tmp_path):
    path = schema.write_manifest(str(tmp_path), {"splits": {}})
    assert os.stat(path).st_mode & 0o044 == 0o044 & ~schema._UMASK


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    data = os.urandom(3 * (1 << 20) + 7)  # spans several read blocks
    path = tmp_path / "shard.tfrecord"
    path.write_bytes(data)
    assert schema.file_sha256(str(path)) == hashlib.sha256(data).hexdigest()
