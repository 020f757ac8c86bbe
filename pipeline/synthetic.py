"""Synthetic faces written as a CelebA source, for demos and tests without a download.

`write_source(out_dir, n)` draws n faces (pipeline/cartoon.py) and writes them in the
official CelebA layout (or `layout` "kaggle"), which pipeline.prepare then turns into
TFRecords exactly as it does real CelebA:

    official: SRC/img_align_celeba/000001.jpg ...   178x218 RGB JPEG, quality 95
              SRC/list_eval_partition.txt           "000001.jpg 0" (0 train, 1 valid., 2 test)
              SRC/list_attr_celeba.txt              count, 40 names, "000001.jpg  1 -1 ..."
              SRC/list_landmarks_align_celeba.txt   count, 10 names, whitespace-padded ints
              SRC/identity_CelebA.txt               "000001.jpg 7"
    kaggle:   SRC/img_align_celeba/img_align_celeba/*.jpg and the first three as .csv files
              ("image_id,..." headers, comma separated); Kaggle has no identity file.

Every face is drawn from its own RNG, derived from (seed, index), so the output is
byte-identical whatever the number of workers. About n // 20 + 1 people share fixed face
geometry, skin tone, hair and beard; expression, accessories, background, clothes and a
small alignment jitter vary per image. The split is a seeded 80/10/10 shuffle.

`make_demo_dataset` is the demo's dataset: a synthetic source prepared like CelebA, once,
in the cache (`demo_data_dir`). Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from facevae.pipeline import files, prepare, schema
from facevae.pipeline.cartoon import LANDMARK_NAMES, SPLIT_STREAM, face_for
from facevae.pipeline.progress import Progress
from facevae.pipeline.schema import CELEBA_ATTRIBUTES

JPEG_QUALITY = schema.DEFAULT_QUALITY
LAYOUTS = ("official", "kaggle")
IMAGE_DIRS = {"official": ("img_align_celeba",), "kaggle": ("img_align_celeba",) * 2}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test
# `n` at most: labels are held in memory until the end, ~1.1 KB an image (measured), so a
# million faces (five CelebAs) stay near 1 GB.
MAX_IMAGES = 1_000_000

# The demo's dataset. Versioned: a demo cache made by an older generator (v1: glasses too
# thin to learn) is not reused.
DEMO_DATA = "synthetic96-v2"
DEMO_SOURCE_IMAGES = 4000


def split_partition(n: int, seed: int) -> np.ndarray:
    """(n,) 0/1/2 = train/validation/test: a seeded shuffle of 80/10/10 counts, each split
    non-empty once n >= 3 so even tiny sources have all three."""
    small = [round(n * f) for f in SPLIT_FRACTIONS[1:]]
    if n >= 3:
        small = [max(1, k) for k in small]
    labels = np.repeat([0, 1, 2], [n - sum(small), *small])
    return np.random.default_rng([seed, SPLIT_STREAM]).permutation(labels)


# --------------------------------------------------------------------------- writing


def image_name(index: int) -> str:
    return f"{index + 1:06d}.jpg"


class Row(NamedTuple):
    """The labels of one written image."""

    identity: int
    attributes: tuple[int, ...]
    landmarks: tuple[int, ...]


def _write_one(task: tuple[str, int, int, int]) -> Row:
    image_dir, seed, index, n = task
    face, identity = face_for(seed, index, n)
    # A plain write: the image goes into the temporary folder that is moved into place whole.
    face.image.save(os.path.join(image_dir, image_name(index)), "JPEG", quality=JPEG_QUALITY)
    return Row(identity, face.attribute_vector, face.landmarks)


def _official_tables(rows: Sequence[Row], partition: np.ndarray) -> dict[str, list[str]]:
    """File name -> lines in the real CelebA txt formats (values right-aligned in columns)."""
    n = str(len(rows))
    attrs = [image_name(i) + "".join(f" {v:2d}" for v in r.attributes) for i, r in enumerate(rows)]
    marks = [
        image_name(i) + " " + "".join(f"{v:12d}" for v in r.landmarks) for i, r in enumerate(rows)
    ]
    return {
        "list_eval_partition.txt": [f"{image_name(i)} {p}" for i, p in enumerate(partition)],
        "list_attr_celeba.txt": [n, " ".join(CELEBA_ATTRIBUTES), *attrs],
        "list_landmarks_align_celeba.txt": [n, " ".join(LANDMARK_NAMES), *marks],
        "identity_CelebA.txt": [f"{image_name(i)} {r.identity}" for i, r in enumerate(rows)],
    }


def _kaggle_tables(rows: Sequence[Row], partition: np.ndarray) -> dict[str, list[str]]:
    """File name -> lines of the Kaggle csv files (it has no identity file)."""

    def csv(columns: Sequence[str], values: Sequence[Sequence[int]]) -> list[str]:
        lines = [",".join((image_name(i), *map(str, v))) for i, v in enumerate(values)]
        return [",".join(("image_id", *columns)), *lines]

    return {
        "list_eval_partition.csv": csv(("partition",), [(p,) for p in partition]),
        "list_attr_celeba.csv": csv(CELEBA_ATTRIBUTES, [r.attributes for r in rows]),
        "list_landmarks_align_celeba.csv": csv(LANDMARK_NAMES, [r.landmarks for r in rows]),
    }


def _write_labels(root: str, layout: str, rows: Sequence[Row], partition: np.ndarray) -> None:
    tables = (_kaggle_tables if layout == "kaggle" else _official_tables)(rows, partition)
    for file, lines in tables.items():
        files.write_bytes(os.path.join(root, file), "".join(line + "\n" for line in lines).encode())


def _draw_all(image_dir: str, n: int, seed: int, workers: int, verbose: bool) -> list[Row]:
    tasks = [(image_dir, seed, i, n) for i in range(n)]
    progress = Progress(n, "synthetic faces") if verbose else None
    rows = []

    def collect(results: Iterable[Row]) -> None:
        for row in results:
            rows.append(row)
            if progress:
                progress.update()

    if workers == 1:
        collect(map(_write_one, tasks))
    else:
        # fork: workers need no re-import of the caller's __main__ (train.py imports TF).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        with multiprocessing.get_context(method).Pool(workers) as pool:
            collect(pool.imap(_write_one, tasks, chunksize=max(1, min(64, n // (8 * workers)))))
    if progress:
        progress.close()
    return rows


# --------------------------------------------------------------------------- the output folder

# What write_source puts in `out_dir` for either layout; `overwrite` replaces nothing else.
_OWN_LABEL_FILES = {
    "list_eval_partition.txt", "list_eval_partition.csv", "list_attr_celeba.txt",
    "list_attr_celeba.csv", "list_landmarks_align_celeba.txt",
    "list_landmarks_align_celeba.csv", "identity_CelebA.txt",
}  # fmt: skip
_OWN_IMAGE = re.compile(r"\d{6}\.jpg")


def _source_entry(path: str, is_dir: bool) -> files.Entry:
    """Whose an entry of a synthetic source is: label files on top, images in the image
    folders of either layout, and nothing else."""
    parts = tuple(path.split("/"))
    image_dirs = set(IMAGE_DIRS.values())
    if is_dir:  # the image folders and the folders on the way to them
        inside = any(d[: len(parts)] == parts for d in image_dirs)
        return files.Entry.LOOK_INSIDE if inside else files.Entry.FOREIGN
    if parts[:-1] in image_dirs:
        own = _OWN_IMAGE.fullmatch(parts[-1]) is not None
    else:
        own = len(parts) == 1 and parts[0] in _OWN_LABEL_FILES
    return files.Entry.OURS if own else files.Entry.FOREIGN


def _check_target(out_dir: str, overwrite: bool) -> None:
    if os.path.isfile(out_dir):
        raise FileExistsError(f"`out` {out_dir} is a file: choose a folder path for `out`")
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    foreign = files.foreign_entries(out_dir, _source_entry)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise FileExistsError(
            f"`out` {out_dir} holds {foreign[0]}{more}, which is not part of a synthetic "
            "source: refusing to replace the folder, even with `overwrite`; choose another "
            "`out` or empty it yourself"
        )
    if not overwrite:
        raise FileExistsError(
            f"`out` {out_dir} already holds a synthetic source: replace it with `overwrite`, or "
            "choose another `out`"
        )


def write_source(
    out_dir: str,
    n: int,
    *,
    seed: int = 0,
    layout: str = "official",
    workers: int | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Writes n synthetic faces as a CelebA source at `out_dir`; returns a summary.

    The source is built in `.<name>.incomplete` beside `out_dir` and renamed at the end; an
    interrupted run removes it, and a killed run's leftover is removed by the next run. An
    existing non-empty `out_dir` is refused (FileExistsError) unless `overwrite`, and always
    when it holds anything this function does not write (a user's files are never deleted).
    `workers` defaults to all cores; the files do not depend on it. `verbose` prints a
    progress line and a summary line on stderr. A failed write (a full disk) raises
    files.WriteError; `out_dir` is then unchanged. Bad arguments raise ValueError.
    Summary: n, layout, out_dir, identities, splits {train, validation, test}, seconds,
    images_per_second.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"`layout` {schema._short(layout)} is not one of {LAYOUTS}")
    if not 1 <= n <= MAX_IMAGES:
        raise ValueError(f"`n` must be in 1..{MAX_IMAGES:,}, got {n:,}")
    if workers is not None and workers < 1:
        raise ValueError(f"`workers` must be at least 1, got {workers}")
    cores = prepare.default_workers()  # more than 4 processes a core only cost memory
    workers = max(1, min(workers or cores, prepare.WORKERS_PER_CORE * cores, math.ceil(n / 16)))
    out_dir = os.path.abspath(out_dir)
    _check_target(out_dir, overwrite)
    start = time.perf_counter()
    tmp = files.fresh_temp_dir(out_dir)
    try:
        try:
            image_dir = os.path.join(tmp, *IMAGE_DIRS[layout])
            os.makedirs(image_dir)
            rows = _draw_all(image_dir, n, seed, workers, verbose)
            partition = split_partition(n, seed)
            _write_labels(tmp, layout, rows, partition)
        except OSError as e:  # only the temporary folder was written: out_dir is as it was
            raise files.WriteError(out_dir, e) from e
        _check_target(out_dir, overwrite)  # again: it may have appeared while drawing
        files.move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    counts = np.bincount(partition, minlength=3)
    summary = {
        "n": n,
        "layout": layout,
        "out_dir": out_dir,
        "identities": len({row.identity for row in rows}),
        "splits": {"train": int(counts[0]), "validation": int(counts[1]), "test": int(counts[2])},
        "seconds": round(seconds, 3),
        "images_per_second": round(n / max(seconds, 1e-9), 1),
    }
    if verbose:
        splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
        print(
            f"synthetic source: {n} faces ({splits}; {summary['identities']} identities) -> "
            f"{out_dir} in {seconds:.1f} s, {summary['images_per_second']:,.0f} images/s "
            f"({workers} workers)",
            file=sys.stderr,
        )
    return summary


# --------------------------------------------------------------------------- the demo's dataset


def demo_data_dir() -> str:
    """Where the demo's dataset is cached: `<cache_dir>/synthetic96-v2`."""
    return os.path.join(files.cache_dir(), DEMO_DATA)


def make_demo_dataset(data_dir: str, verbose: bool = True) -> schema.Manifest:
    """The demo's dataset in `data_dir`: DEMO_SOURCE_IMAGES synthetic faces, prepared like
    real CelebA (a source in `<data_dir>-source`, removed once prepared); its manifest.

    Whatever is at `data_dir` and its source folder is replaced if it is a dataset or a
    synthetic source, refused otherwise (see write_source and prepare.prepare).
    """
    source = data_dir + "-source"
    if verbose:
        print(f"demo: writing {DEMO_SOURCE_IMAGES} synthetic faces to {source}, then {data_dir}")
    write_source(source, DEMO_SOURCE_IMAGES, seed=0, overwrite=True, verbose=verbose)
    manifest = prepare.prepare(source, data_dir, overwrite=True, verbose=verbose)
    shutil.rmtree(source)
    return manifest
