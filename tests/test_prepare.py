"""pipeline/prepare.py: records and labels, byte-identical shards, bad images, the output
folder, bounded memory; and tools/prepare_celeba.py, the command line, end to end."""

import json
import multiprocessing
import os
import pathlib
import random
import subprocess
import sys
import threading

import cli_driver
import numpy as np
import pytest
from fake_celeba import (
    NAMES,
    PARTITION,
    attributes_of,
    counts,
    declared_png,
    encoded,
    face,
    faces,
    image_of,
    landmarks_of,
    read_split,
    records,
    write_celeba,
)
from PIL import Image

from facevae.pipeline import files, recipe, schema, sources, synthetic, tfds_metadata
from facevae.pipeline import prepare as pp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> str:
    return write_celeba(tmp_path_factory.mktemp("official"), faces())


@pytest.fixture(scope="module")
def prepared(official, tmp_path_factory) -> schema.Manifest:
    out = str(tmp_path_factory.mktemp("prepared") / "celeba96")
    return pp.prepare(official, out, workers=1, verbose=False)


# --------------------------------------------------------------------------- records


def test_official_records_carry_the_source_labels(prepared):
    manifest = prepared
    assert isinstance(manifest, schema.Manifest) and manifest == schema.Manifest.read(
        manifest.data_dir
    )
    assert manifest.source_layout == "official"
    assert manifest.attribute_names == schema.CELEBA_ATTRIBUTES
    assert manifest.raw["has_landmarks"] and manifest.raw["has_identity"]
    assert manifest.split_fractions is None and manifest.raw["skipped"] == []
    assert manifest.crop == list(schema.CELEBA_CROP) and manifest.compression is None
    assert counts(manifest) == {"train": 8, "validation": 2, "test": 2}
    seen = []
    for split in manifest.splits:
        for shard in manifest.split(split).shards:
            path = os.path.join(manifest.data_dir, shard.name)
            assert os.path.getsize(path) == shard.bytes and shard.name.startswith(split)
        for record in read_split(manifest, split):
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
    record = read_split(prepared, "train")[0]
    source = Image.open(os.path.join(official, "img_align_celeba", NAMES[0]))
    expected = np.asarray(source.crop(schema.CELEBA_CROP).resize((96, 96), Image.LANCZOS))
    difference = np.abs(image_of(record).astype(int) - expected.astype(int))
    assert difference.mean() < 3  # JPEG quality 95 round trip


def test_output_is_identical_whatever_the_workers(official, tmp_path):
    manifests = {
        workers: pp.prepare(
            official,
            str(tmp_path / f"w{workers}"),
            workers=workers,
            examples_per_shard=3,
            compression="GZIP",
            verbose=False,
        )
        for workers in (1, 2)
    }
    assert manifests[1].splits == manifests[2].splits
    assert len(manifests[1].split("train").shards) == 3  # 8 examples, 3 per shard
    for shard in manifests[1].split("train").shards:
        assert shard.name.endswith(".tfrecord.gz")
        one = (tmp_path / "w1" / shard.name).read_bytes()
        assert one == (tmp_path / "w2" / shard.name).read_bytes()


@pytest.mark.parametrize("layout", ["official", "kaggle"])
def test_synthetic_source_end_to_end(tmp_path, layout):
    src = str(tmp_path / "src")
    synthetic.write_source(src, 20, seed=3, layout=layout, workers=1, verbose=False)
    ext, sep, skip = (".csv", ",", 1) if layout == "kaggle" else (".txt", None, 2)
    rows = {}
    for stem in ("list_attr_celeba", "list_landmarks_align_celeba"):
        lines = pathlib.Path(src, stem + ext).read_text().splitlines()[skip:]
        rows[stem] = {line.split(sep)[0]: line.split(sep)[1:] for line in lines if line}
    manifest = pp.prepare(src, str(tmp_path / "out"), workers=2, verbose=False)
    assert manifest.source_layout == layout and manifest.raw["skipped"] == []
    found = records(manifest)
    assert len(found) == 20
    for r in found:
        name = r["source_id"].decode()
        attributes = [int(int(v) == 1) for v in rows["list_attr_celeba"][name]]
        assert r["attributes"].tolist() == attributes
        x, y = np.array(rows["list_landmarks_align_celeba"][name], float).reshape(5, 2).T
        expected = np.stack([x * 96 / 178, (y - 40) * 96 / 178], axis=1).reshape(10)
        np.testing.assert_allclose(r["landmarks"], expected, rtol=1e-5)


# --------------------------------------------------------------------------- bad input


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
    # 000011 has no row in the label files: fine, it is skipped before labels matter.
    manifest = pp.prepare(src, str(tmp_path / "out"), workers=2, verbose=True)
    reasons = {s["source_id"]: s["reason"] for s in manifest.raw["skipped"]}
    assert set(reasons) == {f"{i:06d}.jpg" for i in (2, 3, 4, 5, 6, 11, 12)}
    assert manifest.num_skipped == 7
    assert "0 bytes" in reasons["000002.jpg"]
    assert "truncated" in reasons["000003.jpg"]
    assert "not a readable image" in reasons["000004.jpg"]
    assert "not a readable image" in reasons["000005.jpg"]
    assert "smaller than the crop box" in reasons["000006.jpg"]
    assert "`crop` center" in reasons["000006.jpg"]
    assert "list_eval_partition.txt" in reasons["000011.jpg"]
    assert "missing" in reasons["000012.jpg"] and "line 11" in reasons["000012.jpg"]
    found = records(manifest)
    assert sorted(r["source_id"].decode() for r in found) == [
        "000001.jpg", "000007.jpg", "000008.png", "000009.png", "000010.jpg"
    ]  # fmt: skip
    assert all(image_of(r).shape == (96, 96, 3) for r in found)
    captured = capsys.readouterr()
    assert "skipped 7" in captured.out and "images/s" in captured.out
    assert "prepare [" in captured.err  # the progress line


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
    manifest = pp.prepare(str(src), str(tmp_path / "out"), workers=2, verbose=False)
    reasons = {s["source_id"]: s["reason"] for s in manifest.raw["skipped"]}
    assert set(reasons) == {"sparse.jpg", "bomb.png", "big.png", "fifo.jpg"}
    assert "4,096.0 MB, over the 50 MB limit of `max_file_mb`" in reasons["sparse.jpg"]
    assert "7000x7000" in reasons["big.png"] and "`max_megapixels` 40" in reasons["big.png"]
    assert "`max_megapixels`" in reasons["bomb.png"]
    assert "not a regular file" in reasons["fifo.jpg"]
    assert sum(counts(manifest).values()) == len(images)


# --------------------------------------------------------------------------- the output folder


def test_interrupted_run_leaves_no_dataset_and_the_next_starts_clean(
    official, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    write = pp._SplitWriter.write
    calls = []

    def interrupted(self, record):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        write(self, record)

    monkeypatch.setattr(pp._SplitWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pp.prepare(official, str(out), workers=2, verbose=False)
    assert not out.exists() and not (tmp_path / ".out.incomplete").exists()
    monkeypatch.undo()
    # A kill -9 leaves the temporary folder, and an old run a folder of shards without manifest.
    (tmp_path / ".out.incomplete").mkdir()
    (tmp_path / ".out.incomplete" / "train-00000.partial").write_bytes(b"junk")
    out.mkdir()
    (out / "train-00000-of-00009.tfrecord").write_bytes(b"junk")
    with pytest.raises(schema.DatasetError, match=r"no dataset\.json"):
        schema.Manifest.read(str(out))
    manifest = pp.prepare(official, str(out), workers=1, verbose=False)
    names = {s.name for split in manifest.splits.values() for s in split.shards}
    tfds_files = set(tfds_metadata.FILES)  # written when tensorflow-datasets is installed
    assert set(os.listdir(out)) - tfds_files == names | {schema.MANIFEST_NAME}
    assert not (tmp_path / ".out.incomplete").exists()


def test_complete_dataset_is_not_overwritten_without_the_flag(prepared, official, tmp_path):
    out = prepared.data_dir
    before = pathlib.Path(schema.manifest_path(out)).read_text()
    with pytest.raises(sources.PrepareError, match="`overwrite`"):
        pp.prepare(official, out, size=32, verbose=False)
    assert pathlib.Path(schema.manifest_path(out)).read_text() == before
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(sources.PrepareError, match="not part of a dataset"):
        pp.prepare(official, str(foreign), overwrite=True, verbose=False)
    assert (foreign / "thesis.tex").read_text() == "precious"
    copy = str(tmp_path / "copy")
    pp.prepare(official, copy, workers=1, verbose=False)
    os.makedirs(os.path.join(copy, schema.JUDGE_DIR))  # tools.train_judge's: stale once re-prepared
    replaced = pp.prepare(official, copy, size=32, fmt="png", overwrite=True, verbose=False)
    assert replaced.image_shape[0] == 32 and schema.Manifest.read(copy) == replaced
    assert not os.path.exists(os.path.join(copy, schema.JUDGE_DIR))
    record = read_split(replaced, "test")[0]
    assert image_of(record).shape == (32, 32, 3) and record["format"] == b"png"


def test_only_a_datasets_own_entries_are_replaced(official, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".tmp-abc123").write_bytes(b"a killed write of dataset.json")
    (out / "train-00000-of-00001.tfrecord.gz").write_bytes(b"an old shard")
    (out / schema.JUDGE_DIR).mkdir()
    (out / schema.JUDGE_DIR / "judge.json").write_text("{}")
    manifest = pp.prepare(official, str(out), workers=1, verbose=False)  # no manifest: no flag
    assert ".tmp-abc123" not in os.listdir(out) and counts(manifest)["train"] == 8
    for name, make in [
        ("photos", lambda p: p.mkdir()),  # a folder of someone else's
        ("notes.txt", lambda p: p.write_text("mine")),
        ("train.tfrecord", lambda p: p.mkdir()),  # named like a shard, but a folder
        ("link.tfrecord", lambda p: p.symlink_to(official)),  # never followed nor replaced
    ]:
        make(out / name)
        with pytest.raises(sources.PrepareError, match="not part of a dataset") as error:
            pp.prepare(official, str(out), overwrite=True, verbose=False)
        assert name in str(error.value)
        files.remove(str(out / name))
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(sources.PrepareError, match=r"`out` .* is a file"):
        pp.prepare(official, str(file), verbose=False)


# --------------------------------------------------------------------------- workers


def test_pixel_budget_makes_a_large_image_wait_for_free_pixels():
    budget = pp._PixelBudget(multiprocessing.get_context(), 3)
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
    results = pp._in_order(pool, list(range(100)), chunksize=3, max_chunks=4)
    assert [task for task, _, _ in results] == list(range(100))
    assert pool.most == 4


def test_workers_beyond_four_per_core_are_not_started(official, tmp_path, monkeypatch):
    started = []
    processed = pp._processed

    def spy(tasks, root, recipe, limits, workers):
        started.append(workers)
        return processed(tasks, root, recipe, limits, workers)

    monkeypatch.setattr(pp, "_processed", spy)
    monkeypatch.setattr(pp, "default_workers", lambda: 1)
    pp.prepare(official, str(tmp_path / "out"), workers=10_000, verbose=False)
    assert started == [4]


# --------------------------------------------------------------------------- the command line


def test_command_line_end_to_end(official, prepared, tmp_path):
    """The real command (another process, another worker count) writes what the library
    writes byte for byte; its help states the real limits; its errors are one line.

    Two processes at once, each paying one TensorFlow start-up: the conversion, and the
    error cases through main() in one process (tests/cli_driver.py), which then prints the
    help text --help shows (the module docstring and the flags'; test_console runs --help).
    """
    out = str(tmp_path / "cli")
    command = [sys.executable, "-m", "tools.prepare_celeba", f"--src={official}"]
    flags = ["--workers=2", "--format=png", "--compression=gzip", "--size=48", "--crop=center"]
    errors = {
        "again": [f"--src={official}", f"--out={prepared.data_dir}"],
        "size": [f"--src={official}", f"--out={tmp_path / 'big'}", "--size=100000"],
        "src": [f"--src={tmp_path / 'nowhere'}", f"--out={tmp_path / 'nowhere-out'}"],
    }
    driver = cli_driver.script("tools.prepare_celeba") + (
        "print(json.dumps({'help': tools.prepare_celeba.__doc__ + "
        "flags.FLAGS.module_help(tools.prepare_celeba)}))\n"
    )
    runs = [
        subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in (
            [*command, f"--out={out}", *flags, "--examples_per_shard=3"],
            [sys.executable, "-c", driver, json.dumps(errors)],
        )
    ]
    (stdout, stderr), (driven, driver_err) = [run.communicate(timeout=180) for run in runs]
    assert runs[0].returncode == 0, stderr
    assert "prepared 12 examples (train 8, validation 2, test 2)" in stdout
    manifest = schema.Manifest.read(out)
    assert manifest.compression == "GZIP" and manifest.crop == "center"
    assert manifest.image_format == "png" and manifest.image_shape == (48, 48, 3)
    assert image_of(read_split(manifest, "train")[0]).shape == (48, 48, 3)
    library = pp.prepare(
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
    assert library.splits == manifest.splits  # names, sizes and sha256 of every shard

    assert runs[1].returncode == 0, driver_err
    reports_line, help_line = driven.splitlines()[-2:]
    reports = json.loads(reports_line)
    again = reports["again"]
    assert again["code"] != 0 and "--overwrite" in again["message"] and "--out" in again["message"]
    assert again["message"].startswith("prepare_celeba: error: ")
    assert "`" not in again["message"]  # every setting became its flag
    size = reports["size"]
    assert size["code"] != 0 and "Traceback" not in size["message"] + size["stderr"]
    assert "--size=100000" in size["message"] and "1024" in size["message"]
    assert not (tmp_path / "big").exists()
    assert reports["src"]["code"] != 0 and "--src" in reports["src"]["message"]
    assert "does not exist" in reports["src"]["message"]

    unwrapped = " ".join(json.loads(help_line)["help"].split())
    limits = [
        f"(at most {recipe.MAX_SIZE})",
        "--max_file_mb: Source images larger than this (MB)",
        "(default: '50')",
        "at most 100)",
        "(default: '40')",
        # The module docstring heads --help: it states the real limits.
        f"more than {sources.MAX_COMPRESSION_RATIO}:1",
        f"Label files over {sources.MAX_LABEL_FILE_MB} MB, {sources.MAX_LABEL_ROWS:,} rows",
        f"{sources.MAX_LABEL_LINE_CHARS:,}-character lines",
    ]
    assert all(limit in unwrapped for limit in limits), limits  # every limit is in --help
