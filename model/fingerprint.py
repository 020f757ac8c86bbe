"""Short content hashes that key the caches of evaluation: which weights, which data.

A cache made from other weights (training went on) or another dataset (re-prepared, shards
changed) must never be reused: its key holds these fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import os

import keras
import numpy as np

from facevae.pipeline import schema


def of_weights(model: keras.Model) -> str:
    """sha256 (16 hex digits) of every weight of a model, in order."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def of_split(data_dir: str, split: str) -> str:
    """sha256 (16 hex digits) of a split's content as the manifest records it: the image
    format, crop and resampling, and every shard's name and sha256."""
    manifest = schema.read_manifest(data_dir)
    info = schema.split_info(manifest, split, data_dir)
    content = {
        "image": manifest.get("image"),
        "crop": manifest.get("crop"),
        "resample": manifest.get("resample"),
        "shards": [(shard["name"], shard["sha256"]) for shard in info["shards"]],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def of_path(path: str) -> str:
    """A short hash of an absolute path: one cache file per dataset folder and split."""
    return hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:12]
