"""tools/prepare_celeba.py on tiny sources built here: every layout, labels, bad input, safety."""

import io
import json
import multiprocessing
import os
import pathlib
import random
import struct
import subprocess
import sys
import threading
import zipfile
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw

from facevae.pipeline import schema
from facevae.tools import make_synthetic
from facevae.tools import prepare_celeba as pc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [f"{i:06d}.jpg" for i in range(1, 13)]  # 12 images: train 8, validation 2, test 2
PARTITION = [0, 0, 0, 0, 1, 2]  # by position modulo 6
LANDMARK_HEADER = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y"]
LANDMARK_HEADER += ["leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y"]


# --------------------------------------------------------------------------- tiny sources


def face(i: int, size: tuple[int, int] = (178, 218), mode: str = "RGB") -> Image.Image:
    rng = random.Random(i)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    w, h = size
    skin = (rng.randrange(150, 255), rng.randrange(100, 200), rng.randrange(80, 160))
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, 3 * w // 4, 4 * h // 5), fill=skin)
    return image.convert(mode)


def encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def attributes_of(i: int) -> list[int]:
    return [1 if (i * 7 + k) % 3 == 0 else -1 for k in range(len(schema.CELEBA_ATTRIBUTES))]


def landmarks_of(i: int) -> list[int]:
    return [69 + i, 111, 108, 112 + i, 89, 134, 72, 152, 106 + i, 153]


def write_celeba(
    root, images: dict[str, bytes], layout: str = "official", listed: list[str] | None = None
) -> str:
    """A CelebA source with `images` and label rows for `listed` (default: every image)."""
    listed = list(images) if listed is None else listed
    image_dir = root / "img_align_celeba"
    if layout == "kaggle":
        image_dir = image_dir / "img_align_celeba"
    image_dir.mkdir(parents=True)
    for name, data in images.items():
        (image_dir / name).write_bytes(data)
    attrs = {n: attributes_of(i) for i, n in enumerate(listed)}
    marks = {n: landmarks_of(i) for i, n in enumerate(listed)}
    parts = {n: PARTITION[i % 6] for i, n in enumerate(listed)}
    if layout == "kaggle":
        header = "image_id," + ",".join(schema.CELEBA_ATTRIBUTES)
        rows = [f"{n}," + ",".join(map(str, attrs[n])) for n in listed]
        (root / "list_attr_celeba.csv").write_text("\n".join([header, *rows]) + "\n")
        rows = [f"{n}," + ",".join(map(str, marks[n])) for n in listed]
        text = "\n".join(["image_id," + ",".join(LANDMARK_HEADER), *rows]) + "\n"
        (root / "list_landmarks_align_celeba.csv").write_text(text)
        rows = [f"{n},{parts[n]}" for n in listed]
        (root / "list_eval_partition.csv").write_text("\n".join(["image_id,partition", *rows]))
        return str(root)
    rows = [f"{n} " + " ".join(f"{v:2d}" for v in attrs[n]) for n in listed]
    text = "\n".join([str(len(listed)), " ".join(schema.CELEBA_ATTRIBUTES), *rows]) + "\n"
    (root / "list_attr_celeba.txt").write_text(text)
    rows = [f"{n} " + "   ".join(map(str, marks[n])) for n in listed]
    text = "\n".join([str(len(listed)), " ".join(LANDMARK_HEADER), *rows]) + "\n"
    (root / "list_landmarks_align_celeba.txt").write_text(text)
    text = "".join(f"{n} {parts[n]}\n" for n in listed)
    (root / "list_eval_partition.txt").write_text(text)
    text = "".join(f"{n} {100 + i % 4}\n" for i, n in enumerate(listed))
    (root / "identity_CelebA.txt").write_text(text)
    return str(root)


def zip_folder(folder: str, archive: str, prefix: str = "") -> str:
    with zipfile.ZipFile(archive, "w") as z:
        for parent, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(parent, name)
                z.write(path, prefix + os.path.relpath(path, folder))
    return archive


def faces(n: int = len(NAMES)) -> dict[str, bytes]:
    return {name: encoded(face(i)) for i, name in enumerate(NAMES[:n])}


def read_split(out: str, manifest: dict, split: str) -> list[dict]:
    paths = [os.path.join(out, s["name"]) for s in manifest["splits"][split]["shards"]]
    num_attributes = len(manifest["attribute_names"])
    dataset = tf.data.TFRecordDataset(paths, compression_type=manifest["compression"] or "")
    dataset = dataset.map(lambda s: schema.parse_example(s, num_attributes))
    return list(dataset.as_numpy_iterator())


def image_of(record: dict) -> np.ndarray:
    if record["format"] == b"raw":
        shape = (record["height"], record["width"], record["channels"])
        return np.frombuffer(record["encoded"], np.uint8).reshape(shape)
    return np.asarray(Image.open(io.BytesIO(record["encoded"])))


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> str:
    return write_celeba(tmp_path_factory.mktemp("official"), faces())


@pytest.fixture(scope="module")
def prepared(official, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("prepared") / "celeba96")
    return out, pc.prepare(official, out, workers=1, verbose=False)


# --------------------------------------------------------------------------- layouts and labels


def test_official_records_carry_the_source_labels(prepared):
    out, manifest = prepared
    assert manifest["source"]["layout"] == "official"
    assert manifest["attribute_names"] == list(schema.CELEBA_ATTRIBUTES)
    assert manifest["has_landmarks"] and manifest["has_identity"]
    assert manifest["split_fractions"] is None and manifest["skipped"] == []
    assert manifest["crop"] == list(schema.CELEBA_CROP) and manifest["compression"] is None
    counts = {split: info["num_examples"] for split, info in manifest["splits"].items()}
    assert counts == {"train": 8, "validation": 2, "test": 2}
    seen = []
    for split in counts:
        for shard in manifest["splits"][split]["shards"]:
            path = os.path.join(out, shard["name"])
            assert os.path.getsize(path) == shard["bytes"] and shard["name"].startswith(split)
        for record in read_split(out, manifest, split):
            i = int(record["index"])
            seen.append(i)
            assert record["source_id"].decode() == NAMES[i]
            assert split == schema.SPLITS[PARTITION[i % 6]]
            assert record["attributes"].tolist() == [int(v == 1) for v in attributes_of(i)]
            # The default crop starts 40 px down; 178 px become 96.
            x, y = np.array(landmarks_of(i), float).reshape(5, 2).T
            expected = np.stack([x * 96 / 178, (y - 40) * 96 / 178], axis=1).reshape(10)
            np.testing.assert_allclose(record["landmarks"], expected, rtol=1e-6)
            assert record["identity"] == 100 + i % 4
            assert image_of(record).shape == (96, 96, 3)
    assert sorted(seen) == list(range(12))


def test_image_is_the_cropped_and_resized_source(prepared, official):
    out, manifest = prepared
    record = read_split(out, manifest, "train")[0]
    source = Image.open(os.path.join(official, "img_align_celeba", NAMES[0]))
    expected = np.asarray(source.crop(schema.CELEBA_CROP).resize((96, 96), Image.LANCZOS))
    difference = np.abs(image_of(record).astype(int) - expected.astype(int))
    assert difference.mean() < 3  # JPEG quality 95 round trip


@pytest.mark.parametrize(
    "layout, archive",
    [("official", True), ("kaggle", False), ("kaggle", True), ("folder", False), ("folder", True)],
)
def test_each_layout_as_folder_and_zip(tmp_path, layout, archive):
    if layout == "folder":
        src = tmp_path / "photos"
        (src / "a" / "b").mkdir(parents=True)
        for i in range(6):
            (src / ("a/b" if i % 2 else "a") / f"p{i}.png").write_bytes(
                encoded(face(i, (120, 100)), "PNG")
            )
        (src / "notes.txt").write_text("not an image, not listed")
        src = str(src)
    else:
        src = write_celeba(tmp_path / "src", faces(6), layout)
    if archive:
        # Kaggle's archive.zip has no top folder; a zip of the official data may have one.
        src = zip_folder(src, str(tmp_path / "src.zip"), "CelebA/" if layout == "official" else "")
    out = str(tmp_path / "out")
    manifest = pc.prepare(src, out, workers=1, fmt="raw", verbose=False)  # crop "auto"
    assert manifest["source"] == {"layout": layout, "path": src, "archive": archive}
    # CelebA's box would cut (or skip) the folder's 120x100 photos: "auto" centres them.
    assert manifest["crop"] == ("center" if layout == "folder" else list(schema.CELEBA_CROP))
    assert manifest["skipped"] == []
    records = [r for split in manifest["splits"] for r in read_split(out, manifest, split)]
    assert sorted(int(r["index"]) for r in records) == list(range(6))
    assert all(image_of(r).shape == (96, 96, 3) for r in records)
    if layout == "folder":
        ids = sorted(r["source_id"].decode() for r in records)
        assert ids == ["a/b/p1.png", "a/b/p3.png", "a/b/p5.png", "a/p0.png", "a/p2.png", "a/p4.png"]
        assert manifest["attribute_names"] == [] and not manifest["has_landmarks"]
        assert "attributes" not in records[0]
        assert manifest["split_fractions"] == [0.8, 0.1, 0.1]
    else:
        assert manifest["attribute_names"] == list(schema.CELEBA_ATTRIBUTES)
        assert manifest["has_identity"] == (layout == "official")
        for r in records:
            i = int(r["index"])
            assert r["attributes"].tolist() == [int(v == 1) for v in attributes_of(i)]
            assert r["landmarks"][0] == pytest.approx(landmarks_of(i)[0] * 96 / 178)
            assert r["identity"] == (100 + i % 4 if layout == "official" else schema.MISSING)


def test_unextracted_image_zip_beside_the_label_files(tmp_path):
    src = write_celeba(tmp_path / "CelebA", faces(6))
    images = os.path.join(src, "img_align_celeba")
    zip_folder(images, os.path.join(src, "img_align_celeba.zip"), "img_align_celeba/")
    for name in os.listdir(images):
        os.remove(os.path.join(images, name))
    os.rmdir(images)
    manifest = pc.prepare(src, str(tmp_path / "out"), workers=1, verbose=False)
    assert manifest["source"]["archive"] and manifest["has_identity"]
    assert sum(s["num_examples"] for s in manifest["splits"].values()) == 6


def test_official_partition_without_test_images(tmp_path):
    src = write_celeba(tmp_path / "src", faces(6))
    partition = pathlib.Path(src, "list_eval_partition.txt")
    partition.write_text(partition.read_text().replace(" 2\n", " 1\n"))
    out = str(tmp_path / "out")
    manifest = pc.prepare(src, out, workers=1, verbose=False)
    assert sorted(manifest["splits"]) == ["train", "validation"]
    with pytest.raises(schema.DatasetError, match="'test' is not in the dataset"):
        schema.split_info(manifest, "test", out)


def test_output_is_identical_whatever_the_workers(official, tmp_path):
    manifests = {
        workers: pc.prepare(
            official,
            str(tmp_path / f"w{workers}"),
            workers=workers,
            examples_per_shard=3,
            compression="GZIP",
            verbose=False,
        )
        for workers in (1, 2)
    }
    assert manifests[1]["splits"] == manifests[2]["splits"]
    assert len(manifests[1]["splits"]["train"]["shards"]) == 3  # 8 examples, 3 per shard
    for shard in manifests[1]["splits"]["train"]["shards"]:
        assert shard["name"].endswith(".tfrecord.gz")
        one = (tmp_path / "w1" / shard["name"]).read_bytes()
        assert one == (tmp_path / "w2" / shard["name"]).read_bytes()


def test_seeded_split_by_fractions_and_stable_index_with_limit(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(20):
        (src / f"{i:02d}.jpg").write_bytes(encoded(face(i, (64, 64))))

    def run(name: str, **kwargs) -> dict[str, tuple[int, str]]:
        out = str(tmp_path / name)
        manifest = pc.prepare(str(src), out, crop="none", workers=1, verbose=False, **kwargs)
        return {
            r["source_id"].decode(): (int(r["index"]), split)
            for split in manifest["splits"]
            for r in read_split(out, manifest, split)
        }

    full = run("full", split_fractions=(0.5, 0.25, 0.25))
    counts = {split: sum(1 for _, s in full.values() if s == split) for split in schema.SPLITS}
    assert counts == {"train": 10, "validation": 5, "test": 5}
    assert full == run("again", split_fractions=(0.5, 0.25, 0.25))
    assert full != run("seed1", split_fractions=(0.5, 0.25, 0.25), seed=1)
    limited = run("limited", limit=5, split_fractions=(1, 0, 0))
    assert limited == {f"{i:02d}.jpg": (i, "train") for i in range(5)}
    assert all(full[name][0] == index for name, (index, _) in limited.items())


def test_a_split_of_fraction_zero_stays_empty(tmp_path):
    # Rounding each count (22.5 -> 22, 2.5 -> 2) used to leave 1 image for a 0 test fraction.
    ids = [f"{i:02d}.png" for i in range(25)]
    splits = pc._split_by_fractions(ids, (0.9, 0.1, 0.0), seed=0)
    assert [splits.count(s) for s in schema.SPLITS] == [22, 3, 0]
    splits = pc._split_by_fractions(ids, (0.0, 0.5, 0.5), seed=0)
    assert splits.count("train") == 0 and len(splits) == 25
    src = tmp_path / "photos"
    src.mkdir()
    for name in ids:
        (src / name).write_bytes(encoded(Image.new("RGB", (8, 8)), "PNG"))
    out = str(tmp_path / "out")
    manifest = pc.prepare(
        str(src), out, size=8, fmt="raw", split_fractions=(0.9, 0.1, 0), workers=1, verbose=False
    )
    counts = {split: info["num_examples"] for split, info in manifest["splits"].items()}
    assert counts == {"train": 22, "validation": 3}  # no test entry, as for an official one
    with pytest.raises(schema.DatasetError, match="'test' is not in the dataset"):
        schema.split_info(manifest, "test", out)


# --------------------------------------------------------------------------- bad input


def _gradient_16bit() -> np.ndarray:
    return np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (32, 1))  # (32, 64)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = _gradient_16bit()
    src = tmp_path / "photos"
    src.mkdir()
    (src / "gradient.png").write_bytes(encoded(Image.fromarray(values), "PNG"))  # I;16 on read
    out = str(tmp_path / "out")
    manifest = pc.prepare(
        str(src), out, size=32, fmt="raw", split_fractions=(1, 0, 0), workers=1, verbose=False
    )
    assert manifest["crop"] == "center" and manifest["skipped"] == []
    (record,) = read_split(out, manifest, "train")
    image = image_of(record).astype(int)  # (32, 32, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    expected = np.asarray(
        Image.fromarray((values[:, 16:48] / 257).round().astype(np.uint8)).resize(
            (32, 32), Image.LANCZOS
        )
    )
    assert np.abs(image[..., 0] - expected).max() <= 1  # clipping made ~all of it 255
    assert image.mean() == pytest.approx(127.5, abs=3)


def test_32_bit_grayscale_is_scaled_by_its_known_range_or_skipped():
    recipe = pc.Recipe(size=16, crop="none", fmt="raw")

    def gray(values: np.ndarray) -> np.ndarray:
        payload, _ = pc.transform(encoded(Image.fromarray(values), "TIFF"), recipe)
        return np.frombuffer(payload, np.uint8).reshape(16, 16, 3)[..., 0]

    sixteen = np.tile(np.linspace(0, 65535, 16).round(), (16, 1))  # (16, 16)
    expected = (sixteen / 257).round()
    assert np.abs(gray(sixteen.astype(np.int32)) - expected).max() <= 1  # mode I
    assert np.abs(gray((sixteen / 65535).astype(np.float32)) - expected).max() <= 1  # mode F
    with pytest.raises(pc._SkipError, match=r"F grayscale with values 0\.0\.\.2\.0"):
        gray((sixteen / 65535 * 2).astype(np.float32))
    with pytest.raises(pc._SkipError, match="no known range"):
        gray(sixteen.astype(np.int32) - 100)


def test_txt_header_that_names_the_file_column(tmp_path):
    src = write_celeba(tmp_path / "src", faces(6))
    for file in ("list_attr_celeba.txt", "list_landmarks_align_celeba.txt"):
        path = pathlib.Path(src, file)
        header = path.read_text().splitlines()[1]
        _replace_line(path, 2, "image_id " + header)
    out = str(tmp_path / "out")
    manifest = pc.prepare(src, out, workers=1, verbose=False)
    assert manifest["attribute_names"] == list(schema.CELEBA_ATTRIBUTES)
    records = [r for split in manifest["splits"] for r in read_split(out, manifest, split)]
    assert len(records) == 6
    for r in records:
        i = int(r["index"])
        assert r["attributes"].tolist() == [int(v == 1) for v in attributes_of(i)]


def test_bad_images_are_skipped_with_reasons_and_odd_modes_converted(tmp_path, capsys):
    good = encoded(face(0))
    images = {
        "000001.jpg": good,
        "000002.jpg": b"",  # zero bytes
        "000003.jpg": good[: len(good) // 2],  # truncated
        "000004.jpg": bytes(random.Random(0).randrange(256) for _ in range(500)),  # corrupt
        "000005.jpg": b"just some text, not an image\n",
        "000006.jpg": encoded(face(6, (100, 120))),  # smaller than the crop box
        "000007.jpg": encoded(face(7, mode="L")),
        "000008.png": encoded(face(8, mode="P"), "PNG"),
        "000009.png": encoded(face(9, mode="RGBA"), "PNG"),
        "000010.jpg": encoded(face(10, mode="CMYK")),
        "000011.jpg": good,  # not in the partition
    }
    listed = [n for n in images if n != "000011.jpg"]
    src = write_celeba(tmp_path / "src", images, listed=[*listed, "000012.jpg"])  # 12: missing
    (tmp_path / "src" / "img_align_celeba" / "000011.jpg").write_bytes(good)
    out = str(tmp_path / "out")
    # 000011 has no row in the label files: fine, it is skipped before labels matter.
    manifest = pc.prepare(src, out, workers=2, verbose=True)
    reasons = {s["source_id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {f"{i:06d}.jpg" for i in (2, 3, 4, 5, 6, 11, 12)}
    assert "0 bytes" in reasons["000002.jpg"]
    assert "truncated" in reasons["000003.jpg"]
    assert "not a readable image" in reasons["000004.jpg"]
    assert "not a readable image" in reasons["000005.jpg"]
    assert "smaller than the crop box" in reasons["000006.jpg"]
    assert "--crop center" in reasons["000006.jpg"]
    assert "list_eval_partition.txt" in reasons["000011.jpg"]
    assert "missing" in reasons["000012.jpg"] and "line 11" in reasons["000012.jpg"]
    records = [r for split in manifest["splits"] for r in read_split(out, manifest, split)]
    assert sorted(r["source_id"].decode() for r in records) == [
        "000001.jpg", "000007.jpg", "000008.png", "000009.png", "000010.jpg"
    ]  # fmt: skip
    assert all(image_of(r).shape == (96, 96, 3) for r in records)
    captured = capsys.readouterr()
    assert "skipped 7" in captured.out and "images/s" in captured.out
    assert "prepare_celeba" in captured.err  # the progress line


def _replace_line(path: pathlib.Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "file, line, text, message",
    [
        ("list_attr_celeba.txt", 1, "13", "list_attr_celeba.txt:1: the count line says 13"),
        ("list_attr_celeba.txt", 4, "000099.jpg " + "1 " * 40, "list_attr_celeba.txt:4: 000099"),
        ("list_attr_celeba.txt", 5, "000003.jpg 1 -1", "list_attr_celeba.txt:5: malformed row"),
        ("list_attr_celeba.txt", 5, "000003.jpg " + "2 " * 40, "list_attr_celeba.txt:5: malformed"),
        ("list_landmarks_align_celeba.txt", 3, "000001.jpg 1 2 x", "landmarks_align_celeba.txt:3"),
        ("list_eval_partition.txt", 2, "000002.jpg 7", "list_eval_partition.txt:2: malformed"),
        ("identity_CelebA.txt", 6, "000006.jpg", "identity_CelebA.txt:6: malformed row"),
        (
            "identity_CelebA.txt",
            1,
            "000002.jpg 5",
            "identity_CelebA.txt:2: 000002.jpg appears again",
        ),
    ],
)
def test_label_files_that_disagree_stop_with_file_and_line(tmp_path, file, line, text, message):
    src = write_celeba(tmp_path / "src", faces())
    _replace_line(pathlib.Path(src, file), line, text)
    out = tmp_path / "out"
    with pytest.raises(pc.PrepareError, match=message.replace(".", r"\.")):
        pc.prepare(src, str(out), workers=1, verbose=False)
    assert not out.exists() and not (tmp_path / ".out.incomplete").exists()


def test_label_file_without_a_row_for_an_image(tmp_path):
    src = write_celeba(tmp_path / "src", faces(), listed=NAMES)
    path = pathlib.Path(src, "identity_CelebA.txt")
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(pc.PrepareError, match=r"identity_CelebA\.txt: no row for 000012\.jpg"):
        pc.prepare(src, str(tmp_path / "out"), workers=1, verbose=False)


def test_no_images_stops_with_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(pc.PrepareError, match="no images in"):
        pc.prepare(str(tmp_path / "empty"), str(tmp_path / "out"), verbose=False)
    with pytest.raises(pc.PrepareError, match="does not exist"):
        pc.prepare(str(tmp_path / "nowhere"), str(tmp_path / "out"), verbose=False)
    src = tmp_path / "broken"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"")
    with pytest.raises(pc.PrepareError, match="none of the images"):
        pc.prepare(str(src), str(tmp_path / "out"), verbose=False)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the output folder


def test_interrupted_run_leaves_no_dataset_and_the_next_starts_clean(
    official, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    write = pc._SplitWriter.write
    calls = []

    def interrupted(self, record):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        write(self, record)

    monkeypatch.setattr(pc._SplitWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pc.prepare(official, str(out), workers=2, verbose=False)
    assert not out.exists() and not (tmp_path / ".out.incomplete").exists()
    monkeypatch.undo()
    # A kill -9 leaves the temporary folder, and an old run a folder of shards without manifest.
    (tmp_path / ".out.incomplete").mkdir()
    (tmp_path / ".out.incomplete" / "train-00000.partial").write_bytes(b"junk")
    out.mkdir()
    (out / "train-00000-of-00009.tfrecord").write_bytes(b"junk")
    with pytest.raises(schema.DatasetError, match=r"no dataset\.json"):
        schema.read_manifest(str(out))
    manifest = pc.prepare(official, str(out), workers=1, verbose=False)
    names = {s["name"] for info in manifest["splits"].values() for s in info["shards"]}
    assert set(os.listdir(out)) == names | {schema.MANIFEST_NAME}
    assert not (tmp_path / ".out.incomplete").exists()


def test_complete_dataset_is_not_overwritten_without_the_flag(prepared, official, tmp_path):
    out, _ = prepared
    before = pathlib.Path(schema.manifest_path(out)).read_text()
    with pytest.raises(pc.PrepareError, match="--overwrite"):
        pc.prepare(official, out, size=32, verbose=False)
    assert pathlib.Path(schema.manifest_path(out)).read_text() == before
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(pc.PrepareError, match="not part of a dataset"):
        pc.prepare(official, str(foreign), overwrite=True, verbose=False)
    assert (foreign / "thesis.tex").read_text() == "precious"
    copy = str(tmp_path / "copy")
    pc.prepare(official, copy, workers=1, verbose=False)
    os.makedirs(os.path.join(copy, "judge"))  # tools.train_judge's: stale once re-prepared
    replaced = pc.prepare(official, copy, size=32, fmt="png", overwrite=True, verbose=False)
    assert replaced["image"]["height"] == 32 and schema.read_manifest(copy) == replaced
    assert not os.path.exists(os.path.join(copy, "judge"))
    record = read_split(copy, replaced, "test")[0]
    assert image_of(record).shape == (32, 32, 3) and record["format"] == b"png"


# --------------------------------------------------------------------------- helpers and CLI


def test_crop_box_landmarks_and_shard_size():
    assert pc.crop_box("center", 178, 218) == (0, 20, 178, 198)
    assert pc.crop_box("none", 50, 40) == (0, 0, 50, 40)
    assert pc.crop_box((1, 2, 3, 4), 9, 9) == (1, 2, 3, 4)
    assert pc.move_landmarks([10, 30, 178, 218], (0, 40, 178, 218), 89) == [5, -5, 89, 89]
    assert pc.parse_crop("0, 40,178,218") == (0, 40, 178, 218)
    assert pc.parse_crop("Center") == "center" and pc.parse_crop("auto") == "auto"
    assert pc.resolve_crop("auto", "official") == pc.resolve_crop("auto", "kaggle")
    assert pc.resolve_crop("auto", "kaggle") == schema.CELEBA_CROP
    assert pc.resolve_crop("auto", "folder") == "center"
    assert pc.resolve_crop("none", "folder") == "none"
    with pytest.raises(ValueError, match="--crop"):
        pc.parse_crop("0,40,178")
    with pytest.raises(ValueError, match="crop box"):
        pc.Recipe(crop=(10, 0, 5, 5))
    assert pc.auto_examples_per_shard(pc.Recipe()) == 4096
    assert pc.auto_examples_per_shard(pc.Recipe(fmt="raw")) == 512


def test_command_line_writes_what_the_library_writes_byte_for_byte(official, tmp_path):
    # Another process and another worker count: shards must still be identical.
    out = str(tmp_path / "cli")
    command = [sys.executable, "-m", "tools.prepare_celeba", f"--src={official}", f"--out={out}"]
    flags = ["--workers=2", "--format=png", "--compression=gzip", "--size=48", "--crop=center"]
    result = subprocess.run(
        [*command, *flags, "--examples_per_shard=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "prepared 12 examples (train 8, validation 2, test 2)" in result.stdout
    manifest = json.loads(pathlib.Path(out, schema.MANIFEST_NAME).read_text())
    assert manifest["compression"] == "GZIP" and manifest["crop"] == "center"
    assert manifest["image"]["format"] == "png" and manifest["image"]["height"] == 48
    assert image_of(read_split(out, manifest, "train")[0]).shape == (48, 48, 3)
    library = pc.prepare(
        official,
        str(tmp_path / "lib"),
        workers=1,
        fmt="png",
        compression="GZIP",
        size=48,
        crop="center",
        examples_per_shard=3,
        verbose=False,
    )
    assert library["splits"] == manifest["splits"]  # names, sizes and sha256 of every shard
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "--overwrite" in again.stderr


@pytest.mark.parametrize("layout", ["official", "kaggle"])
def test_synthetic_source_end_to_end(tmp_path, layout):
    src = str(tmp_path / "src")
    make_synthetic.write_source(src, 20, seed=3, layout=layout, workers=1, verbose=False)
    ext, sep, skip = (".csv", ",", 1) if layout == "kaggle" else (".txt", None, 2)
    rows = {}
    for stem in ("list_attr_celeba", "list_landmarks_align_celeba"):
        lines = pathlib.Path(src, stem + ext).read_text().splitlines()[skip:]
        rows[stem] = {line.split(sep)[0]: line.split(sep)[1:] for line in lines if line}
    out = str(tmp_path / "out")
    manifest = pc.prepare(src, out, workers=2, verbose=False)
    assert manifest["source"]["layout"] == layout and manifest["skipped"] == []
    records = [r for split in manifest["splits"] for r in read_split(out, manifest, split)]
    assert len(records) == 20
    for r in records:
        name = r["source_id"].decode()
        attributes = [int(int(v) == 1) for v in rows["list_attr_celeba"][name]]
        assert r["attributes"].tolist() == attributes
        x, y = np.array(rows["list_landmarks_align_celeba"][name], float).reshape(5, 2).T
        expected = np.stack([x * 96 / 178, (y - 40) * 96 / 178], axis=1).reshape(10)
        np.testing.assert_allclose(r["landmarks"], expected, rtol=1e-5)


# --------------------------------------------------------------------------- hostile input


def declared_png(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header declares width x height: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (3 * width + 1))  # one row; PIL never gets to read it
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def zip_with_zeros(path, members: dict[str, bytes], name: str, size: int) -> None:
    """A zip holding `members` and `name`: `size` zero bytes streamed in, never held."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for member, data in members.items():
            z.writestr(member, data)
        with z.open(name, "w", force_zip64=True) as f:
            block = bytes(2**20)
            for start in range(0, size, len(block)):
                f.write(block[: size - start])


def test_huge_files_and_bombs_are_skipped_unread_with_the_limit_named(tmp_path):
    images = faces(2)
    src = tmp_path / "src"
    src.mkdir()
    for name, data in images.items():
        (src / name).write_bytes(data)
    with open(src / "sparse.jpg", "wb") as f:  # 4 GiB that take no disk: never read
        f.truncate(4 * 2**30)
    (src / "bomb.png").write_bytes(declared_png(20_000, 20_000))  # PIL's own limit too
    (src / "big.png").write_bytes(declared_png(7_000, 7_000))  # 49 MP: over ours only
    os.mkfifo(src / "fifo.jpg")  # reading would block forever
    manifest = pc.prepare(str(src), str(tmp_path / "out"), workers=2, verbose=False)
    reasons = {s["source_id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"sparse.jpg", "bomb.png", "big.png", "fifo.jpg"}
    assert "4,096.0 MB, over the 50 MB limit of --max_file_mb" in reasons["sparse.jpg"]
    assert "7000x7000" in reasons["big.png"] and "--max_megapixels 40" in reasons["big.png"]
    assert "--max_megapixels" in reasons["bomb.png"]
    assert "not a regular file" in reasons["fifo.jpg"]
    assert sum(info["num_examples"] for info in manifest["splits"].values()) == len(images)


def test_archive_members_are_checked_by_header_size_and_ratio_before_inflating(tmp_path):
    members = {f"faces/{name}": data for name, data in faces(2).items()}
    big = tmp_path / "big.zip"  # 3 MB of zeros in a few KB, limit 2 MB: by the header's size
    zip_with_zeros(big, members, "faces/bomb.jpg", 3 * 2**20)
    manifest = pc.prepare(str(big), str(tmp_path / "a"), workers=1, max_file_mb=2, verbose=False)
    assert manifest["skipped"] == [
        {
            "source_id": "faces/bomb.jpg",
            "reason": "3.0 MB, over the 2 MB limit of --max_file_mb (raise it to include the file)",
        }
    ]
    ratio = tmp_path / "ratio.zip"  # under the size limit, but inflates ~1000:1
    zip_with_zeros(ratio, members, "faces/padded.png", 2 * 2**20)
    manifest = pc.prepare(str(ratio), str(tmp_path / "b"), workers=1, verbose=False)
    (skipped,) = manifest["skipped"]
    assert skipped["source_id"] == "faces/padded.png" and "zip bomb" in skipped["reason"]


def test_archive_header_that_lies_about_the_size_costs_no_more_than_it_says(tmp_path):
    members = {f"faces/{name}": data for name, data in faces(2).items()}
    liar = tmp_path / "liar.zip"
    zip_with_zeros(liar, members, "faces/liar.jpg", 8 * 2**20)
    data = bytearray(liar.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # the last member's central directory entry
    assert data[entry + 24 : entry + 28] == struct.pack("<I", 8 * 2**20)  # its size
    data[entry + 24 : entry + 28] = struct.pack("<I", 1000)  # now "1000 bytes"; really 8 MB
    liar.write_bytes(bytes(data))
    manifest = pc.prepare(str(liar), str(tmp_path / "out"), workers=1, verbose=False)
    (skipped,) = manifest["skipped"]  # read up to the 1000 bytes, then the CRC disagrees
    assert skipped["source_id"] == "faces/liar.jpg"
    assert "cannot read the file (BadZipFile" in skipped["reason"]


def test_unsafe_archive_paths_are_listed_as_skipped(tmp_path):
    good = encoded(face(0))
    archive = tmp_path / "src.zip"
    unsafe = ["../evil.jpg", "faces/../../evil2.jpg", "/abs/evil3.jpg", "C:/evil4.jpg"]
    unsafe += ["faces/..\\..\\evil5.jpg", "../list_attr_celeba.txt"]
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("faces/000001.jpg", good)
        z.writestr("faces/000002.jpg", good)
        for name in unsafe:
            z.writestr(zipfile.ZipInfo(name), good)
    assert set(unsafe) <= set(zipfile.ZipFile(archive).namelist())  # stored as written
    manifest = pc.prepare(str(archive), str(tmp_path / "out"), workers=1, verbose=False)
    reasons = {s["source_id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(unsafe)
    assert all(r == pc.UNSAFE_MEMBER_REASON for r in reasons.values())
    assert sum(info["num_examples"] for info in manifest["splits"].values()) == 2


def test_label_files_beyond_the_limits_stop_with_the_file_named(tmp_path, monkeypatch):
    src = write_celeba(tmp_path / "src", faces())
    path = pathlib.Path(src, "list_attr_celeba.txt")
    original = path.read_text()
    monkeypatch.setattr(pc, "MAX_LABEL_FILE_MB", 1)
    path.write_text(original + " " * 2**20)
    with pytest.raises(pc.PrepareError, match=r"list_attr_celeba\.txt: 1\.0 MB, over the 1 MB"):
        pc.prepare(src, str(tmp_path / "a"), workers=1, verbose=False)
    path.write_text(original + "x" * (pc.MAX_LABEL_LINE_CHARS + 1) + "\n")
    with pytest.raises(pc.PrepareError, match=r"list_attr_celeba\.txt:15: a line of 10,002"):
        pc.prepare(src, str(tmp_path / "b"), workers=1, verbose=False)
    monkeypatch.setattr(pc, "MAX_LABEL_ROWS", 5)
    path.write_text(original)
    with pytest.raises(pc.PrepareError, match=r"list_eval_partition\.txt:6: more than 5 rows"):
        pc.prepare(src, str(tmp_path / "c"), workers=1, verbose=False)
    assert not any(p.name in ("a", "b", "c") for p in tmp_path.iterdir())


def test_pixel_budget_makes_a_large_image_wait_for_free_pixels():
    budget = pc._PixelBudget(multiprocessing.get_context(), 3)
    order = []

    def take() -> None:
        with budget.reserve(1_500_000):  # 2 units
            order.append("b")

    with budget.reserve(2_500_000):  # 3 of 3 units taken
        waiter = threading.Thread(target=take)
        waiter.start()
        waiter.join(0.3)
        order.append("a released")
    waiter.join(5)
    assert order == ["a released", "b"]
    with budget.reserve(900_000), budget.reserve(900_000):  # under 1 MP: takes nothing
        pass


def test_in_order_keeps_the_order_and_bounds_what_waits_for_the_writer():
    class Pool:  # runs each chunk at once; counts chunks submitted and not yet consumed
        def __init__(self):
            self.pending = self.most = 0

        def apply_async(self, fn, args):
            self.pending += 1
            self.most = max(self.most, self.pending)
            pool = self

            class Result:
                def get(self):
                    pool.pending -= 1
                    return [(task, None, None) for task in args[0]]

            return Result()

    pool = Pool()
    results = pc._in_order(pool, list(range(100)), chunksize=3, max_chunks=4)
    assert [task for task, _, _ in results] == list(range(100))
    assert pool.most == 4


def test_size_over_the_limit_is_refused_in_one_line_and_limits_are_in_help(tmp_path, official):
    with pytest.raises(ValueError, match=r"--size must be in 1\.\.1024, got 100000"):
        pc.Recipe(size=100_000)
    command = [sys.executable, "-m", "tools.prepare_celeba", f"--src={official}"]
    runs = [  # both at once: each start-up imports TensorFlow
        subprocess.Popen(
            [*command, *more], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for more in ([f"--out={tmp_path / 'out'}", "--size=100000"], ["--help"])
    ]
    (_, refused), (help_text, _) = [run.communicate(timeout=120) for run in runs]
    assert runs[0].returncode != 0 and "Traceback" not in refused
    assert "--size=100000" in refused and "1024" in refused
    assert not (tmp_path / "out").exists()
    unwrapped = " ".join(help_text.split())
    limits = [
        "(at most 1024)",
        "--max_file_mb: Source images larger than this (MB)",
        "(default: '50')",
        "at most 100)",
        "(default: '40')",
    ]
    assert all(limit in unwrapped for limit in limits), limits  # every limit is in --help


def test_workers_beyond_four_per_core_are_not_started(official, tmp_path, monkeypatch):
    started = []
    processed = pc._processed

    def spy(tasks, root, recipe, limits, workers):
        started.append(workers)
        return processed(tasks, root, recipe, limits, workers)

    monkeypatch.setattr(pc, "_processed", spy)
    monkeypatch.setattr(pc, "default_workers", lambda: 1)
    pc.prepare(official, str(tmp_path / "out"), workers=10_000, verbose=False)
    assert started == [4]


def test_docstring_shown_by_help_states_the_real_limits():
    doc = " ".join(pc.__doc__.split())
    assert f"more than {pc.MAX_COMPRESSION_RATIO}:1" in doc
    assert f"Label files over {pc.MAX_LABEL_FILE_MB} MB, {pc.MAX_LABEL_ROWS:,} rows" in doc
    assert f"{pc.MAX_LABEL_LINE_CHARS:,}-character lines" in doc
