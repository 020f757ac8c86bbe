"""New faces and latent-space experiments from a trained run, restored from its workdir alone.

    python sample.py --workdir runs/vae256 --mode random --out faces.png
    python sample.py --workdir runs/vae256 --mode attribute --attribute Smiling
    python sample.py --workdir runs/vae256 --mode eval --inception_weights inception.h5

Every mode writes one PNG grid (default <workdir>/<mode>.png) and prints its path;
stats, denoise and eval also write a JSON file beside it. Grid layouts, rows x columns:

  random       faces from z ~ N(0, T^2 I), row-major in a near-square grid (--n faces)
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
  eval         two rows of real images above two rows of generated ones; one JSON line out

The same workdir, mode and --seed give identical files.
"""

from model.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from model import analysis
from model import workdir as wd
from model.console import Progress
from model.grid import save_grid, to_uint8
from model.vae import VAE
from pipeline import dataset
from pipeline.schema import DatasetError, read_manifest, write_json_atomic

MODES = (
    "random", "reconstruct", "interpolate", "attribute", "traverse", "boundary", "denoise",
    "stats", "eval",
)  # fmt: skip

# What and where.
flags.DEFINE_string("workdir", None, "Run directory written by train.py (config + checkpoint).")
flags.DEFINE_enum("mode", "random", MODES, "What to make; grid layouts are listed above.")
flags.DEFINE_string("out", None, "PNG to write (default <workdir>/<mode>.png).")
flags.DEFINE_integer("scale", 1, "Integer enlargement of the grid (nearest neighbour).")
flags.DEFINE_integer("seed", 0, "Seed of every random draw: the same seed, the same files.")
flags.DEFINE_integer("n", 0, "Faces, images, rows or columns by mode (0: the mode's default).")
flags.DEFINE_integer("batch_size", 64, "Images per encoder/decoder call.")
# Data.
flags.DEFINE_string("data_dir", None, "Dataset (default: the one the run was trained on).")
flags.DEFINE_string("split", "test", "Split to take images from (falls back if absent).")
flags.DEFINE_list("indices", [], "Positions of images in --split (0-based), e.g. 3,17.")
flags.DEFINE_list("source_ids", [], "Source file names of images in --split, e.g. 000001.jpg.")
flags.DEFINE_integer("max_examples", 5000, "Images encoded by stats/traverse/eval (0: all).")
# Sampling and latent paths.
flags.DEFINE_float("temperature", 1.0, "Std T of the prior samples z ~ N(0, T^2 I).")
flags.DEFINE_integer("steps", 8, "Points along an interpolation or traversal.")
flags.DEFINE_enum("method", "spherical", ["linear", "spherical"], "Interpolation path.")
flags.DEFINE_string("save_individual", None, "random: also write each face as a PNG here.")
# Attributes and traversals.
flags.DEFINE_string("attribute", "Smiling", "Attribute name from the dataset's manifest.")
flags.DEFINE_string("attribute_split", "train", "Labelled split the attribute vectors come from.")
flags.DEFINE_list("strengths", ["-2", "-1", "0", "1", "2"], "Multiples of the attribute vector.")
flags.DEFINE_integer("num_dims", 8, "traverse: latent dimensions shown.")
flags.DEFINE_float("traverse_range", 3.0, "traverse: each dimension goes from -this to +this.")
# Boundary and denoise.
flags.DEFINE_list("boundaries", ["0.5", "1", "2", "5", "10", "50"], "boundary: values of b.")
flags.DEFINE_enum("corruption", "gaussian", ["gaussian", "mask"], "denoise: noise or a square.")
flags.DEFINE_float("noise", 0.2, "denoise: Gaussian std, or the mask's side as image fraction.")
# Evaluation.
flags.DEFINE_string(
    "inception_weights", "imagenet", "eval: imagenet (downloads), a local .h5, or none (tests)."
)
flags.DEFINE_integer("fid_samples", 1000, "eval: generated and real images for FID/KID.")
flags.DEFINE_integer("kid_subsets", 100, "eval: random subsets averaged for KID.")

flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS

DEFAULT_N = {"random": 64, "reconstruct": 16, "interpolate": 4, "attribute": 4,
             "boundary": 8, "denoise": 8}  # fmt: skip
GRID_COLS = 8  # reconstruct and eval wrap their rows here
EVAL_GRID_IMAGES = 16  # real and generated images each in the eval grid
FALLBACK_SPLITS = ("test", "validation", "train")
WEIGHTS_HINT = "pass --inception_weights /path/to/" + analysis.INCEPTION_WEIGHTS_FILE


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
    inception_weights: str | None
    fid_samples: int
    kid_subsets: int


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        model, config = wd.restore(FLAGS.workdir)
    except wd.WorkdirError as e:
        sys.exit(f"--workdir={FLAGS.workdir}: {e}")
    options = read_options(config)
    out = FLAGS.out or os.path.join(FLAGS.workdir, f"{FLAGS.mode}.png")
    keras.utils.set_random_seed(options.seed)  # any draw not seeded explicitly below

    try:
        picture = MODE_FUNCTIONS[options.mode](model, options)
    except SampleError as e:
        sys.exit(f"sample.py --mode={options.mode}: {e}")
    except DatasetError as e:  # e.g. the dataset moved since training
        sys.exit(f"--data_dir={options.data_dir}: {e} (--data_dir defaults to the run's dataset)")

    save_grid(picture.images, out, cols=picture.cols, scale=FLAGS.scale)
    if picture.results is None:
        print(out)
        return
    json_path = os.path.splitext(out)[0] + ".json"
    results = {**picture.results, "grid": out, "json": json_path}
    write_json_atomic(json_path, results)
    if options.mode == "eval":  # one line of results, for logs and scripts
        print(json.dumps(results))
    else:
        print(out)
        print(json_path)


# --------------------------------------------------------------------------- options


def read_options(config: dict) -> Options:
    """The flags as plain values, checked; stops with a message naming a bad flag."""
    data_dir = FLAGS.data_dir or config.get("flags", {}).get("data_dir")
    if not data_dir:
        sys.exit(f"--data_dir is needed: {FLAGS.workdir}'s config.json does not name a dataset")
    return Options(
        workdir=FLAGS.workdir, mode=FLAGS.mode, seed=FLAGS.seed,
        n=FLAGS.n or DEFAULT_N.get(FLAGS.mode, 0), batch_size=FLAGS.batch_size,
        data_dir=data_dir, split=FLAGS.split, split_given=FLAGS["split"].present,
        indices=parse_list("indices", FLAGS.indices, int), source_ids=list(FLAGS.source_ids),
        max_examples=FLAGS.max_examples, temperature=FLAGS.temperature, steps=FLAGS.steps,
        method=FLAGS.method, save_individual=FLAGS.save_individual, attribute=FLAGS.attribute,
        attribute_split=FLAGS.attribute_split,
        strengths=parse_list("strengths", FLAGS.strengths, float), num_dims=FLAGS.num_dims,
        traverse_range=FLAGS.traverse_range,
        boundaries=parse_list("boundaries", FLAGS.boundaries, float),
        corruption=FLAGS.corruption, noise=FLAGS.noise,
        inception_weights=None if FLAGS.inception_weights == "none" else FLAGS.inception_weights,
        fid_samples=FLAGS.fid_samples, kid_subsets=FLAGS.kid_subsets,
    )  # fmt: skip


def parse_list(name: str, values: list[str], kind: type) -> list:
    try:
        return [kind(v) for v in values]
    except ValueError:
        sys.exit(f"--{name}={','.join(values)}: give comma-separated {kind.__name__} values")


for _name in ("scale", "batch_size", "num_dims", "fid_samples", "kid_subsets"):
    flags.register_validator(_name, lambda v: v >= 1, message=f"--{_name} must be at least 1")
for _name in ("n", "max_examples"):
    flags.register_validator(_name, lambda v: v >= 0, message=f"--{_name} must be 0 or more")
flags.register_validator("steps", lambda v: v >= 2, "--steps must be at least 2 (both ends)")
flags.register_validator("temperature", lambda v: v > 0, "--temperature must be positive")
flags.register_validator("noise", lambda v: v > 0, "--noise must be positive")


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


def evaluate(model: VAE, o: Options) -> Picture:
    split = data_split(o)
    check_shape(model, o.data_dir)
    metrics, mse, psnr_sum, count, real = {}, 0.0, 0.0, 0, []
    for metric in model.metrics:
        metric.reset_state()
    progress = Progress(limited(dataset.num_examples(o.data_dir, split), o), f"eval {split}")
    for images in batches(o, split, with_labels=False):
        metrics = {k: float(v) for k, v in model.test_step(images).items()}
        recon = model.reconstruct(images).numpy()
        images = images.numpy()
        mse += float(np.square(recon - images).mean(axis=(1, 2, 3)).sum())
        psnr_sum += float(analysis.psnr(images, recon).sum())
        count += len(images)
        real.extend(images[: o.fid_samples - len(real)])  # the first --fid_samples images
        progress.update(len(images))
    progress.close()
    n = len(real)
    real_images = np.stack(real)
    generated = prior_samples(model, n, o)
    results = {
        "split": split, "num_examples": count, "elbo_nats": metrics["elbo"],
        "bits_per_dim": metrics["bits_per_dim"], "loss": metrics["loss"],
        "reconstruction_loss": metrics["reconstruction_loss"], "kl_loss": metrics["kl_loss"],
        "mse": mse / count, "psnr_db": psnr_sum / count, "temperature": o.temperature,
        **sample_quality(real_images, generated, o),
    }  # fmt: skip
    shown = min(EVAL_GRID_IMAGES, n)
    rows = [real_images[:shown], generated[:shown]]
    return Picture(stack_rows(rows, GRID_COLS), cols=GRID_COLS, results=results)


MODE_FUNCTIONS: dict[str, Callable[[VAE, Options], Picture]] = {
    "random": random_faces, "reconstruct": reconstruct, "interpolate": interpolate,
    "attribute": attribute, "traverse": traverse, "boundary": boundary, "denoise": denoise,
    "stats": stats, "eval": evaluate,
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
    """(A, z_dim) vectors of the attribute split, cached in the workdir for these weights."""
    split = resolve_split(o.data_dir, o.attribute_split, "--attribute_split", fallback=False)
    path = os.path.join(o.workdir, f"attribute_vectors_{split}.npz")
    key = f"{weights_fingerprint(model)}:{os.path.abspath(o.data_dir)}:{o.max_examples}"
    if os.path.isfile(path):
        with np.load(path) as cached:
            if str(cached["key"]) == key and list(cached["names"]) == names:
                return cached["vectors"]
    z_mean, _, attributes = encode_split(model, o, split, with_labels=True)
    vectors = analysis.attribute_vectors(z_mean, attributes)
    tmp = os.path.join(o.workdir, f".tmp-{os.getpid()}-attribute_vectors.npz")
    with open(tmp, "wb") as f:
        np.savez(f, vectors=vectors, names=np.array(names), key=np.array(key))
    os.replace(tmp, path)
    print(f"attribute vectors of {len(z_mean)} {split} images cached in {path}", file=sys.stderr)
    return vectors


def weights_fingerprint(model: VAE) -> str:
    """A hash of the weights: a cache made by other weights (training went on) is stale."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]


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
    """n images from z ~ N(0, T^2 I), seeded by --seed: (n, H, W, C) in [0, 1]."""
    z = np.random.default_rng(o.seed).standard_normal((n, model.network.z_dim))
    return decode(model, z * o.temperature, o)


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


def sample_quality(real: np.ndarray, generated: np.ndarray, o: Options) -> dict:
    """FID and KID of generated against real images, or None with the reason."""
    weights = o.inception_weights
    results = {"fid_samples": len(real), "inception_weights": weights or "none (random)"}
    try:
        inception = analysis.load_inception(weights)
    except analysis.InceptionWeightsError as e:
        print(f"FID/KID left out: {e}; {WEIGHTS_HINT}", file=sys.stderr)
        return {**results, "fid": None, "kid": None, "kid_std": None, "fid_error": str(e)}
    if len(real) < 2:
        raise SampleError(f"FID/KID need at least 2 images; the split gave {len(real)}")
    feats_real = analysis.inception_features(real, model=inception, batch_size=o.batch_size)
    feats_fake = analysis.inception_features(generated, model=inception, batch_size=o.batch_size)
    kid, kid_std = analysis.kernel_inception_distance(
        feats_real, feats_fake, num_subsets=o.kid_subsets, seed=o.seed
    )
    return {**results, "fid": analysis.frechet_distance(feats_real, feats_fake),
            "kid": kid, "kid_std": kid_std}  # fmt: skip


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
    # absl's --help prints the __main__ module's docstring: the console script's wrapper has
    # none, so lend it this one with the grid layouts.
    main_module = sys.modules["__main__"]
    if not main_module.__doc__:
        main_module.__doc__ = __doc__
    app.run(main)


if __name__ == "__main__":
    run()
