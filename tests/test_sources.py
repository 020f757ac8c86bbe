"""pipeline/sources.py: every layout as folder or zip, label files, splits, hostile archives.

A source is observed through what prepare() makes of it: the manifest and the records.
"""

import os
import pathlib
import struct
import zipfile

import pytest
from fake_celeba import (
    NAMES,
    attributes_of,
    counts,
    encoded,
    face,
    faces,
    image_of,
    landmarks_of,
    read_split,
    records,
    replace_line,
    write_celeba,
    zip_folder,
    zip_with_zeros,
)
from PIL import Image

from facevae.pipeline import schema, sources
from facevae.pipeline.prepare import prepare

# --------------------------------------------------------------------------- layouts and labels


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
    manifest = prepare(src, out, workers=1, fmt="raw", verbose=False)  # crop "auto"
    assert manifest.raw["source"] == {"layout": layout, "path": src, "archive": archive}
    assert manifest.source_layout == layout
    # CelebA's box would cut (or skip) the folder's 120x100 photos: "auto" centres them.
    assert manifest.crop == ("center" if layout == "folder" else list(schema.CELEBA_CROP))
    assert manifest.raw["skipped"] == []
    found = records(manifest)
    assert sorted(int(r["index"]) for r in found) == list(range(6))
    assert all(image_of(r).shape == (96, 96, 3) for r in found)
    if layout == "folder":
        ids = sorted(r["source_id"].decode() for r in found)
        assert ids == ["a/b/p1.png", "a/b/p3.png", "a/b/p5.png", "a/p0.png", "a/p2.png", "a/p4.png"]
        assert manifest.attribute_names == () and not manifest.raw["has_landmarks"]
        assert "attributes" not in found[0]
        assert manifest.raw["split_fractions"] == [0.8, 0.1, 0.1]
    else:
        assert manifest.attribute_names == schema.CELEBA_ATTRIBUTES
        assert manifest.raw["has_identity"] == (layout == "official")
        for r in found:
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
    manifest = prepare(src, str(tmp_path / "out"), workers=1, verbose=False)
    assert manifest.raw["source"]["archive"] and manifest.raw["has_identity"]
    assert sum(counts(manifest).values()) == 6


def test_official_partition_without_test_images(tmp_path):
    src = write_celeba(tmp_path / "src", faces(6))
    partition = pathlib.Path(src, "list_eval_partition.txt")
    partition.write_text(partition.read_text().replace(" 2\n", " 1\n"))
    manifest = prepare(src, str(tmp_path / "out"), workers=1, verbose=False)
    assert sorted(manifest.splits) == ["train", "validation"]
    with pytest.raises(schema.DatasetError, match="'test' is not in the dataset"):
        manifest.split("test")


def test_seeded_split_by_fractions_and_stable_index_with_limit(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(20):
        (src / f"{i:02d}.jpg").write_bytes(encoded(face(i, (64, 64))))

    def run(name: str, **kwargs) -> dict[str, tuple[int, str]]:
        out = str(tmp_path / name)
        manifest = prepare(str(src), out, crop="none", workers=1, verbose=False, **kwargs)
        return {
            r["source_id"].decode(): (int(r["index"]), split)
            for split in manifest.splits
            for r in read_split(manifest, split)
        }

    full = run("full", split_fractions=(0.5, 0.25, 0.25))
    per_split = {split: sum(1 for _, s in full.values() if s == split) for split in schema.SPLITS}
    assert per_split == {"train": 10, "validation": 5, "test": 5}
    assert full == run("again", split_fractions=(0.5, 0.25, 0.25))
    assert full != run("seed1", split_fractions=(0.5, 0.25, 0.25), seed=1)
    limited = run("limited", limit=5, split_fractions=(1, 0, 0))
    assert limited == {f"{i:02d}.jpg": (i, "train") for i in range(5)}
    assert all(full[name][0] == index for name, (index, _) in limited.items())


def test_a_split_of_fraction_zero_stays_empty(tmp_path):
    # Rounding each count (22.5 -> 22, 2.5 -> 2) used to leave 1 image for a 0 test fraction.
    ids = [f"{i:02d}.png" for i in range(25)]
    splits = sources.split_by_fractions(ids, (0.9, 0.1, 0.0), seed=0)
    assert [splits.count(s) for s in schema.SPLITS] == [22, 3, 0]
    splits = sources.split_by_fractions(ids, (0.0, 0.5, 0.5), seed=0)
    assert splits.count("train") == 0 and len(splits) == 25
    src = tmp_path / "photos"
    src.mkdir()
    for name in ids:
        (src / name).write_bytes(encoded(Image.new("RGB", (8, 8)), "PNG"))
    manifest = prepare(
        str(src),
        str(tmp_path / "out"),
        size=8,
        fmt="raw",
        split_fractions=(0.9, 0.1, 0),
        workers=1,
        verbose=False,
    )
    assert counts(manifest) == {"train": 22, "validation": 3}  # no test entry, as official
    with pytest.raises(schema.DatasetError, match="'test' is not in the dataset"):
        manifest.split("test")


def test_fractions_are_three_that_sum_to_one():
    assert sources.check_fractions(["0.5", "0.25", "0.25"]) == [0.5, 0.25, 0.25]
    for bad in ([0.5, 0.5], [0.5, 0.6, -0.1], [0.2, 0.2, 0.2], ["a", "b", "c"]):
        with pytest.raises(ValueError, match=r"`split_fractions` .* must be three non-negative"):
            sources.check_fractions(bad)


def test_txt_header_that_names_the_file_column(tmp_path):
    src = write_celeba(tmp_path / "src", faces(6))
    for file in ("list_attr_celeba.txt", "list_landmarks_align_celeba.txt"):
        path = pathlib.Path(src, file)
        header = path.read_text().splitlines()[1]
        replace_line(path, 2, "image_id " + header)
    manifest = prepare(src, str(tmp_path / "out"), workers=1, verbose=False)
    assert manifest.attribute_names == schema.CELEBA_ATTRIBUTES
    found = records(manifest)
    assert len(found) == 6
    for r in found:
        i = int(r["index"])
        assert r["attributes"].tolist() == [int(v == 1) for v in attributes_of(i)]


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
    replace_line(pathlib.Path(src, file), line, text)
    out = tmp_path / "out"
    with pytest.raises(sources.PrepareError, match=message.replace(".", r"\.")):
        prepare(src, str(out), workers=1, verbose=False)
    assert not out.exists() and not (tmp_path / ".out.incomplete").exists()


def test_a_malformed_row_is_quoted_at_most_80_characters(tmp_path):
    src = write_celeba(tmp_path / "src", faces())
    row = " ".join(["not-a-number"] * 40)  # 519 characters, 40 values
    replace_line(pathlib.Path(src, "list_attr_celeba.txt"), 5, "000003.jpg " + row)
    with pytest.raises(sources.PrepareError) as error:
        sources.scan_source(src)
    message = str(error.value)
    assert "malformed row for 000003.jpg: values must be ints, got 'not-a-number" in message
    assert row not in message and len(message) < len(row)


def test_label_file_without_a_row_for_an_image(tmp_path):
    src = write_celeba(tmp_path / "src", faces(), listed=NAMES)
    path = pathlib.Path(src, "identity_CelebA.txt")
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(sources.PrepareError, match=r"identity_CelebA\.txt: no row for 000012\.jpg"):
        prepare(src, str(tmp_path / "out"), workers=1, verbose=False)


def test_no_images_stops_with_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(sources.PrepareError, match="no images in"):
        prepare(str(tmp_path / "empty"), str(tmp_path / "out"), verbose=False)
    with pytest.raises(sources.PrepareError, match=r"`src` .* does not exist"):
        prepare(str(tmp_path / "nowhere"), str(tmp_path / "out"), verbose=False)
    src = tmp_path / "broken"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"")
    with pytest.raises(sources.PrepareError, match="none of the images"):
        prepare(str(src), str(tmp_path / "out"), verbose=False)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- hostile input


def test_archive_members_are_checked_by_header_size_and_ratio_before_inflating(tmp_path):
    members = {f"faces/{name}": data for name, data in faces(2).items()}
    big = tmp_path / "big.zip"  # 3 MB of zeros in a few KB, limit 2 MB: by the header's size
    zip_with_zeros(big, members, "faces/bomb.jpg", 3 * 2**20)
    manifest = prepare(str(big), str(tmp_path / "a"), workers=1, max_file_mb=2, verbose=False)
    assert manifest.raw["skipped"] == [
        {
            "source_id": "faces/bomb.jpg",
            "reason": "3.0 MB, over the 2 MB limit of `max_file_mb` (raise it to include the file)",
        }
    ]
    ratio = tmp_path / "ratio.zip"  # under the size limit, but inflates ~1000:1
    zip_with_zeros(ratio, members, "faces/padded.png", 2 * 2**20)
    manifest = prepare(str(ratio), str(tmp_path / "b"), workers=1, verbose=False)
    (skipped,) = manifest.raw["skipped"]
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
    manifest = prepare(str(liar), str(tmp_path / "out"), workers=1, verbose=False)
    (skipped,) = manifest.raw["skipped"]  # read up to the 1000 bytes, then the CRC disagrees
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
    manifest = prepare(str(archive), str(tmp_path / "out"), workers=1, verbose=False)
    reasons = {s["source_id"]: s["reason"] for s in manifest.raw["skipped"]}
    assert set(reasons) == set(unsafe)
    assert all(r == sources.UNSAFE_MEMBER_REASON for r in reasons.values())
    assert sum(counts(manifest).values()) == 2


def test_label_files_beyond_the_limits_stop_with_the_file_named(tmp_path, monkeypatch):
    src = write_celeba(tmp_path / "src", faces())
    path = pathlib.Path(src, "list_attr_celeba.txt")
    original = path.read_text()
    monkeypatch.setattr(sources, "MAX_LABEL_FILE_MB", 1)
    path.write_text(original + " " * 2**20)
    with pytest.raises(
        sources.PrepareError, match=r"list_attr_celeba\.txt: 1\.0 MB, over the 1 MB"
    ):
        prepare(src, str(tmp_path / "a"), workers=1, verbose=False)
    path.write_text(original + "x" * (sources.MAX_LABEL_LINE_CHARS + 1) + "\n")
    with pytest.raises(sources.PrepareError, match=r"list_attr_celeba\.txt:15: a line of 10,002"):
        prepare(src, str(tmp_path / "b"), workers=1, verbose=False)
    monkeypatch.setattr(sources, "MAX_LABEL_ROWS", 5)
    path.write_text(original)
    with pytest.raises(sources.PrepareError, match=r"list_eval_partition\.txt:6: more than 5 rows"):
        prepare(src, str(tmp_path / "c"), workers=1, verbose=False)
    assert not any(p.name in ("a", "b", "c") for p in tmp_path.iterdir())
