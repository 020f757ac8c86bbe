"""Latent codes of a dataset split, and what is derived from them and cached with a run.

- batches: the one loop that encodes a split, in order, in batches: images, labels,
  z_mean and z_log_var of the first `limit` images. Sampling, evaluation, the mixture
  prior and the explorer all encode through it.
- encode_split: the same loop collected into arrays (Codes).
- attribute_vectors: per attribute, the mean z_mean of the training images that have it
  minus the mean of those that lack it (the first TRAIN_CODES labelled images of the
  split), cached in `<workdir>/attribute_vectors_<split>.npz` for these weights and this
  split's content. sample.py's edits and evaluate.py's edit scores use the same vectors.
- weights_fingerprint: keys every cache made from a model's weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import zipfile
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from facevae.model import analysis
from facevae.pipeline import dataset, files, schema
from facevae.pipeline.progress import Progress

# Training codes behind the attribute vectors and the mixture prior: enough for stable means
# and a 10-component fit, and an EM fit of them takes about a minute on a CPU.
TRAIN_CODES = 10_000
VECTORS_FILE = "attribute_vectors_{split}.npz"


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 (16 hex digits) of every weight of a model, in order."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- encoding


@dataclasses.dataclass
class EncodedBatch:
    images: tf.Tensor  # (B, H, W, C) float32 in [0, 1]
    labels: np.ndarray | None  # (B, A) 1 has, 0 lacks, -1 unknown; None unless asked
    z_mean: tf.Tensor  # (B, z_dim)
    z_log_var: tf.Tensor  # (B, z_dim)


@dataclasses.dataclass
class Codes:
    z_mean: np.ndarray  # (N, z_dim) float32
    z_log_var: np.ndarray  # (N, z_dim) float32
    labels: np.ndarray | None  # (N, A) or None


def _encoder(model: keras.Model):
    """model.encode as a tf.function, made once per model (a new one would retrace)."""
    functions = model.__dict__.setdefault("_facevae_functions", {})
    if "encode" not in functions:
        functions["encode"] = tf.function(model.encode, reduce_retracing=True)
    return functions["encode"]


def batches(
    model: keras.Model,
    manifest: schema.Manifest,
    split: str,
    *,
    batch_size: int = 64,
    limit: int = 0,
    with_labels: bool = False,
    label: str | None = None,
) -> Iterator[EncodedBatch]:
    """The first `limit` images of a split (0: all) encoded, in order, batch by batch.

    A progress line goes to stderr under `label` (default "encode <split>"); a corrupt shard
    is a DatasetError naming it.
    """
    manifest.check_image_shape(model.network.image_shape)
    total = manifest.num_examples(split)
    total = min(total, limit) if limit else total
    ds = dataset.load(
        manifest, split, batch_size, training=False, cache="none", with_labels=with_labels
    )
    encode = _encoder(model)
    progress = Progress(total, label or f"encode {split}")
    with dataset.explain_corrupt_shards(manifest):
        for batch in ds:
            images, attributes = batch if with_labels else (batch, None)
            take = total - progress.count
            images = images[:take]
            z_mean, z_log_var = encode(images)
            labels = attributes.numpy()[:take] if with_labels else None
            yield EncodedBatch(images, labels, z_mean, z_log_var)
            progress.update(len(images))
            if progress.count >= total:
                break
    progress.close()


def encode_split(
    model: keras.Model,
    manifest: schema.Manifest,
    split: str,
    *,
    batch_size: int = 64,
    limit: int = 0,
    with_labels: bool = False,
) -> Codes:
    """z_mean and z_log_var (N, z_dim) of the first `limit` images of a split, and their
    attributes (N, A) when asked."""
    means, log_vars, labels = [], [], []
    for batch in batches(
        model, manifest, split, batch_size=batch_size, limit=limit, with_labels=with_labels
    ):
        means.append(batch.z_mean.numpy())
        log_vars.append(batch.z_log_var.numpy())
        if with_labels:
            labels.append(batch.labels)
    return Codes(
        np.concatenate(means), np.concatenate(log_vars), np.concatenate(labels) if labels else None
    )


# --------------------------------------------------------------------------- attribute vectors


class CodesError(ValueError):
    """No attribute vector can be made as asked; the message names the attribute or split."""


@dataclasses.dataclass(frozen=True)
class AttributeVectors:
    """Per attribute name, a direction in latent space (NaN where undefined)."""

    names: tuple[str, ...]
    vectors: np.ndarray  # (A, z_dim) float64; NaN rows: every image has it, or none does
    split: str
    num_codes: int

    def vector(self, name: str) -> np.ndarray:
        """The direction of one attribute; CodesError if unknown or undefined."""
        if name not in self.names:
            raise CodesError(f"`attribute`={name} is not in the dataset; use one of "
                                  f"{list(self.names)}")  # fmt: skip
        vector = self.vectors[self.names.index(name)]
        if not np.isfinite(vector).all():
            raise CodesError(
                f"`attribute`={name}: the {self.split} images either all have it or none do, "
                "so no direction can be measured; use another `attribute_split`"
            )
        return vector


def _vectors_key(model: keras.Model, manifest: schema.Manifest, split: str) -> str:
    fingerprint = manifest.split(split).fingerprint
    return f"weights={weights_fingerprint(model)} data={fingerprint} codes={TRAIN_CODES}"


def vectors_path(workdir: str, split: str) -> str:
    return os.path.join(workdir, VECTORS_FILE.format(split=split))


def cached_attribute_vectors(
    model: keras.Model, workdir: str, manifest: schema.Manifest, split: str = "train"
) -> AttributeVectors | None:
    """The vectors cached in the workdir for these weights and data, else None."""
    path = vectors_path(workdir, split)
    key = _vectors_key(model, manifest, split)
    try:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["key"]) != key or tuple(cached["names"]) != manifest.attribute_names:
                return None
            return AttributeVectors(
                manifest.attribute_names, cached["vectors"], split, int(cached["num_codes"])
            )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # damaged
        print(f"ignoring the unreadable cache {path} ({str(e)[:80]})", file=sys.stderr)
    return None


def attribute_vectors(
    model: keras.Model,
    workdir: str,
    manifest: schema.Manifest,
    split: str = "train",
    *,
    batch_size: int = 64,
    codes: Codes | None = None,
) -> AttributeVectors:
    """The attribute vectors of a run: from the workdir's cache, or measured on the first
    TRAIN_CODES images of `split` (or on `codes`, if given: their z_mean and labels) and
    cached. A workdir that cannot be written costs a recomputation next time, not the run."""
    if not manifest.attribute_names:
        raise CodesError(
            f"the dataset {manifest.data_dir} has no attribute labels; attribute vectors need "
            "a labelled source such as CelebA (list_attr_celeba.txt)"
        )
    manifest.split(split)  # a DatasetError listing the splits if absent
    cached = cached_attribute_vectors(model, workdir, manifest, split)
    if cached is not None:
        return cached
    if codes is None or codes.labels is None:
        codes = encode_split(
            model, manifest, split, batch_size=batch_size, limit=TRAIN_CODES, with_labels=True
        )
    found = AttributeVectors(
        manifest.attribute_names,
        analysis.attribute_vectors(codes.z_mean, codes.labels),
        split,
        len(codes.z_mean),
    )
    path = vectors_path(workdir, split)
    try:
        files.write_npz(
            path,
            vectors=found.vectors,
            names=np.array(found.names),
            key=np.array(_vectors_key(model, manifest, split)),
            num_codes=np.array(found.num_codes),
        )
        print(f"attribute vectors of {found.num_codes} {split} images cached in {path}",
              file=sys.stderr)  # fmt: skip
    except OSError as e:
        print(f"attribute vectors not cached ({e}): measured again next time", file=sys.stderr)
    return found
