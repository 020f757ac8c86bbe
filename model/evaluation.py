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
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facevae.model import analysis, fingerprint, inception, judge
from facevae.model import prior as priors  # `prior` is also a setting's name
from facevae.model import workdir as wd
from facevae.model.console import Progress, peak_rss_mb
from facevae.model.grid import to_uint8
from facevae.pipeline import dataset, schema

RESULTS_FILE = "eval.json"
FID_STATS_SUBDIR = "fid_stats"
MAX_FID_SAMPLES = 100_000  # 2 x 100k x 2048 float32 features = 1.6 GB: the memory ceiling
INCEPTION_SOURCES = ("ttur", "keras", "none")
# z_mean rows kept for active_units: 65,536 x z_dim 256 float32 = 64 MB at most.
MAX_ACTIVE_UNIT_CODES = 65_536


class EvaluationError(ValueError):
    """Bad settings or inputs: the message names the flag or file and the fix."""


def default_cache_dir() -> str:
    """Where the Inception graph and real-image statistics are kept: ~/.cache/facevae."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "facevae")


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
    cache_dir: str | None = None  # None: default_cache_dir()
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
                raise EvaluationError(f"--{name}={value}: give a whole number of at least 1")
        for name in ("max_examples", "edit_images"):
            if getattr(self, name) < 0:
                raise EvaluationError(f"--{name}={getattr(self, name)}: give 0 or more")
        if self.fid_samples > MAX_FID_SAMPLES:
            raise EvaluationError(
                f"--fid_samples={self.fid_samples}: at most {MAX_FID_SAMPLES} (the features of "
                "both sets are kept in memory); published FIDs use 10000 or 50000"
            )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise EvaluationError(f"--temperature={self.temperature}: give a finite number > 0")
        if self.prior not in priors.PRIORS:
            raise EvaluationError(f"--prior={self.prior}: use one of {', '.join(priors.PRIORS)}")


def run(config: EvalConfig) -> dict[str, Any]:
    """Restores the run, evaluates it and writes the results (JSON) to config.out."""
    model, run_config = wd.restore(config.workdir)
    data_dir = config.data_dir or run_config.get("flags", {}).get("data_dir")
    if not data_dir:
        raise EvaluationError(
            f"--data_dir is needed: {wd.config_path(config.workdir)} names no dataset"
        )
    out = config.out or os.path.join(config.workdir, RESULTS_FILE)
    if os.path.isdir(out):
        raise EvaluationError(f"--out={out} is a folder: give a file name such as eval.json")
    folder = os.path.dirname(os.path.abspath(out))
    try:  # checked before the evaluation, not after its minutes of work
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise EvaluationError(
            f"--out={out}: cannot write in {folder} ({e.strerror}); pass --out a writable file"
        ) from e
    results = evaluate(model, config, data_dir)
    results["json"] = out
    schema.write_json_atomic(out, results)
    return results


# --------------------------------------------------------------------------- the evaluation


def evaluate(model: keras.Model, config: EvalConfig, data_dir: str) -> dict[str, Any]:
    """Every metric of the module doc for a restored model; nothing is written."""
    start = time.perf_counter()
    manifest = schema.read_manifest(data_dir)
    split = config.split
    try:
        total = dataset.num_examples(data_dir, split)
    except schema.DatasetError as e:  # it lists the splits there are
        raise EvaluationError(f"--split={split}: {e}") from e
    shape = tuple(dataset.image_shape(data_dir))
    if shape != tuple(model.network.image_shape):
        raise EvaluationError(
            f"--data_dir={data_dir} holds {shape} images but the model takes "
            f"{tuple(model.network.image_shape)}: pass the dataset the run was trained on"
        )
    cache_dir = config.cache_dir or default_cache_dir()
    network, fid_error = _feature_network(config.inception_weights, cache_dir)
    the_judge, judge_error = _judge(config, data_dir, shape)
    n_fid = min(config.fid_samples, total)

    recon = _reconstruction_pass(model, data_dir, split, config, the_judge, n_fid)
    results: dict[str, Any] = {
        "workdir": config.workdir,
        "data_dir": data_dir,
        "split": split,
        **recon.metrics,
        "prior": config.prior,
        "temperature": config.temperature,
        "seed": config.seed,
    }

    codes, train_labels = None, None
    if config.prior == "gmm" or the_judge is not None:
        codes, train_labels = priors.encode_means(
            model,
            data_dir,
            "train",
            config.batch_size,
            priors.GMM_MAX_CODES,
            with_labels=the_judge is not None,
        )
    gmm = None
    if config.prior == "gmm":
        gmm = priors.workdir_gmm(
            model,
            config.workdir,
            data_dir,
            components=config.gmm_components,
            batch_size=config.batch_size,
            codes=codes,
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
        "crop": manifest.get("crop"),
        "dataset_resample": manifest.get("resample"),
        "kid_subsets": config.kid_subsets,
        "kid_subset_size": config.kid_subset_size,
    }
    fid = {"fid": None, "kid": None, "kid_std": None, "fid_error": fid_error}
    if network is not None:
        if n_fid < 2:
            fid["fid_error"] = f"FID needs at least 2 images; the {split} split has {total}"
        else:
            mu, cov, real, source = _real_statistics(
                network, data_dir, split, n_fid, cache_dir, config.batch_size
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
        _judge_results(
            model, the_judge, judge_error, recon, generated_judge, codes, train_labels, config
        )
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
        raise EvaluationError(f"--inception_weights={source}: {e}") from e


def _judge(config: EvalConfig, data_dir: str, shape: tuple) -> tuple[judge.Judge | None, str]:
    directory = config.judge_dir or judge.default_dir(data_dir)
    try:
        found = judge.load(directory, data_dir)
    except judge.JudgeError as e:
        print(f"judge_* left out: {e}", file=sys.stderr)
        return None, str(e)
    report = found.report
    if tuple(report.image_shape) != shape:
        reason = (
            f"the judge in {directory} takes {tuple(report.image_shape)} images, the "
            f"dataset holds {shape}: train it again with `{judge.train_command(data_dir)}`"
        )
    elif report.train_fingerprint != fingerprint.of_split(data_dir, "train"):
        reason = (
            f"the judge in {directory} learned from another version of the train split: "
            f"train it again with `{judge.train_command(data_dir)}`"
        )
    else:
        return found, None
    print(f"judge_* left out: {reason}", file=sys.stderr)
    return None, reason


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
    data_dir: str,
    split: str,
    config: EvalConfig,
    the_judge: judge.Judge | None,
    n_fid: int,
) -> _Reconstructions:
    """ELBO, MSE and PSNR over the split, and the judge's view of originals and reconstructions."""
    labelled = the_judge is not None
    ds = dataset.load(
        data_dir, split, config.batch_size, training=False, cache="none", with_labels=labelled
    )
    total = dataset.num_examples(data_dir, split)
    total = min(total, config.max_examples) if config.max_examples else total
    losses = _losses_function(model)
    sums: dict[str, float] = {}
    encode = _compiled(model, "encode")
    decode = _compiled(model, "decode")
    squared_error, psnr_sum, count = 0.0, 0.0, 0
    out = _Reconstructions(metrics={})
    features, codes, code_labels = [], [], []
    z_means = []  # (B, z_dim) each, MAX_ACTIVE_UNIT_CODES rows in all at most
    progress = Progress(total, f"evaluate {split}")
    with dataset.explain_corrupt_shards(data_dir):
        for batch in ds:
            images, labels = batch if labelled else (batch, None)
            take = total - count
            images = images[:take]  # (B, H, W, C) in [0, 1]
            seed = tf.constant([config.seed, count], tf.int32)  # per batch, fixed by --seed
            for name, value in losses(images, seed).items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(images)
            z_mean = encode(images)[0]  # (B, z_dim)
            recon = decode(z_mean).numpy()  # model.reconstruct, keeping the codes
            z_means.append(z_mean.numpy()[: max(0, MAX_ACTIVE_UNIT_CODES - count)])
            pixels = images.numpy()
            squared_error += float(np.square(recon - pixels).mean(axis=(1, 2, 3)).sum())
            psnr_sum += float(analysis.psnr(pixels, recon).sum())
            if labelled:
                labels = labels.numpy()[:take]  # (B, A) 1, 0 or -1
                real_features, real_p = the_judge(pixels)
                _, recon_p = the_judge(recon)
                known = labels >= 0
                out.real_right = _add(out.real_right, ((real_p > 0.5) == labels) & known)
                out.recon_right = _add(out.recon_right, ((recon_p > 0.5) == labels) & known)
                out.known = _add(out.known, known)
                features.append(real_features[: max(0, n_fid - count)])
                wanted = max(0, config.edit_images - count)
                if wanted:
                    codes.append(z_mean[:wanted].numpy())
                    code_labels.append(labels[:wanted])
            count += len(pixels)
            progress.update(len(pixels))
            if count >= total:
                break
    progress.close()
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
        out.edit_codes = np.concatenate(codes) if codes else np.zeros((0, model.network.z_dim))
        out.edit_labels = np.concatenate(code_labels) if code_labels else None
    return out


def _losses_function(model: keras.Model):
    """images (B, H, W, C), seed (2,) -> VAE.compute_losses of one z sample per image.

    Like the model's test_step, but the noise comes from the evaluation's seed, not the
    model's sampling state: two evaluations with one seed give the same numbers.
    """
    functions = model.__dict__.setdefault("_evaluation_functions", {})
    if "losses" not in functions:

        def losses(images: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
            z_mean, z_log_var = model.encode(images)  # (B, z_dim) each
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
    functions = model.__dict__.setdefault("_evaluation_functions", {})
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
    data_dir: str,
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
    path = os.path.join(folder, f"{split}-{fingerprint.of_path(data_dir)}.npz")
    key = (
        f"data={fingerprint.of_split(data_dir, split)} network={network.digest or network.name}"
        f" n={n}"
    )
    if os.path.isfile(path):
        try:
            with np.load(path) as cached:
                if str(cached["key"]) == key:
                    return cached["mu"], cached["sigma"], cached["features"], "cached"
        except (OSError, ValueError, KeyError) as e:
            print(f"ignoring unreadable {path} ({e})", file=sys.stderr)
    features, count = [], 0
    progress = Progress(n, f"Inception on {split}")
    ds = dataset.load(data_dir, split, batch_size, training=False, cache="none")
    with dataset.explain_corrupt_shards(data_dir):
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
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, mu=mu, sigma=sigma, features=features, key=np.array(key))
        os.replace(tmp, path)
    except OSError as e:
        print(
            f"could not cache the real-image statistics in {folder} ({e.strerror})", file=sys.stderr
        )
    return mu, sigma, features, "computed"


def _judge_results(
    model: keras.Model,
    the_judge: judge.Judge | None,
    judge_error: str | None,
    recon: _Reconstructions,
    generated: np.ndarray | None,
    codes: np.ndarray | None,
    train_labels: np.ndarray | None,
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
    vectors = analysis.attribute_vectors(codes, train_labels)  # (A, z_dim), NaN if undefined
    edits = _edit_success(model, the_judge, vectors, recon.edit_codes, recon.edit_labels, config)
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
