"""Evaluation of a trained run: every number in one JSON line, each with how it was measured.

    run(EvalConfig(workdir="runs/vae256"))   # what evaluate.py calls

Reported (keys of the result):

- elbo_nats, bits_per_dim, loss, reconstruction_loss, kl_loss: the model's own losses
  (VAE.compute_losses, one z sample per image drawn from --seed) averaged over the split
  (--max_examples images); mse and psnr_db of the deterministic reconstructions (z_mean).
- active_units: latent dimensions whose z_mean varies over the images (variance above
  analysis.ACTIVE_UNIT_THRESHOLD), from the first MAX_ACTIVE_UNIT_CODES evaluated images;
  the AE's codes are measured the same way.
- fid, kid, kid_std with fid_protocol: the Inception (model/inception.py; comparable with
  published numbers only for TTUR's graph), the numbers of generated and real images
  (--fid_samples each, capped to the split), the prior they were sampled from, the resize
  and the dataset's crop. Offline fid is null and fid_error says why; nothing else is lost.
  Real-image statistics are cached per dataset split in --cache_dir, keyed by the shards'
  sha256s (a re-prepared dataset is measured again) and the network.
- judge_*: from the dataset's own attribute classifier (model/judge.py), null with the
  command to train it when there is none. judge_fd: Fréchet distance of generated and test
  images in the judge's feature space; judge_recon_accuracy (beside judge_real_accuracy on
  the originals): attribute accuracy of reconstructions, mean over non-constant attributes;
  judge_edit_add_success / judge_edit_remove_success: how often adding an attribute's
  vector (mean training code with it minus without it) to a test image lacking it makes
  the judge say yes, and subtracting it from one that has it makes the judge say no.

Memory stays bounded by the flags, not the dataset: images flow through in batches and
only features are kept (at most --fid_samples x 2048 floats per set).

One module, over 500 lines, because every number comes from the same passes over the
split and the samples: splitting it would read the images again for each group of numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import time
import zipfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facevae.model import analysis, codes, inception, judge
from facevae.model import prior as priors  # `prior` is also a setting's name
from facevae.model import workdir as wd
from facevae.model.grid import to_uint8
from facevae.pipeline import dataset, files, schema
from facevae.pipeline.bench import peak_rss_mb
from facevae.pipeline.progress import Progress

RESULTS_FILE = "eval.json"
FID_STATS_SUBDIR = "fid_stats"
MAX_FID_SAMPLES = 100_000  # 2 x 100k x 2048 float32 features = 1.6 GB: the memory ceiling
INCEPTION_SOURCES = ("ttur", "keras", "none")
# z_mean rows kept for active_units: 65,536 x z_dim 256 float32 = 64 MB at most.
MAX_ACTIVE_UNIT_CODES = 65_536
MAX_TEMPERATURE = 10.0  # a latent std 10x the prior's decodes noise; beyond it overflows
MAX_SEED = 2**32 - 1
MAX_BATCH = 4096
MAX_COMPONENTS = 1000


class EvaluationError(ValueError):
    """Bad settings or inputs: the message names the setting or file and the fix."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Every setting of an evaluation; the names are evaluate.py's flags."""

    workdir: str
    data_dir: str | None = None  # None: the dataset the run was trained on
    split: str = "test"
    batch_size: int = 64
    max_examples: int = 0  # images of the split for the ELBO, PSNR and judge (0: all)
    fid_samples: int = 10_000  # generated and real images each, capped to the split
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    inception_weights: str = "ttur"  # ttur, keras, none, or a path (.pb, .tgz, .h5)
    cache_dir: str | None = None  # None: files.cache_dir()
    prior: str = "normal"
    temperature: float = 1.0
    gmm_components: int = priors.DEFAULT_COMPONENTS
    judge_dir: str | None = None  # None: <data_dir>/judge
    edit_images: int = 256  # test images whose codes are edited per attribute
    seed: int = 0
    out: str | None = None  # None: <workdir>/eval.json

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "fid_samples": self.fid_samples,
            "kid_subsets": self.kid_subsets,
            "kid_subset_size": self.kid_subset_size,
            "gmm_components": self.gmm_components,
        }
        for name, value in positive.items():
            if value < 1:
                raise EvaluationError(f"`{name}`={value}: give a whole number of at least 1")
        for name in ("max_examples", "edit_images"):
            if getattr(self, name) < 0:
                raise EvaluationError(f"`{name}`={getattr(self, name)}: give 0 or more")
        if self.fid_samples > MAX_FID_SAMPLES:
            raise EvaluationError(
                f"`fid_samples`={self.fid_samples}: at most {MAX_FID_SAMPLES} (the features of "
                "both sets are kept in memory); published FIDs use 10000 or 50000"
            )
        if not (math.isfinite(self.temperature) and 0 < self.temperature <= MAX_TEMPERATURE):
            raise EvaluationError(
                f"`temperature`={self.temperature:.3g}: give a number in (0, {MAX_TEMPERATURE}]"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise EvaluationError(f"`seed`={self.seed}: give 0..{MAX_SEED}")
        if self.batch_size > MAX_BATCH or self.gmm_components > MAX_COMPONENTS:
            raise EvaluationError(
                f"`batch_size` at most {MAX_BATCH:,}, `gmm_components` at most {MAX_COMPONENTS}"
            )
        limits = {"kid_subsets": 10_000, "kid_subset_size": MAX_FID_SAMPLES,
                  "edit_images": 100_000, "max_examples": 1 << 40}  # fmt: skip
        for name, most in limits.items():
            if getattr(self, name) > most:
                raise EvaluationError(f"`{name}`={getattr(self, name)}: at most {most:,}")
        if self.prior not in priors.PRIORS:
            raise EvaluationError(f"`prior`={self.prior}: use one of {', '.join(priors.PRIORS)}")


def run(config: EvalConfig, explain: Callable[[Exception], str] = str) -> dict[str, Any]:
    """Restores the run, evaluates it and writes the results (JSON) to config.out.

    `explain` words the reasons of numbers left out (fid_error, judge_error): a command
    line passes console.one_line, which adds the command that fixes one.
    """
    model, run_config = wd.restore(config.workdir)
    data_dir = config.data_dir or run_config.flags.data_dir
    if not data_dir:
        raise EvaluationError(
            f"`data_dir` is needed: {wd.config_path(config.workdir)} names no dataset"
        )
    manifest = schema.Manifest.read(data_dir)
    out = config.out or os.path.join(config.workdir, RESULTS_FILE)
    if os.path.isdir(out):
        raise EvaluationError(f"`out`={out} is a folder: give a file name such as eval.json")
    folder = os.path.dirname(os.path.abspath(out))
    try:  # checked before the evaluation, not after its minutes of work
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise EvaluationError(
            f"`out`={out}: cannot write in {folder} ({e.strerror}); give `out` a writable file"
        ) from e
    results = evaluate(model, config, manifest, explain)
    results["json"] = out
    files.write_json(out, results)
    wd.note_output(config.workdir, out)  # an overwrite takes it for part of the run
    return results


# --------------------------------------------------------------------------- the evaluation


def evaluate(
    model: keras.Model,
    config: EvalConfig,
    manifest: schema.Manifest,
    explain: Callable[[Exception], str] = str,
) -> dict[str, Any]:
    """Every metric of the module doc for a restored model; nothing but caches is written."""
    start = time.perf_counter()
    split = config.split
    try:
        total = manifest.num_examples(split)
    except schema.DatasetError as e:  # it lists the splits there are
        raise EvaluationError(f"`split`={split}: {e}") from e
    manifest.check_image_shape(model.network.image_shape)
    shape = manifest.image_shape
    cache_dir = config.cache_dir or files.cache_dir()
    network, fid_error = _feature_network(config.inception_weights, cache_dir)
    the_judge, judge_error = _judge(config, manifest, explain)
    n_fid = min(config.fid_samples, total)

    recon = _reconstruction_pass(model, manifest, split, config, the_judge, n_fid)
    results: dict[str, Any] = {
        "workdir": config.workdir,
        "data_dir": manifest.data_dir,
        "split": split,
        **recon.metrics,
        "prior": config.prior,
        "temperature": config.temperature,
        "seed": config.seed,
    }

    # The judge's edits and the mixture prior both come from the first training codes:
    # encode them once, and only if a cache in the workdir does not hold the result.
    vectors = gmm = train = None
    if the_judge is not None:
        vectors = codes.cached_attribute_vectors(model, config.workdir, manifest)
    if config.prior == "gmm":
        gmm = priors.cached_gmm(model, config.workdir, manifest, components=config.gmm_components)
    if (the_judge is not None and vectors is None) or (config.prior == "gmm" and gmm is None):
        train = codes.encode_split(
            model,
            manifest,
            "train",
            batch_size=config.batch_size,
            limit=codes.TRAIN_CODES,
            with_labels=bool(manifest.attribute_names),
        )
    if the_judge is not None and vectors is None:
        vectors = codes.attribute_vectors(model, config.workdir, manifest, codes=train)
    if config.prior == "gmm" and gmm is None:
        gmm = priors.workdir_gmm(
            model, config.workdir, manifest, components=config.gmm_components, codes=train
        )
    z = priors.latents(
        config.prior, n_fid, model.network.z_dim, config.seed, config.temperature, gmm
    )
    generated_inception, generated_judge = _generated_features(model, z, config, network, the_judge)

    protocol = {
        **(network.protocol() if network else {"network": None, "comparable": False}),
        "generated": n_fid,
        "real": n_fid,
        "real_split": split,
        "prior": config.prior,
        "temperature": config.temperature,
        "image_size": list(shape[:2]),
        "crop": manifest.crop,
        "dataset_resample": manifest.resample,
        "kid_subsets": config.kid_subsets,
        "kid_subset_size": config.kid_subset_size,
    }
    fid = {"fid": None, "kid": None, "kid_std": None, "fid_error": fid_error}
    if network is not None:
        if n_fid < 2:
            fid["fid_error"] = f"FID needs at least 2 images; the {split} split has {total}"
        else:
            mu, cov, real, source = _real_statistics(
                network, manifest, split, n_fid, cache_dir, config.batch_size
            )
            protocol["real_statistics"] = source
            gen_mu, gen_cov = analysis.gaussian_stats(generated_inception)
            fid["fid"] = analysis.frechet_distance_from_stats(gen_mu, gen_cov, mu, cov)
            fid["kid"], fid["kid_std"] = analysis.kernel_inception_distance(
                real, generated_inception, config.kid_subsets, config.kid_subset_size, config.seed
            )
    results.update(fid)
    results["fid_protocol"] = protocol

    results.update(
        _judge_results(model, the_judge, judge_error, recon, generated_judge, vectors, config)
    )
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["peak_rss_mb"] = round(peak_rss_mb())
    return results


def _feature_network(source: str, cache_dir: str) -> tuple[inception.FeatureNetwork | None, str]:
    """The Inception, or None and the reason FID is left out; a bad path is an error."""
    try:
        return inception.load(source, cache_dir), None
    except inception.NoInceptionError as e:
        print(f"FID/KID left out: {e}", file=sys.stderr)
        return None, str(e)
    except inception.InceptionFileError as e:
        raise EvaluationError(f"`inception_weights`={source}: {e}") from e


def _judge(
    config: EvalConfig, manifest: schema.Manifest, explain: Callable[[Exception], str]
) -> tuple[judge.Judge | None, str | None]:
    """The dataset's judge, or None and why judge_* are left out (printed, and in results)."""
    directory = config.judge_dir or judge.default_dir(manifest.data_dir)
    try:
        found = judge.load(directory, manifest)
    except judge.JudgeError as e:
        print(f"judge_* left out: {explain(e)}", file=sys.stderr)
        return None, explain(e)
    return found, None


@dataclasses.dataclass
class _Reconstructions:
    """What one pass over the evaluated split leaves behind: numbers and small arrays."""

    metrics: dict[str, Any]
    judge_features: np.ndarray | None = None  # (n_fid, FEATURES) of the first real images
    real_right: np.ndarray | None = None  # (A,) judge right about the originals
    recon_right: np.ndarray | None = None  # (A,) judge right about the reconstructions
    known: np.ndarray | None = None  # (A,) labels known
    edit_codes: np.ndarray | None = None  # (E, z_dim) z_mean of the first edit_images images
    edit_labels: np.ndarray | None = None  # (E, A)


def _reconstruction_pass(
    model: keras.Model,
    manifest: schema.Manifest,
    split: str,
    config: EvalConfig,
    the_judge: judge.Judge | None,
    n_fid: int,
) -> _Reconstructions:
    """ELBO, MSE and PSNR over the split, and the judge's view of originals and reconstructions."""
    labelled = the_judge is not None
    losses = _losses_function(model)
    sums: dict[str, float] = {}
    decode = _compiled(model, "decode")
    squared_error, psnr_sum, count = 0.0, 0.0, 0
    out = _Reconstructions(metrics={})
    features, edit_codes, code_labels = [], [], []
    z_means = []  # (B, z_dim) each, MAX_ACTIVE_UNIT_CODES rows in all at most
    for batch in codes.batches(
        model,
        manifest,
        split,
        batch_size=config.batch_size,
        limit=config.max_examples,
        with_labels=labelled,
        label=f"evaluate {split}",
    ):
        images, z_mean = batch.images, batch.z_mean  # (B, H, W, C) in [0, 1], (B, z_dim)
        seed = tf.constant([config.seed, count], tf.int32)  # per batch, fixed by `seed`
        for name, value in losses(images, z_mean, batch.z_log_var, seed).items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(images)
        recon = decode(z_mean).numpy()  # model.reconstruct, keeping the codes
        z_means.append(z_mean.numpy()[: max(0, MAX_ACTIVE_UNIT_CODES - count)])
        pixels = images.numpy()
        squared_error += float(np.square(recon - pixels).mean(axis=(1, 2, 3)).sum())
        psnr_sum += float(analysis.psnr(pixels, recon).sum())
        if labelled:
            labels = batch.labels  # (B, A) 1, 0 or -1
            real_features, real_p = the_judge(pixels)
            _, recon_p = the_judge(recon)
            known = labels >= 0
            out.real_right = _add(out.real_right, ((real_p > 0.5) == labels) & known)
            out.recon_right = _add(out.recon_right, ((recon_p > 0.5) == labels) & known)
            out.known = _add(out.known, known)
            features.append(real_features[: max(0, n_fid - count)])
            wanted = max(0, config.edit_images - count)
            if wanted:
                edit_codes.append(z_mean[:wanted].numpy())
                code_labels.append(labels[:wanted])
        count += len(pixels)
    values = {name: total / count for name, total in sums.items()}
    out.metrics = {
        "num_examples": count,
        "elbo_nats": values["elbo"],
        "bits_per_dim": values["bits_per_dim"],
        "loss": values["loss"],
        "reconstruction_loss": values["reconstruction_loss"],
        "kl_loss": values["kl_loss"],
        "mse": squared_error / count,
        "psnr_db": psnr_sum / count,
        "active_units": int(analysis.active_units(np.concatenate(z_means)).sum()),
    }
    if labelled:
        out.judge_features = np.concatenate(features)
        out.edit_codes = (
            np.concatenate(edit_codes) if edit_codes else np.zeros((0, model.network.z_dim))
        )
        out.edit_labels = np.concatenate(code_labels) if code_labels else None
    return out


def _losses_function(model: keras.Model):
    """images (B, H, W, C), z_mean and z_log_var (B, z_dim), seed (2,) -> VAE.compute_losses
    of one z sample per image.

    Like the model's test_step, but the noise comes from the evaluation's seed, not the
    model's sampling state: two evaluations with one seed give the same numbers.
    """
    functions = model.__dict__.setdefault("_facevae_functions", {})
    if "losses" not in functions:

        def losses(
            images: tf.Tensor, z_mean: tf.Tensor, z_log_var: tf.Tensor, seed: tf.Tensor
        ) -> dict[str, tf.Tensor]:
            z = z_mean
            if model.mode == "vae":
                noise = tf.random.stateless_normal(tf.shape(z_mean), seed, dtype=z_mean.dtype)
                z = z_mean + tf.exp(0.5 * z_log_var) * noise
            logits = tf.cast(model.decoder(z, training=False), tf.float32)  # (B, H, W, C)
            return model.compute_losses(images, logits, z_mean, z_log_var)

        functions["losses"] = tf.function(losses, reduce_retracing=True)
    return functions["losses"]


def _add(total: np.ndarray | None, hits: np.ndarray) -> np.ndarray:
    """Running per-attribute counts: total (A,) + hits (B, A) summed over the batch."""
    counts = hits.sum(0).astype(np.float64)
    return counts if total is None else total + counts


def _decode_batches(model: keras.Model, z: np.ndarray, batch_size: int):
    """Decoded images (B, H, W, C) in [0, 1], one batch of z at a time."""
    decode = _compiled(model, "decode")
    for start in range(0, len(z), batch_size):
        yield decode(tf.constant(z[start : start + batch_size])).numpy()


def _compiled(model: keras.Model, name: str):
    """tf.function of a model method, made once per model (a new one would retrace)."""
    functions = model.__dict__.setdefault("_facevae_functions", {})
    if name not in functions:
        functions[name] = tf.function(getattr(model, name), reduce_retracing=True)
    return functions[name]


def _generated_features(
    model: keras.Model,
    z: np.ndarray,
    config: EvalConfig,
    network: inception.FeatureNetwork | None,
    the_judge: judge.Judge | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Inception and judge features (N, F) of the images decoded from z; images are dropped."""
    if network is None and the_judge is None:
        return None, None
    inception_features, judge_features = [], []
    progress = Progress(len(z), f"generate ({config.prior} prior)")
    for images in _decode_batches(model, z, config.batch_size):
        images = to_uint8(images)  # as a saved PNG would be: the real images are uint8 too
        if network is not None:
            inception_features.append(network.features(images))
        if the_judge is not None:
            judge_features.append(the_judge(images.astype(np.float32) / 255.0)[0])
        progress.update(len(images))
    progress.close()
    return (
        np.concatenate(inception_features) if network is not None else None,
        np.concatenate(judge_features) if the_judge is not None else None,
    )


def _real_statistics(
    network: inception.FeatureNetwork,
    manifest: schema.Manifest,
    split: str,
    n: int,
    cache_dir: str,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """mu (F,), sigma (F, F) and features (n, F) of the split's first n images, from the cache
    when it was made from the same shards (sha256s), network and n; and "cached"/"computed".

    One cache file per dataset folder and split: a changed dataset overwrites it.
    """
    folder = os.path.join(cache_dir, FID_STATS_SUBDIR)
    where = hashlib.sha256(os.path.abspath(manifest.data_dir).encode()).hexdigest()[:12]
    path = os.path.join(folder, f"{split}-{where}.npz")
    key = f"data={manifest.split(split).fingerprint} network={network.digest or network.name} n={n}"
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as cached:
                if str(cached["key"]) == key:
                    return cached["mu"], cached["sigma"], cached["features"], "cached"
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            print(f"ignoring unreadable {path} ({str(e)[:80]})", file=sys.stderr)
    features, count = [], 0
    progress = Progress(n, f"Inception on {split}")
    ds = dataset.load(manifest, split, batch_size, training=False, cache="none")
    with dataset.explain_corrupt_shards(manifest):
        for images in ds:
            images = to_uint8(images[: n - count].numpy())  # (B, H, W, C), exact: k/255 -> k
            features.append(network.features(images))
            count += len(images)
            progress.update(len(images))
            if count >= n:
                break
    progress.close()
    features = np.concatenate(features)
    mu, sigma = analysis.gaussian_stats(features)
    try:
        files.write_npz(path, mu=mu, sigma=sigma, features=features, key=np.array(key))
    except OSError as e:
        print(f"the real-image statistics were not cached ({e})", file=sys.stderr)
    return mu, sigma, features, "computed"


def _judge_results(
    model: keras.Model,
    the_judge: judge.Judge | None,
    judge_error: str | None,
    recon: _Reconstructions,
    generated: np.ndarray | None,
    vectors: codes.AttributeVectors | None,
    config: EvalConfig,
) -> dict[str, Any]:
    keys = (
        "judge_fd",
        "judge_real_accuracy",
        "judge_recon_accuracy",
        "judge_edit_add_success",
        "judge_edit_remove_success",
        "judge_edit_success",
    )
    results: dict[str, Any] = dict.fromkeys(keys)
    results["judge_error"] = judge_error
    if the_judge is None:
        return results
    active = the_judge.active
    with np.errstate(invalid="ignore", divide="ignore"):
        real_accuracy = recon.real_right / recon.known  # (A,)
        recon_accuracy = recon.recon_right / recon.known
    measured = active & (recon.known > 0)
    if len(recon.judge_features) >= 2 and generated is not None and len(generated) >= 2:
        results["judge_fd"] = analysis.frechet_distance(generated, recon.judge_features)
    if measured.any():
        results["judge_real_accuracy"] = float(real_accuracy[measured].mean())
        results["judge_recon_accuracy"] = float(recon_accuracy[measured].mean())
    edits = _edit_success(
        model, the_judge, vectors.vectors, recon.edit_codes, recon.edit_labels, config
    )
    results.update(edits)
    results["judge_attributes"] = int(measured.sum())
    results["judge_dir"] = the_judge.directory
    return results


def _edit_success(
    model: keras.Model,
    the_judge: judge.Judge,
    vectors: np.ndarray,
    z: np.ndarray,
    labels: np.ndarray | None,
    config: EvalConfig,
) -> dict[str, Any]:
    """Pooled over the active attributes with a vector: the share of edits the judge agrees with.

    Adding: test images lacking the attribute, decoded from z + v, judged to have it.
    Removing: images having it, decoded from z - v, judged to lack it.
    """
    added = [0, 0]  # successes, trials
    removed = [0, 0]
    per_attribute = {}
    names = the_judge.report.attribute_names
    if labels is None or not len(z):
        return {}
    for a in np.flatnonzero(the_judge.active):
        if not np.isfinite(vectors[a]).all():
            continue
        rates = {}
        for sign, group, tally, name in ((1.0, 0, added, "add"), (-1.0, 1, removed, "remove")):
            chosen = z[labels[:, a] == group]  # (k, z_dim)
            if not len(chosen):
                continue
            edited = (chosen + sign * vectors[a]).astype(np.float32)
            says = np.concatenate(
                [
                    the_judge(images)[1][:, a] > 0.5
                    for images in _decode_batches(model, edited, config.batch_size)
                ]
            )
            hits = int((says == (group == 0)).sum())
            tally[0] += hits
            tally[1] += len(says)
            rates[name] = hits / len(says)
        per_attribute[names[a]] = rates

    def rate(tally: list[int]) -> float | None:
        return tally[0] / tally[1] if tally[1] else None

    both = [added[0] + removed[0], added[1] + removed[1]]
    return {
        "judge_edit_add_success": rate(added),
        "judge_edit_remove_success": rate(removed),
        "judge_edit_success": rate(both),
        "judge_edit_images": len(z),
        "judge_edit_per_attribute": per_attribute,
    }
