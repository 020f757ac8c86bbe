"""A run's workdir: its config, checkpoints and final model, shared by train.py and sample.py.

workdir/config.json    {"flags": {...every train.py flag...}, "model": {...VAE kwargs...}}
workdir/ckpt/          tf.train.CheckpointManager: model, optimizer, epoch
workdir/logs/          TensorBoard: train/ and validation/
workdir/samples/       epoch_XXXX.png grids from fixed latent vectors
workdir/model.keras    the final model (keras.models.load_model)
workdir/export/        SavedModel of the decoder for serving: z -> uint8 images
"""

from __future__ import annotations

import json
import os
from typing import Any

import keras
import tensorflow as tf

from model.vae import VAE
from pipeline.schema import write_json_atomic

CONFIG_NAME = "config.json"
CKPT_DIR = "ckpt"
LOGS_DIR = "logs"
SAMPLES_DIR = "samples"
MODEL_FILE = "model.keras"
EXPORT_DIR = "export"

# What makes two runs different experiments: resuming across a change here is refused.
MODEL_SHAPING_KEYS = ("network", "mode", "reconstruction_loss", "kl_weight")


class WorkdirError(ValueError):
    """A workdir is missing, has no trained model, or belongs to another configuration."""


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_NAME)


def read_config(workdir: str) -> dict[str, Any]:
    """Reads `config.json`; raises WorkdirError saying how to create one."""
    path = config_path(workdir)
    if not os.path.isfile(path):
        raise WorkdirError(
            f"{path} does not exist, so {workdir} is not a training run: train one with "
            f"`python train.py --data_dir DATA --workdir {workdir}` (or `python train.py --demo`)"
        )
    with open(path) as f:
        return json.load(f)


def write_config(workdir: str, config: dict[str, Any]) -> None:
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(config_path(workdir), config)


def model_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The model-shaping settings that differ between two model configs, as readable lines."""
    return [
        f"{key}: stored {stored.get(key)!r}, now {current.get(key)!r}"
        for key in MODEL_SHAPING_KEYS
        if stored.get(key) != current.get(key)
    ]


def build_model(config: dict[str, Any]) -> VAE:
    """A fresh (untrained) VAE from a workdir config; its weights exist from the start."""
    return VAE(**config["model"])


def restore(workdir: str) -> tuple[VAE, dict[str, Any]]:
    """The trained model of a run (latest checkpoint, else model.keras) and its config."""
    config = read_config(workdir)
    model = build_model(config)
    latest = tf.train.latest_checkpoint(os.path.join(workdir, CKPT_DIR))
    if latest:
        # Every model variable must come from the checkpoint; its optimizer slots are unused.
        status = tf.train.Checkpoint(model=model).read(latest)
        status.assert_existing_objects_matched().expect_partial()
        return model, config
    final = os.path.join(workdir, MODEL_FILE)
    if os.path.isfile(final):
        loaded = keras.models.load_model(final)
        model.set_weights(loaded.get_weights())
        return model, config
    raise WorkdirError(
        f"{workdir} has a config but no checkpoint in {CKPT_DIR}/ and no {MODEL_FILE}: train it "
        f"first with `python train.py --workdir {workdir}` (the same command resumes)"
    )
