"""New faces and latent-space experiments from a trained run, restored from its workdir alone.

    python sample.py --workdir runs/vae256 --mode random --out faces.png
    python sample.py --workdir runs/vae256 --mode random --prior gmm --out faces_gmm.png
    python sample.py --workdir runs/vae256 --mode attribute --attribute Smiling

Every mode writes one PNG grid (default <workdir>/<mode>.png) and prints its path;
stats and denoise also write a JSON file beside it. Numbers (ELBO, FID, the judge's):
evaluate.py. Grid layouts, rows x columns:

  random       faces from z ~ N(0, T^2 I), or with --prior gmm from a Gaussian mixture
               fitted on the training codes (cached in the workdir), row-major in a
               near-square grid (--n faces)
  reconstruct  row pairs: up to 8 originals, then their reconstructions below them
  interpolate  one row per pair of endpoints, --steps decoded points from A to B; between
               dataset images (--indices / --source_ids, taken in pairs) the originals
               frame the row; otherwise --n rows between random vectors
  attribute    one row per image: the original, then one column per --strengths value
  traverse     one row per latent dimension, most informative (KL) first, --num_dims rows;
               --steps columns from -traverse_range to +traverse_range
  boundary     one row per --boundaries value b with z ~ U[0, b] per dimension, then a last
               row with z ~ N(0, I); --n columns
  denoise      three rows: clean images, corrupted, reconstructed from the corrupted
  stats        one chart: KL per dimension (sorted) above the aggregate posterior std

The same workdir, mode and --seed give identical files.
"""

from facevae.model.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import contextlib
import dataclasses
import math
import os
import sys
import zipfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from facevae.model import analysis, fingerprint
from facevae.model import prior as priors  # `prior` is also a setting's name
from facevae.model import workdir as wd
from facevae.model.console import Progress, run_app
from facevae.model.grid import save_grid, to_uint8
from facevae.model.vae import VAE
from facevae.pipeline import dataset
from facevae.pipeline.schema import DatasetError, read_manifest, write_json_atomic

MODES = (
    "random", "reconstruct", "interpolate", "attribute", "traverse", "boundary", "denoise",
    "stats",
)  # fmt: skip

# Limits that keep memory bounded (a grid is decoded whole, then drawn): --help shows them.
MAX_N = 1024  # --n, and images named by --indices / --source_ids
MAX_VALUES = 32  # --strengths, --boundaries
MAX_GRID_IMAGES = 4096
# Decoded float32 images are copied a few times on their way to the PNG (~4 x 12 bytes a
# pixel at the peak): 16 megapixels keep sample.py under 2 GB; the PNG after --scale is uint8.
MAX_DECODED_MEGAPIXELS = 16
MAX_GRID_MEGAPIXELS = 64
# stats, traverse and attribute keep the codes of --max_examples images, ~40 bytes a value at
# the peak with the statistics (measured): 65,536 images at z_dim 256 take ~0.7 GB.
MAX_CODE_VALUES = 2**24
LIMITS = {
    "scale": (1, 16),
    "batch_size": (1, 1024),
    "num_dims": (1, 1024),
    "steps": (2, 64),
    "n": (0, MAX_N),
    "max_examples": (0, MAX_CODE_VALUES),
}

# What and where.
flags.DEFINE_string("workdir", None, "Run directory written by train.py (config + checkpoint).")
flags.DEFINE_enum("mode", "random", MODES, "What to make; grid layouts are listed above.")
flags.DEFINE_string(
    "out",
    None,
    f"PNG to write (default <workdir>/<mode>.png); a grid holds at most {MAX_GRID_IMAGES} "
    f"images of {MAX_DECODED_MEGAPIXELS} megapixels in all, {MAX_GRID_MEGAPIXELS} after --scale.",
)
flags.DEFINE_integer("scale", 1, "Integer enlargement of the grid (nearest neighbour), 1..16.")
flags.DEFINE_integer("seed", 0, "Seed of every random draw: the same seed, the same files.")
flags.DEFINE_integer(
    "n", 0, f"Faces, images, rows or columns by mode (0: the mode's default), at most {MAX_N}."
)
flags.DEFINE_integer("batch_size", 64, "Images per encoder/decoder call, at most 1024.")
# Data.
flags.DEFINE_string("data_dir", None, "Dataset (default: the one the run was trained on).")
flags.DEFINE_string("split", "test", "Split to take images from (falls back if absent).")
flags.DEFINE_list(
    "indices", [], f"Positions of images in --split (0-based), e.g. 3,17 (<= {MAX_N})."
)
flags.DEFINE_list(
    "source_ids", [], f"Source file names of images in --split, e.g. 000001.jpg (<= {MAX_N})."
)
flags.DEFINE_integer(
    "max_examples",
    5000,
    f"Images encoded by stats/traverse (0: all, up to {MAX_CODE_VALUES:,} / z_dim).",
)
# Sampling and latent paths.
flags.DEFINE_float("temperature", 1.0, "Std T of the prior samples z ~ N(0, T^2 I).")
flags.DEFINE_enum("prior", "normal", priors.PRIORS, "random: N(0, T^2 I), or gmm on train codes.")
flags.DEFINE_integer("steps", 8, "Points along an interpolation or traversal, 2..64.")
flags.DEFINE_enum("method", "spherical", ["linear", "spherical"], "Interpolation path.")
flags.DEFINE_string("save_individual", None, "random: also write each face as a PNG here.")
# Attributes and traversals.
flags.DEFINE_string("attribute", "Smiling", "Attribute name from the dataset's manifest.")
flags.DEFINE_string("attribute_split", "train", "Labelled split the attribute vectors come from.")
flags.DEFINE_list(
    "strengths",
    ["-2", "-1", "0", "1", "2"],
    f"Multiples of the attribute vector (<= {MAX_VALUES}).",
)
flags.DEFINE_integer("num_dims", 8, "traverse: latent dimensions shown, at most 1024.")
flags.DEFINE_float("traverse_range", 3.0, "traverse: each dimension goes from -this to +this.")
# Boundary and denoise.
flags.DEFINE_list(
    "boundaries",
    ["0.5", "1", "2", "5", "10", "50"],
    f"boundary: values of b > 0 (<= {MAX_VALUES}).",
)
flags.DEFINE_enum("corruption", "gaussian", ["gaussian", "mask"], "denoise: noise or a square.")
flags.DEFINE_float("noise", 0.2, "denoise: Gaussian std, or the mask's side as image fraction.")

flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS

DEFAULT_N = {"random": 64, "reconstruct": 16, "interpolate": 4, "attribute": 4,
             "boundary": 8, "denoise": 8}  # fmt: skip
GRID_COLS = 8  # reconstruct wraps its rows here
FALLBACK_SPLITS = ("test", "validation", "train")


class SampleError(Exception):
    """Bad flags or data for the chosen mode: the message names the flag and the fix."""


@dataclasses.dataclass
class Picture:
    """What a mode made: images laid out in `cols` columns, and results for JSON if any."""

    images: np.ndarray  # (N, H, W, C) in [0, 1]
    cols: int
    results: dict | None = None


@dataclasses.dataclass(frozen=True)
class Options:
    """Every flag a mode reads, as plain values."""

    workdir: str
    mode: str
    seed: int
    n: int
    batch_size: int
    data_dir: str
    split: str
    split_given: bool
    indices: list[int]
    source_ids: list[str]
    max_examples: int
    temperature: float
    prior: str
    steps: int
    method: str
    save_individual: str | None
    attribute: str
    attribute_split: str
    strengths: list[float]
    num_dims: int
    traverse_range: float
    boundaries: list[float]
    corruption: str
    noise: float


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        model, config = wd.restore(FLAGS.workdir)
    except wd.WorkdirError as e:
        sys.exit(f"--workdir={FLAGS.workdir}: {e}")
    options = read_options(config)
    out = FLAGS.out or os.path.join(FLAGS.workdir, f"{FLAGS.mode}.png")
    check_outputs(out, options)
    options = check_limits(options, model.network.image_shape, model.network.z_dim)
    keras.utils.set_random_seed(options.seed)  # any draw not seeded explicitly below

    try:
        picture = MODE_FUNCTIONS[options.mode](model, options)
    except SampleError as e:
        sys.exit(f"sample.py --mode={options.mode}: {e}")
    except DatasetError as e:  # e.g. the dataset moved since training
        sys.exit(f"--data_dir={options.data_dir}: {e} (--data_dir defaults to the run's dataset)")

    try:  # both writers write a temporary file and rename it: nothing is half-written
        save_grid(picture.images, out, cols=picture.cols, scale=FLAGS.scale)
        if picture.results is None:
            print(out)
            return
        json_path = os.path.splitext(out)[0] + ".json"
        results = {**picture.results, "grid": out, "json": json_path}
        write_json_atomic(json_path, results)
    except OSError as e:
        sys.exit(f"--out={out}: cannot write {e.filename or out} ({e.strerror or e})")
    print(out)
    print(json_path)


# --------------------------------------------------------------------------- options


def read_options(config: dict) -> Options:
    """The flags as plain values, checked; stops with a message naming a bad flag."""
    data_dir = FLAGS.data_dir or config.get("flags", {}).get("data_dir")
    if not data_dir:
        sys.exit(f"--data_dir is needed: {FLAGS.workdir}'s config.json does not name a dataset")
    return Options(
        workdir=FLAGS.workdir,
        mode=FLAGS.mode,
        seed=FLAGS.seed,
        n=FLAGS.n or DEFAULT_N.get(FLAGS.mode, 0),
        batch_size=FLAGS.batch_size,
        data_dir=data_dir,
        split=FLAGS.split,
        split_given=FLAGS["split"].present,
        indices=parse_list("indices", FLAGS.indices, int, MAX_N),
        source_ids=parse_list("source_ids", FLAGS.source_ids, str, MAX_N),
        max_examples=FLAGS.max_examples,
        temperature=FLAGS.temperature,
        prior=FLAGS.prior,
        steps=FLAGS.steps,
        method=FLAGS.method,
        save_individual=FLAGS.save_individual,
        attribute=FLAGS.attribute,
        attribute_split=FLAGS.attribute_split,
        strengths=parse_list(
            "strengths", FLAGS.strengths, float, MAX_VALUES, math.isfinite, "a finite number"
        ),
        num_dims=FLAGS.num_dims,
        traverse_range=FLAGS.traverse_range,
        boundaries=parse_list(
            "boundaries", FLAGS.boundaries, float, MAX_VALUES, positive, "a positive finite number"
        ),
        corruption=FLAGS.corruption,
        noise=FLAGS.noise,
    )


def parse_list(
    name: str,
    values: list[str],
    kind: type,
    most: int,
    valid: Callable[[Any], bool] | None = None,
    rule: str = "",
) -> list:
    """A list flag's values as `kind`, at most `most` of them, each passing `valid`."""
    if len(values) > most:
        sys.exit(f"--{name}: {len(values)} values, at most {most} are allowed")
    try:
        parsed = [kind(v) for v in values]
    except ValueError:
        sys.exit(f"--{name}={','.join(values)}: give comma-separated {kind.__name__} values")
    bad = [text for text, value in zip(values, parsed, strict=True) if valid and not valid(value)]
    if bad:
        sys.exit(f"--{name}={','.join(values)}: {bad[0]} is not {rule}")
    return parsed


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


for _name, (_low, _high) in LIMITS.items():
    flags.register_validator(
        _name,
        lambda v, low=_low, high=_high: low <= v <= high,
        message=f"--{_name} must be in {_low}..{_high}",
    )
for _name in ("temperature", "noise", "traverse_range"):
    flags.register_validator(_name, positive, f"--{_name} must be a positive finite number")


def check_outputs(out: str, o: Options) -> None:
    """Stops before any work when --out (or its JSON, or --save_individual) cannot be written."""
    paths = [("--out", out), ("--out", os.path.splitext(out)[0] + ".json")]
    for flag, path in paths:
        if os.path.isdir(path):
            example = os.path.join(path, o.mode + ".png")
            sys.exit(f"{flag}={path} is a folder: give the path of a file, e.g. {example}")
    folders = [("--out", os.path.dirname(os.path.abspath(out)))]
    if o.save_individual:
        folders.append(("--save_individual", os.path.abspath(o.save_individual)))
    for flag, folder in folders:
        existing = folder
        while not os.path.exists(existing):  # the nearest folder that exists gets the writes
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            sys.exit(f"{flag}: {existing} is a file, so {folder} cannot be made; choose a path")
        if not os.access(existing, os.W_OK):
            sys.exit(f"{flag}: {existing} is not writable (read-only); choose another path")


def grid_images(o: Options, z_dim: int) -> int:
    """How many images the mode's grid will hold, from the options alone."""
    chosen = len(o.indices) + len(o.source_ids)
    images = chosen or o.n  # the dataset images a mode starts from
    return {
        "random": o.n,
        "reconstruct": 2 * images,
        "interpolate": chosen // 2 * (o.steps + 2) if chosen else o.n * o.steps,
        "attribute": images * (1 + len(o.strengths)),
        "traverse": min(o.num_dims, z_dim) * o.steps,
        "boundary": (len(o.boundaries) + 1) * o.n,
        "denoise": 3 * images,
    }.get(o.mode, 1)


def check_limits(o: Options, image_shape: tuple[int, ...], z_dim: int) -> Options:
    """Stops before any work when the grid would be too big to hold in memory; returns the
    options with --max_examples 0 ("all") made a number whose codes fit in memory."""
    most = MAX_CODE_VALUES // z_dim  # z_mean and z_log_var of every image encoded
    if o.max_examples > most:
        sys.exit(
            f"--max_examples={o.max_examples}: at z_dim {z_dim} at most {most:,} images are "
            f"encoded at once ({MAX_CODE_VALUES:,} code values); lower it, or 0 for that many"
        )
    count = grid_images(o, z_dim)
    decoded = count * image_shape[0] * image_shape[1] / 1e6
    scaled = decoded * FLAGS.scale**2
    if count > MAX_GRID_IMAGES or decoded > MAX_DECODED_MEGAPIXELS or scaled > MAX_GRID_MEGAPIXELS:
        sys.exit(
            f"--mode={o.mode}: these flags make a grid of {count:,} images, {decoded:,.2f} "
            f"megapixels ({scaled:,.2f} at --scale={FLAGS.scale}); the limits are "
            f"{MAX_GRID_IMAGES:,} images, {MAX_DECODED_MEGAPIXELS} megapixels "
            f"({MAX_GRID_MEGAPIXELS} scaled): lower --n, --steps, --num_dims, --scale or the "
            "number of --strengths / --boundaries"
        )
    return dataclasses.replace(o, max_examples=o.max_examples or most)


# --------------------------------------------------------------------------- modes


def random_faces(model: VAE, o: Options) -> Picture:
    faces = prior_samples(model, o.n, o)  # (n, H, W, C)
    if o.save_individual:
        for i, face in enumerate(faces):
            save_png(face, os.path.join(o.save_individual, f"face_{i:04d}.png"))
        print(f"wrote {len(faces)} faces to {o.save_individual}", file=sys.stderr)
    return Picture(faces, cols=math.ceil(math.sqrt(o.n)))


def reconstruct(model: VAE, o: Options) -> Picture:
    images = chosen_images(model, o, data_split(o), o.n)
    recon = in_batches(model.reconstruct, images, o.batch_size)
    rows = []
    for start in range(0, len(images), GRID_COLS):
        rows += [images[start : start + GRID_COLS], recon[start : start + GRID_COLS]]
    return Picture(stack_rows(rows, GRID_COLS), cols=GRID_COLS)


def interpolate(model: VAE, o: Options) -> Picture:
    rows = []
    if o.indices or o.source_ids:
        images = chosen_images(model, o, data_split(o), 0)
        if len(images) < 2 or len(images) % 2:
            raise SampleError(
                f"interpolate takes images in pairs: got {len(images)} from --indices/"
                "--source_ids; give an even number (A,B[,C,D...]), or none for random vectors"
            )
        z = encode_means(model, images, o.batch_size)
        for a in range(0, len(images), 2):
            path = decode(model, analysis.interpolate(z[a], z[a + 1], o.steps, o.method), o)
            rows.append(np.concatenate([images[a : a + 1], path, images[a + 1 : a + 2]]))
    else:
        rng = np.random.default_rng(o.seed)
        ends = rng.standard_normal((o.n, 2, model.network.z_dim)) * o.temperature
        for a, b in ends:
            rows.append(decode(model, analysis.interpolate(a, b, o.steps, o.method), o))
    return Picture(np.concatenate(rows), cols=len(rows[0]))


def attribute(model: VAE, o: Options) -> Picture:
    names = dataset.attribute_names(o.data_dir)
    if not names:
        raise SampleError(
            f"the dataset {o.data_dir} has no attribute labels; attribute vectors need a "
            "labelled source such as CelebA (list_attr_celeba.txt)"
        )
    if o.attribute not in names:
        raise SampleError(f"--attribute={o.attribute} is not in the dataset; use one of {names}")
    vector = attribute_vectors(model, o, names)[names.index(o.attribute)]  # (z_dim,)
    if not np.isfinite(vector).all():
        raise SampleError(
            f"--attribute={o.attribute}: the {o.attribute_split} images either all have it or "
            "none do, so no direction can be measured; use another --attribute_split"
        )
    images = chosen_images(model, o, data_split(o), o.n)
    z = encode_means(model, images, o.batch_size)  # (n, z_dim)
    shifted = z[:, None, :] + np.asarray(o.strengths)[None, :, None] * vector  # (n, S, z_dim)
    decoded = decode(model, shifted.reshape(-1, z.shape[1]), o).reshape(
        len(images), len(o.strengths), *images.shape[1:]
    )  # (n, S, H, W, C)
    rows = np.concatenate([images[:, None], decoded], axis=1)  # (n, 1 + S, H, W, C)
    return Picture(rows.reshape(-1, *images.shape[1:]), cols=1 + len(o.strengths))


def traverse(model: VAE, o: Options) -> Picture:
    split = data_split(o)
    z_mean, z_log_var, _ = encode_split(model, o, split)
    kl = analysis.kl_per_dimension(z_mean, z_log_var)  # (z_dim,)
    dims = np.argsort(-kl, kind="stable")[: o.num_dims]
    base = np.zeros(model.network.z_dim)
    if o.indices or o.source_ids:  # around the first chosen image instead of the prior mean
        base = encode_means(model, chosen_images(model, o, split, 0)[:1], o.batch_size)[0]
    values = np.linspace(-o.traverse_range, o.traverse_range, o.steps)
    z = np.repeat(base[None, None], len(dims), axis=0).repeat(o.steps, axis=1)  # (d, steps, z)
    z[np.arange(len(dims)), :, dims] = values
    print(
        "traverse: dimensions " + ", ".join(f"{d} (KL {kl[d]:.3g})" for d in dims), file=sys.stderr
    )
    return Picture(decode(model, z.reshape(-1, z.shape[-1]), o), cols=o.steps)


def boundary(model: VAE, o: Options) -> Picture:
    rng = np.random.default_rng(o.seed)
    z_dim = model.network.z_dim
    rows = [rng.uniform(0.0, b, (o.n, z_dim)) for b in o.boundaries]
    rows.append(rng.standard_normal((o.n, z_dim)))
    return Picture(decode(model, np.concatenate(rows), o), cols=o.n)


def denoise(model: VAE, o: Options) -> Picture:
    if o.corruption == "mask" and o.noise > 1:
        raise SampleError(f"--noise={o.noise}: a mask's side is a fraction of the image, <= 1")
    split = data_split(o)
    images = chosen_images(model, o, split, o.n)
    corrupted = corrupt(images, o.corruption, o.noise, np.random.default_rng(o.seed))
    restored = in_batches(model.reconstruct, corrupted, o.batch_size)
    before, after = analysis.psnr(images, corrupted), analysis.psnr(images, restored)
    results = {
        "split": split, "images": len(images), "corruption": o.corruption, "noise": o.noise,
        "psnr_corrupted_db": float(before.mean()), "psnr_reconstructed_db": float(after.mean()),
    }  # fmt: skip
    print(f"denoise: PSNR {results['psnr_corrupted_db']:.2f} dB corrupted -> "
          f"{results['psnr_reconstructed_db']:.2f} dB reconstructed", file=sys.stderr)  # fmt: skip
    return Picture(np.concatenate([images, corrupted, restored]), len(images), results)


def stats(model: VAE, o: Options) -> Picture:
    split = data_split(o)
    z_mean, z_log_var, _ = encode_split(model, o, split)
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
    print(f"stats: {split}, {len(z_mean)} images: KL {kl.sum():.3g} nats, "
          f"{int(active.sum())}/{len(kl)} active units", file=sys.stderr)  # fmt: skip
    return Picture(stats_chart(kl, std)[None], cols=1, results=results)


MODE_FUNCTIONS: dict[str, Callable[[VAE, Options], Picture]] = {
    "random": random_faces, "reconstruct": reconstruct, "interpolate": interpolate,
    "attribute": attribute, "traverse": traverse, "boundary": boundary, "denoise": denoise,
    "stats": stats,
}  # fmt: skip


# --------------------------------------------------------------------------- data


def data_split(o: Options) -> str:
    """--split; when it was not given and the dataset lacks it, the first split it has."""
    return resolve_split(o.data_dir, o.split, "--split", fallback=not o.split_given)


def resolve_split(data_dir: str, split: str, flag: str, fallback: bool) -> str:
    available = present_splits(data_dir)
    if split in available:
        return split
    if fallback:
        for other in FALLBACK_SPLITS:
            if other in available:
                print(f"sample.py: the dataset has no {split!r} split; using {other!r}",
                      file=sys.stderr)  # fmt: skip
                return other
    raise SampleError(
        f"{flag}={split}: the dataset {data_dir} has no such split; use one of {available}"
    )


def present_splits(data_dir: str) -> list[str]:
    splits = read_manifest(data_dir).get("splits", {})
    return sorted(name for name, info in splits.items() if info.get("num_examples"))


def check_shape(model: VAE, data_dir: str) -> None:
    shape = tuple(dataset.image_shape(data_dir))
    if shape != tuple(model.network.image_shape):
        raise SampleError(
            f"--data_dir={data_dir} holds {shape} images but the model takes "
            f"{tuple(model.network.image_shape)}: pass the dataset the run was trained on"
        )


def chosen_images(model: VAE, o: Options, split: str, n: int) -> np.ndarray:
    """--indices / --source_ids images of the split if given, else its first n: (k, H, W, C)."""
    check_shape(model, o.data_dir)
    total = dataset.num_examples(o.data_dir, split)
    bad = [i for i in o.indices if not 0 <= i < total]
    if bad:
        raise SampleError(f"--indices={bad}: the {split} split has {total} images (0..{total - 1})")
    positions = o.indices
    if not (o.indices or o.source_ids):
        if n > total:
            print(f"sample.py: the {split} split has only {total} images", file=sys.stderr)
        positions = list(range(min(n, total)))
    wanted = set(positions) | set(o.source_ids)
    found: dict = {}  # position or source id -> uint8 image
    with dataset.explain_corrupt_shards(o.data_dir):  # a corrupt record: name the shard
        for position, example in enumerate(dataset.examples(o.data_dir, split)):
            for key in (position, example["source_id"].numpy().decode()):
                if key in wanted:
                    found[key] = example["image"].numpy()
            if len(found) == len(wanted):
                break
    missing = [s for s in o.source_ids if s not in found]
    if missing:
        raise SampleError(
            f"--source_ids={missing} are not in the {split} split; pass names as listed in the "
            "source (e.g. 000001.jpg) or positions with --indices"
        )
    return np.stack([found[k] for k in positions + o.source_ids]).astype(np.float32) / 255.0


def batches(o: Options, split: str, with_labels: bool) -> tf.data.Dataset:
    """Up to --max_examples images of a split in a fixed order, in batches."""
    ds = dataset.load(
        o.data_dir, split, o.batch_size, training=False, cache="none", with_labels=with_labels
    )
    if o.max_examples:
        ds = ds.unbatch().take(o.max_examples).batch(o.batch_size)
    return ds


def encode_split(
    model: VAE, o: Options, split: str, with_labels: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """z_mean, z_log_var (N, z_dim) and attributes (N, A) or None of a split's images."""
    check_shape(model, o.data_dir)
    progress = Progress(limited(dataset.num_examples(o.data_dir, split), o), f"encode {split}")
    means, log_vars, labels = [], [], []
    with dataset.explain_corrupt_shards(o.data_dir):  # a corrupt record: name the shard
        for batch in batches(o, split, with_labels):
            images, attributes = batch if with_labels else (batch, None)
            z_mean, z_log_var = model.encode(images)
            means.append(z_mean.numpy())
            log_vars.append(z_log_var.numpy())
            if with_labels:
                labels.append(attributes.numpy())
            progress.update(len(z_mean))
    progress.close()
    print(f"encoded {progress.count} {split} images in {progress.elapsed:.1f}s", file=sys.stderr)
    attributes = np.concatenate(labels) if with_labels else None
    return np.concatenate(means), np.concatenate(log_vars), attributes


def attribute_vectors(model: VAE, o: Options, names: list[str]) -> np.ndarray:
    """(A, z_dim) vectors of the attribute split, cached in the workdir for these weights.

    The cache is optional: a workdir that cannot be written (read-only) or an unreadable
    cache file costs a recomputation, never the run.
    """
    split = resolve_split(o.data_dir, o.attribute_split, "--attribute_split", fallback=False)
    path = os.path.join(o.workdir, f"attribute_vectors_{split}.npz")
    key = f"{fingerprint.of_weights(model)}:{os.path.abspath(o.data_dir)}:{o.max_examples}"
    cached = read_cached_vectors(path, key, names)
    if cached is not None:
        return cached
    z_mean, _, attributes = encode_split(model, o, split, with_labels=True)
    vectors = analysis.attribute_vectors(z_mean, attributes)
    tmp = os.path.join(o.workdir, f".tmp-{os.getpid()}-attribute_vectors.npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, vectors=vectors, names=np.array(names), key=np.array(key))
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        reason = e.strerror or str(e)
        print(
            f"sample.py: attribute vectors not cached in {path} ({reason}): computed again "
            "next time",
            file=sys.stderr,
        )
        return vectors
    print(f"attribute vectors of {len(z_mean)} {split} images cached in {path}", file=sys.stderr)
    return vectors


def read_cached_vectors(path: str, key: str, names: list[str]) -> np.ndarray | None:
    """The cached vectors when the file exists, is readable and matches; else None."""
    try:
        with np.load(path) as cached:
            if str(cached["key"]) == key and list(cached["names"]) == names:
                return cached["vectors"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # damaged
        print(f"sample.py: ignoring the unreadable cache {path} ({e})", file=sys.stderr)
    return None


# --------------------------------------------------------------------------- helpers


def in_batches(fn: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
    """fn applied to x in batches, as one numpy array."""
    return np.concatenate(
        [np.asarray(fn(tf.constant(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
    )


def limited(total: int, o: Options) -> int:
    """The number of images a pass over a split reads under --max_examples."""
    return min(total, o.max_examples) if o.max_examples else total


def prior_samples(model: VAE, n: int, o: Options) -> np.ndarray:
    """n images from --prior (N(0, T^2 I), or the run's mixture on training codes), seeded
    by --seed: (n, H, W, C) in [0, 1]."""
    gmm = None
    if o.prior == "gmm":
        check_shape(model, o.data_dir)
        gmm = priors.workdir_gmm(model, o.workdir, o.data_dir, batch_size=o.batch_size)
    z = priors.latents(o.prior, n, model.network.z_dim, o.seed, o.temperature, gmm)
    return decode(model, z, o)


def encode_means(model: VAE, images: np.ndarray, batch_size: int) -> np.ndarray:
    return in_batches(lambda x: model.encode(x)[0], images, batch_size).astype(np.float64)


def decode(model: VAE, z: np.ndarray, o: Options) -> np.ndarray:
    """Latents (N, z_dim) -> images (N, H, W, C) in [0, 1]."""
    return in_batches(model.decode, np.asarray(z, np.float32), o.batch_size)


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


def save_png(image: np.ndarray, path: str) -> None:
    """One image (H, W, C) in [0, 1] as a PNG, written to a temporary name and renamed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    pixels = to_uint8(image)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(tmp, "PNG")
    os.replace(tmp, path)


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


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
