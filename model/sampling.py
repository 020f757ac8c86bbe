"""Pictures from a trained run: new faces and latent-space experiments, as sample.py makes them.

    paths = run(SampleConfig(workdir="runs/vae256", mode="traverse"))  # what sample.py calls

or, in a notebook, step by step:

    model, _ = workdir.restore("runs/vae256")
    manifest = schema.Manifest.read("data/celeba96")
    config = SampleConfig(workdir="runs/vae256", mode="attribute", attribute="Eyeglasses")
    picture = make(model, manifest, config)
    picture.images  # (N, H, W, C) in [0, 1], laid out in picture.cols columns
    write(picture, config)  # the PNG grid (and JSON results), as sample.py writes them

SampleConfig and SampleError live in model/sample_config.py with the checks and limits
(importable from here too).

LAYOUTS (below) says each mode's grid, rows x columns; sample.py's --help shows it.

The same workdir, config and `seed` give identical files. Every setting is checked when a
SampleConfig is made, and the size of the grid before any work (the limits bound the
memory); problems are SampleError, DatasetError, WorkdirError or codes.CodesError with a
one-line message naming the setting in backticks, and WriteError for a failed write.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from facevae.model import analysis, codes
from facevae.model import prior as priors  # `prior` is also a setting's name
from facevae.model import workdir as wd
from facevae.model.console import short
from facevae.model.grid import save_grid, to_uint8
from facevae.model.sample_config import SampleConfig as SampleConfig  # the notebook's names
from facevae.model.sample_config import SampleError as SampleError
from facevae.model.sample_config import check_limits, check_outputs
from facevae.model.vae import VAE
from facevae.pipeline import dataset, files, schema

GRID_COLS = 8  # reconstruct wraps its rows here
FALLBACK_SPLITS = ("test", "validation", "train")  # when `split` is None, the first present


LAYOUTS = f"""\
  random       faces from z ~ N(0, T^2 I), or with `prior` gmm from a Gaussian mixture
               fitted on the training codes (cached in the workdir), row-major in a
               near-square grid (`n` faces)
  reconstruct  row pairs: up to 8 originals, then their reconstructions below them
  interpolate  one row per pair of endpoints, `steps` decoded points from A to B; between
               dataset images (`indices` / `source_ids`, taken in pairs) the originals
               frame the row; otherwise `n` rows between random vectors
  attribute    one row per image: the original, then one column per `strengths` value;
               the vectors are those the evaluation scores (the first {codes.TRAIN_CODES:,} labelled
               images of `attribute_split`, cached in the workdir)
  traverse     one row per latent dimension, most informative (KL) first, `num_dims` rows;
               `steps` columns from -R to +R (R: `traverse_range`)
  boundary     one row per `boundaries` value b with z ~ U[0, b] per dimension, then a last
               row with z ~ N(0, I); `n` columns
  denoise      three rows: clean images, corrupted, reconstructed from the corrupted
  stats        one chart: KL per dimension (sorted) above the aggregate posterior std
"""


def _say(text: str) -> None:
    print(text, file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class Picture:
    """What a mode made: images laid out in `cols` columns, and results for JSON if any."""

    mode: str
    images: np.ndarray  # (N, H, W, C) in [0, 1]
    cols: int
    results: dict[str, Any] | None = None


# --------------------------------------------------------------------------- the whole job


def run(config: SampleConfig) -> list[str]:
    """Restores the run, makes the picture and writes it; returns the grid's path, and the
    JSON's where the mode has results (the faces of `save_individual` are not listed)."""
    check_outputs(config)
    model, run_config = wd.restore(config.workdir)
    manifest = None
    if config.reads_data:
        data_dir = config.data_dir or run_config.flags.data_dir
        if not data_dir:
            raise SampleError(
                f"`data_dir` is needed: {wd.config_path(config.workdir)} names no dataset"
            )
        manifest = schema.Manifest.read(data_dir)
    return write(make(model, manifest, config), config)


def make(model: VAE, manifest: schema.Manifest | None, config: SampleConfig) -> Picture:
    """The picture of `config.mode`; nothing is written but the caches in `config.workdir`
    (attribute vectors, the mixture prior). `manifest` may be None for a mode that reads no
    data (SampleConfig.reads_data). Seeds Keras' global generators with `seed` first."""
    if config.reads_data and manifest is None:
        raise SampleError(f"`mode`={config.mode} reads images: give the dataset's manifest")
    if manifest is not None:  # a DatasetError naming both shapes, not TensorFlow's
        manifest.check_image_shape(model.network.image_shape)
    config = check_limits(config, tuple(model.network.image_shape), model.network.z_dim)
    keras.utils.set_random_seed(config.seed)  # any draw not seeded explicitly below
    return MAKERS[config.mode](model, manifest, config)


def write(picture: Picture, config: SampleConfig) -> list[str]:
    """Writes the grid (and the results as JSON beside it), each whole or not at all, and
    with `save_individual` the random faces one by one; files written into the workdir are
    noted there as its own. Returns the grid's path, and the JSON's if written.

    WriteError (an OSError) names a path that could not be written."""
    out = config.out_path
    if config.save_individual and picture.mode == "random":
        for i, face in enumerate(picture.images):
            path = os.path.join(config.save_individual, f"face_{i:04d}.png")
            files.write_png(path, to_uint8(face))
            wd.note_output(config.workdir, path)
        _say(f"random: wrote {len(picture.images)} faces to {config.save_individual}")
    save_grid(picture.images, out, cols=picture.cols, scale=config.scale)
    wd.note_output(config.workdir, out)
    if picture.results is None:
        return [out]
    json_path = config.json_path
    files.write_json(json_path, {**picture.results, "grid": out, "json": json_path})
    wd.note_output(config.workdir, json_path)
    return [out, json_path]


# --------------------------------------------------------------------------- modes
# Each takes the checked config (check_limits) and a manifest where config.reads_data.


def random_faces(model: VAE, manifest: schema.Manifest | None, c: SampleConfig) -> Picture:
    gmm = None
    if c.prior == "gmm":
        gmm = priors.workdir_gmm(model, c.workdir, manifest, batch_size=c.batch_size)
    z = priors.latents(c.prior, c.n, model.network.z_dim, c.seed, c.temperature, gmm)
    return Picture(c.mode, decode(model, z, c), cols=math.ceil(math.sqrt(c.n)))


def reconstruct(model: VAE, manifest: schema.Manifest, c: SampleConfig) -> Picture:
    images = chosen_images(manifest, c, data_split(manifest, c), c.n)
    recon = in_batches(model.reconstruct, images, c.batch_size)
    rows = []
    for start in range(0, len(images), GRID_COLS):
        rows += [images[start : start + GRID_COLS], recon[start : start + GRID_COLS]]
    return Picture(c.mode, stack_rows(rows, GRID_COLS), cols=GRID_COLS)


def interpolate(model: VAE, manifest: schema.Manifest | None, c: SampleConfig) -> Picture:
    rows = []
    if c.chosen:
        images = chosen_images(manifest, c, data_split(manifest, c), 0)
        if len(images) < 2 or len(images) % 2:
            raise SampleError(
                f"interpolate takes images in pairs: got {len(images)} from `indices`/"
                "`source_ids`; give an even number (A,B[,C,D...]), or none for random vectors"
            )
        z = encode_means(model, images, c.batch_size)  # (k, z_dim)
        for a in range(0, len(images), 2):
            path = decode(model, analysis.interpolate(z[a], z[a + 1], c.steps, c.method), c)
            rows.append(np.concatenate([images[a : a + 1], path, images[a + 1 : a + 2]]))
    else:
        rng = np.random.default_rng(c.seed)
        ends = rng.standard_normal((c.n, 2, model.network.z_dim)) * c.temperature
        for a, b in ends:
            rows.append(decode(model, analysis.interpolate(a, b, c.steps, c.method), c))
    return Picture(c.mode, np.concatenate(rows), cols=len(rows[0]))


def attribute(model: VAE, manifest: schema.Manifest, c: SampleConfig) -> Picture:
    split = resolve_split(manifest, c.attribute_split, "attribute_split", fallback=False)
    names = manifest.attribute_names
    if names and c.attribute not in names:  # before the minutes of a first measurement
        raise SampleError(f"`attribute`={short(c.attribute)} is not in the dataset; use one "
                          f"of {list(names)}")  # fmt: skip
    vectors = codes.attribute_vectors(model, c.workdir, manifest, split, batch_size=c.batch_size)
    vector = vectors.vector(c.attribute)  # (z_dim,)
    images = chosen_images(manifest, c, data_split(manifest, c), c.n)
    z = encode_means(model, images, c.batch_size)  # (n, z_dim)
    shifted = z[:, None, :] + np.asarray(c.strengths)[None, :, None] * vector  # (n, S, z_dim)
    decoded = decode(model, shifted.reshape(-1, z.shape[1]), c).reshape(
        len(images), len(c.strengths), *images.shape[1:]
    )  # (n, S, H, W, C)
    rows = np.concatenate([images[:, None], decoded], axis=1)  # (n, 1 + S, H, W, C)
    return Picture(c.mode, rows.reshape(-1, *images.shape[1:]), cols=1 + len(c.strengths))


def traverse(model: VAE, manifest: schema.Manifest, c: SampleConfig) -> Picture:
    split = data_split(manifest, c)
    found = codes.encode_split(model, manifest, split, batch_size=c.batch_size,
                               limit=c.max_examples)  # fmt: skip
    kl = analysis.kl_per_dimension(found.z_mean, found.z_log_var)  # (z_dim,)
    dims = np.argsort(-kl, kind="stable")[: c.num_dims]
    base = np.zeros(model.network.z_dim)
    if c.chosen:  # around the first chosen image instead of the prior mean
        base = encode_means(model, chosen_images(manifest, c, split, 0)[:1], c.batch_size)[0]
    values = np.linspace(-c.traverse_range, c.traverse_range, c.steps)
    z = np.repeat(base[None, None], len(dims), axis=0).repeat(c.steps, axis=1)  # (d, steps, z)
    z[np.arange(len(dims)), :, dims] = values
    _say("traverse: dimensions " + ", ".join(f"{d} (KL {kl[d]:.3g})" for d in dims))
    return Picture(c.mode, decode(model, z.reshape(-1, z.shape[-1]), c), cols=c.steps)


def boundary(model: VAE, manifest: schema.Manifest | None, c: SampleConfig) -> Picture:
    rng = np.random.default_rng(c.seed)
    z_dim = model.network.z_dim
    rows = [rng.uniform(0.0, b, (c.n, z_dim)) for b in c.boundaries]
    rows.append(rng.standard_normal((c.n, z_dim)))
    return Picture(c.mode, decode(model, np.concatenate(rows), c), cols=c.n)


def denoise(model: VAE, manifest: schema.Manifest, c: SampleConfig) -> Picture:
    split = data_split(manifest, c)
    images = chosen_images(manifest, c, split, c.n)
    corrupted = corrupt(images, c.corruption, c.noise, np.random.default_rng(c.seed))
    restored = in_batches(model.reconstruct, corrupted, c.batch_size)
    before, after = analysis.psnr(images, corrupted), analysis.psnr(images, restored)
    results = {
        "split": split, "images": len(images), "corruption": c.corruption, "noise": c.noise,
        "psnr_corrupted_db": float(before.mean()), "psnr_reconstructed_db": float(after.mean()),
    }  # fmt: skip
    _say(f"denoise: PSNR {results['psnr_corrupted_db']:.2f} dB corrupted -> "
         f"{results['psnr_reconstructed_db']:.2f} dB reconstructed")  # fmt: skip
    return Picture(c.mode, np.concatenate([images, corrupted, restored]), len(images), results)


def stats(model: VAE, manifest: schema.Manifest, c: SampleConfig) -> Picture:
    split = data_split(manifest, c)
    found = codes.encode_split(model, manifest, split, batch_size=c.batch_size,
                               limit=c.max_examples)  # fmt: skip
    z_mean, z_log_var = found.z_mean, found.z_log_var  # (N, z_dim) each
    kl = analysis.kl_per_dimension(z_mean, z_log_var)
    active = analysis.active_units(z_mean)
    mean, std = analysis.aggregate_posterior(z_mean, z_log_var)
    results = {
        "split": split, "num_examples": len(z_mean), "z_dim": len(kl),
        "kl_total_nats": float(kl.sum()), "active_units": int(active.sum()),
        "active_threshold": analysis.ACTIVE_UNIT_THRESHOLD,
        "aggregate_mean_abs": float(np.abs(mean).mean()), "aggregate_std_mean": float(std.mean()),
        "kl_per_dim": kl.tolist(), "active_dims": np.flatnonzero(active).tolist(),
        "aggregate_mean": mean.tolist(), "aggregate_std": std.tolist(),
    }  # fmt: skip
    _say(f"stats: {split}, {len(z_mean)} images: KL {kl.sum():.3g} nats, "
         f"{int(active.sum())}/{len(kl)} active units")  # fmt: skip
    return Picture(c.mode, stats_chart(kl, std)[None], cols=1, results=results)


MAKERS: dict[str, Callable[[VAE, Any, SampleConfig], Picture]] = {
    "random": random_faces, "reconstruct": reconstruct, "interpolate": interpolate,
    "attribute": attribute, "traverse": traverse, "boundary": boundary, "denoise": denoise,
    "stats": stats,
}  # fmt: skip


# --------------------------------------------------------------------------- dataset images


def data_split(manifest: schema.Manifest, config: SampleConfig) -> str:
    """`split`; when it is None, test, or the first split of FALLBACK_SPLITS the dataset has."""
    if config.split is not None:
        return resolve_split(manifest, config.split, "split", fallback=False)
    return resolve_split(manifest, FALLBACK_SPLITS[0], "split", fallback=True)


def resolve_split(manifest: schema.Manifest, split: str, name: str, fallback: bool) -> str:
    """`split` if the dataset has it; else with `fallback` the first of FALLBACK_SPLITS it
    has; else a SampleError naming the setting `name` and the splits there are."""
    available = list(manifest.present_splits)
    if split in available:
        return split
    if fallback:
        for other in FALLBACK_SPLITS:
            if other in available:
                _say(f"sampling: the dataset has no {split!r} split; using {other!r}")
                return other
    raise SampleError(f"`{name}`={short(split)}: the dataset {manifest.data_dir} has no such "
                      f"split; use one of {available}")  # fmt: skip


def chosen_images(manifest: schema.Manifest, c: SampleConfig, split: str, n: int) -> np.ndarray:
    """The `indices` / `source_ids` images of the split if given, else its first n:
    (k, H, W, C) float32 in [0, 1]."""
    total = manifest.num_examples(split)
    bad = [i for i in c.indices if not 0 <= i < total]
    if bad:
        raise SampleError(f"`indices`={short(bad)}: the {split} split has {total} images "
                          f"(0..{total - 1})")  # fmt: skip
    positions = list(c.indices)
    if not c.chosen:
        if n > total:
            _say(f"{c.mode}: the {split} split has only {total} images")
        positions = list(range(min(n, total)))
    wanted = set(positions) | set(c.source_ids)
    found: dict = {}  # position or source id -> uint8 image (H, W, C)
    with dataset.explain_corrupt_shards(manifest):  # a corrupt record: name the shard
        for position, example in enumerate(dataset.examples(manifest, split)):
            for key in (position, example["source_id"].numpy().decode()):
                if key in wanted:
                    found[key] = example["image"].numpy()
            if len(found) == len(wanted):
                break
    missing = [s for s in c.source_ids if s not in found]
    if missing:
        raise SampleError(
            f"`source_ids`={short(missing)} are not in the {split} split; pass names as listed "
            "in the source (e.g. 000001.jpg) or positions with `indices`"
        )
    chosen = [found[k] for k in positions + list(c.source_ids)]
    return np.stack(chosen).astype(np.float32) / 255.0


# --------------------------------------------------------------------------- helpers


def in_batches(fn: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
    """fn applied to x (N, ...) in batches, as one numpy array."""
    return np.concatenate(
        [np.asarray(fn(tf.constant(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
    )


def encode_means(model: VAE, images: np.ndarray, batch_size: int) -> np.ndarray:
    """z_mean (N, z_dim) float64 of images (N, H, W, C) in memory (a split: model.codes)."""
    return in_batches(lambda x: model.encode(x)[0], images, batch_size).astype(np.float64)


def decode(model: VAE, z: np.ndarray, c: SampleConfig) -> np.ndarray:
    """Latents (N, z_dim) -> images (N, H, W, C) in [0, 1]."""
    return in_batches(model.decode, np.asarray(z, np.float32), c.batch_size)


def stack_rows(rows: list[np.ndarray], cols: int) -> np.ndarray:
    """Groups of images that each start a new grid row, padded with white cells to whole rows."""
    padded = []
    for row in rows:
        blank = np.ones(((-len(row)) % cols, *row.shape[1:]), np.float32)
        padded += [row, blank]
    return np.concatenate(padded)


def corrupt(images: np.ndarray, kind: str, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of std `amount`, or a grey square of side `amount` x the image side."""
    if kind == "gaussian":
        return np.clip(images + amount * rng.standard_normal(images.shape), 0, 1).astype(np.float32)
    out = images.copy()
    _, height, width, _ = images.shape
    side_h, side_w = max(1, round(amount * height)), max(1, round(amount * width))
    for image in out:
        top, left = rng.integers(0, height - side_h + 1), rng.integers(0, width - side_w + 1)
        image[top : top + side_h, left : left + side_w] = 0.5
    return out


def stats_chart(kl: np.ndarray, std: np.ndarray, height: int = 120) -> np.ndarray:
    """Two bar panels drawn with PIL: KL per dimension sorted high to low, and the aggregate
    posterior std of the same dimensions against a line at 1 (the prior): (H, W, 3) uint8."""
    order = np.argsort(-kl, kind="stable")
    bar = max(1, 512 // len(kl))
    margin, top_gap = 40, 16
    width = margin + bar * len(kl) + 10
    canvas = Image.new("RGB", (width, 2 * (height + top_gap) + 10), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    panels = [("KL per dim (nats)", kl[order], (70, 110, 180)),
              ("aggregate std", std[order], (200, 120, 50))]  # fmt: skip
    for p, (title, values, colour) in enumerate(panels):
        top = p * (height + top_gap) + top_gap
        peak = max(float(values.max()), 1.0 if p else 1e-9)
        draw.text((2, top - 14), f"{title}, max {values.max():.3g}", fill="black", font=font)
        for i, value in enumerate(values):
            bar_height = round(height * max(float(value), 0.0) / peak)
            x = margin + i * bar
            draw.rectangle([x, top + height - bar_height, x + bar - 1, top + height], fill=colour)
        if p:  # the prior's std
            y = top + height - round(height / peak)
            draw.line([margin, y, width - 10, y], fill="red")
        draw.line([margin, top + height, width - 10, top + height], fill="black")
    return np.asarray(canvas)
