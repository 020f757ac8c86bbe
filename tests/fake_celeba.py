"""Tiny CelebA-like sources for the preparation tests, and reading back what was prepared."""

from __future__ import annotations

import io
import os
import pathlib
import random
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image, ImageDraw

from facevae.pipeline import schema

NAMES = [f"{i:06d}.jpg" for i in range(1, 13)]  # 12 images: train 8, validation 2, test 2
PARTITION = [0, 0, 0, 0, 1, 2]  # by position modulo 6
LANDMARK_HEADER = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y"]
LANDMARK_HEADER += ["leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y"]


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


def replace_line(path: pathlib.Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


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


# --------------------------------------------------------------------------- reading back


def read_split(manifest: schema.Manifest, split: str) -> list[dict]:
    """Every record of a split, parsed (TensorFlow is imported here, not by the sources)."""
    import tensorflow as tf

    num_attributes = len(manifest.attribute_names)
    dataset = tf.data.TFRecordDataset(
        manifest.shard_paths(split), compression_type=manifest.compression or ""
    )
    dataset = dataset.map(lambda s: schema.parse_example(s, num_attributes))
    return list(dataset.as_numpy_iterator())


def records(manifest: schema.Manifest) -> list[dict]:
    """Every record of every split."""
    return [r for split in manifest.splits for r in read_split(manifest, split)]


def counts(manifest: schema.Manifest) -> dict[str, int]:
    """Examples per split, as the manifest lists them."""
    return {name: split.num_examples for name, split in manifest.splits.items()}


def image_of(record: dict) -> np.ndarray:
    if record["format"] == b"raw":
        shape = (record["height"], record["width"], record["channels"])
        return np.frombuffer(record["encoded"], np.uint8).reshape(shape)
    return np.asarray(Image.open(io.BytesIO(record["encoded"])))
