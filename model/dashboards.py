"""A run's TensorBoard dashboards beyond scalars and images: HParams and the Projector.

    tensorboard --logdir runs/figures   # HParams: the runs side by side
    tensorboard --logdir runs           # Projector: each run's test codes, coloured by attribute

HParams. The trainer (chief only) writes the run's session into
`<workdir>/logs/events.out.tfevents.hparams` when it starts or resumes: the experiment's
configuration (hp.hparams_config: the settings below and the metrics they are compared by)
and the session (hp.hparams: this run's values). The metrics are scalars other writers
log: the last `validation` loss, elbo, bits_per_dim, reconstruction_loss and kl_loss
(callbacks.ScalarLogger), the last `train` loss, and for runs that model/figures.py
evaluated the `eval` numbers of their eval.json (write_eval_metrics). One file per run,
replaced whole: a resumed run leaves one session, with the settings now in force (a
changed `learning_rate`, more `epochs`) and the time the run first started.

Projector. At the end of training (the chief only), and on demand (write_workdir_projector,
tools/projector.py), `<workdir>/logs/plugins/org_tensorflow_tensorboard_projector/` gets
the latent means (z_mean) of the first `max_images` test images (PROJECTOR_SPLITS: the
first split present), with

    projector_config.pbtxt  the ProjectorConfig naming the three files below
    z_mean.tsv              the embedding, one image per line, z_dim tab-separated floats
    metadata.tsv            a header row, then per image: its index in the split, its
                            source_id and every attribute (1 has, 0 lacks, -1 unknown)
    sprite.png              the faces in a square grid, row-major, shrunk to fit
                            MAX_SPRITE_SIDE pixels a side (the projector's limit)

written whole into a temporary folder and moved into place (pipeline.files). TensorBoard
looks for a projector config in a run's folder and in its plugin assets folder; logs/ is
a run because it holds the HParams file, so the session and the embedding share its name.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins import projector
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.projector import metadata as projector_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from facevae.model import workdir as wd
from facevae.model.config import TrainConfig
from facevae.model.vae import ModelConfig
from facevae.pipeline import dataset, files, schema

HPARAMS_FILE = "events.out.tfevents.hparams"  # in logs/: "tfevents" makes it TensorBoard's
EVAL_DIR = "eval"  # logs/eval/: the numbers of an evaluation, for the HParams table
EVAL_FILE = "events.out.tfevents.eval"
PROJECTOR_DIR = os.path.join("plugins", projector_metadata.PLUGIN_ASSETS_NAME)  # in logs/
TENSOR_FILE = "z_mean.tsv"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
PROJECTOR_SPLITS = ("test", "validation", "train")  # the first present is shown
DEFAULT_PROJECTOR_IMAGES = 2000
MAX_PROJECTOR_IMAGES = 10_000  # 100 x 100 faces of 81 px in the sprite; z_mean.tsv ~25 MB
MAX_SPRITE_SIDE = 8192  # pixels: the projector's sprite limit (a WebGL texture)

# The settings a session records. The AE's kl_weight and beta are 0: it has no KL term.
HPARAMS = (
    hp.HParam("mode", description="vae, or ae: the same networks without sampling or KL"),
    hp.HParam("kl_weight", description="weight of the mean KL per latent dim (0 for the AE)"),
    hp.HParam("beta", description="kl_weight x H*W*C / z_dim: the KL's weight on the ELBO"),
    hp.HParam("z_dim"),
    hp.HParam("filters", description="encoder convolution filters"),
    hp.HParam("norm"),
    hp.HParam("dense_units"),
    hp.HParam("reconstruction_loss"),
    hp.HParam("kl_warmup_steps"),
    hp.HParam("batch_size"),
    hp.HParam("learning_rate"),
    hp.HParam("lr_schedule"),
    hp.HParam("epochs"),
    hp.HParam("steps_per_epoch", description="0: one pass over the train split"),
    hp.HParam("seed"),
    hp.HParam("flip"),
    hp.HParam("mixed_precision"),
    hp.HParam("image_size", description="height x width x channels"),
    hp.HParam("dataset", description="the dataset folder's name"),
    hp.HParam("dataset_version", description="schema.Manifest.version of the dataset"),
    hp.HParam("train_images"),
)
VALIDATION_METRICS = ("loss", "elbo", "bits_per_dim", "reconstruction_loss", "kl_loss")
# logs/eval tags (write_eval_metrics): eval.json's numbers; judge_fd_* per prior.
EVAL_METRICS = (
    "elbo_nats",
    "bits_per_dim",
    "psnr_db",
    "active_units",
    "judge_fd_normal",
    "judge_fd_gmm",
)


def _metrics() -> list[hp.Metric]:
    validation = [
        hp.Metric(tag, group="validation", display_name=f"validation {tag}",
                  dataset_type=hp.Metric.VALIDATION)
        for tag in VALIDATION_METRICS
    ]  # fmt: skip
    train = [hp.Metric("loss", group="train", display_name="train loss",
                       dataset_type=hp.Metric.TRAINING)]  # fmt: skip
    evaluated = [hp.Metric(tag, group=EVAL_DIR, display_name=f"test {tag}") for tag in EVAL_METRICS]
    return [*validation, *train, *evaluated]


# --------------------------------------------------------------------------- event files


def _events(step: int, summaries: list) -> list[event_pb2.Event]:
    """A file's events: the version record TensorBoard expects first, then the summaries."""
    now = time.time()
    first = event_pb2.Event(wall_time=now, file_version="brain.Event:2")
    return [first, *(event_pb2.Event(wall_time=now, step=step, summary=s) for s in summaries)]


def _write_events(path: str, events: list[event_pb2.Event]) -> str:
    """An event file written whole or not at all (pipeline.files), in TensorBoard's records."""

    def write(f) -> None:
        writer = RecordWriter(f)
        for event in events:
            writer.write(event.SerializeToString())

    return files.write_with(path, write)


def _read_events(path: str) -> list[event_pb2.Event]:
    """The events of a file, up to its last whole record; [] if there is none."""
    if not os.path.isfile(path):
        return []
    events = []
    try:
        for record in tf.data.TFRecordDataset(path):
            events.append(event_pb2.Event.FromString(record.numpy()))
    except (tf.errors.OpError, ValueError):
        pass  # cut short by a kill, or not ours: it is written afresh
    return events


# --------------------------------------------------------------------------- HParams


def hparams_values(
    config: TrainConfig, model_config: ModelConfig, manifest: schema.Manifest
) -> dict[str, bool | int | float | str]:
    """The session's values of HPARAMS for a run of `config` on `manifest`."""
    vae = config.mode == "vae"
    height, width, channels = manifest.image_shape
    return {
        "mode": config.mode,
        "kl_weight": float(config.kl_weight) if vae else 0.0,
        "beta": float(model_config.beta) if vae else 0.0,
        "z_dim": config.z_dim,
        "filters": ",".join(str(f) for f in config.filters),
        "norm": config.norm,
        "dense_units": config.dense_units,
        "reconstruction_loss": config.reconstruction_loss,
        "kl_warmup_steps": config.kl_warmup_steps,
        "batch_size": config.batch_size,
        "learning_rate": float(config.learning_rate),
        "lr_schedule": config.lr_schedule,
        "epochs": config.epochs,
        "steps_per_epoch": config.steps_per_epoch,
        "seed": config.seed,
        "flip": config.flip,
        "mixed_precision": config.mixed_precision,
        "image_size": f"{height}x{width}x{channels}",
        "dataset": os.path.basename(os.path.normpath(manifest.data_dir)),
        "dataset_version": manifest.version,
        "train_images": manifest.num_examples("train") if manifest.has_split("train") else 0,
    }


@dataclasses.dataclass(frozen=True)
class Session:
    """The HParams session a file holds: its values and start time."""

    hparams: dict[str, bool | float | str]
    start_time_secs: float
    group_name: str


def read_session(logs_dir: str) -> Session | None:
    """The session in `<logs_dir>/events.out.tfevents.hparams`, None if there is none."""
    for event in _read_events(os.path.join(logs_dir, HPARAMS_FILE)):
        for value in event.summary.value:
            if value.tag != hp_metadata.SESSION_START_INFO_TAG:
                continue
            info = hp_metadata.parse_session_start_info_plugin_data(
                value.metadata.plugin_data.content
            )
            values = {name: getattr(v, v.WhichOneof("kind")) for name, v in info.hparams.items()}
            return Session(values, info.start_time_secs, info.group_name)
    return None


def _as_stored(values: dict[str, Any]) -> dict[str, bool | float | str]:
    """Values as a session stores them: numbers become floats."""
    return {
        k: v if isinstance(v, (bool, str)) else float(v) for k, v in values.items()
    }  # fmt: skip


def write_hparams(logs_dir: str, values: dict[str, Any]) -> str | None:
    """Writes the run's HParams file (experiment config and session) into `logs_dir`.

    A file holding the same values is left as it is (None is returned); otherwise it is
    replaced whole, keeping the start time of the session it held: one session per run,
    however often it resumes. Returns the path written. WriteError if it cannot be.
    """
    previous = read_session(logs_dir)
    if previous is not None and previous.hparams == _as_stored(values):
        return None
    start = previous.start_time_secs if previous is not None else time.time()
    summaries = [
        hp.hparams_config_pb(hparams=list(HPARAMS), metrics=_metrics(), time_created_secs=start),
        hp.hparams_pb(values, start_time_secs=start),
    ]
    return _write_events(os.path.join(logs_dir, HPARAMS_FILE), _events(0, summaries))


def write_eval_metrics(workdir: str, metrics: dict[str, float | None], step: int) -> str:
    """`<workdir>/logs/eval/events.out.tfevents.eval`: one scalar per finite value of
    `metrics` (EVAL_METRICS' tags) at `step`, replacing the file an earlier evaluation left."""
    summaries = [
        scalar_summary.scalar_pb(tag, float(value))
        for tag, value in metrics.items()
        if value is not None and math.isfinite(value)
    ]
    path = os.path.join(workdir, wd.LOGS_DIR, EVAL_DIR, EVAL_FILE)
    return _write_events(path, _events(step, summaries))


# --------------------------------------------------------------------------- Projector


class ProjectorError(ValueError):
    """Settings the projector cannot use; the message names the setting and the fix."""


@dataclasses.dataclass(frozen=True)
class ProjectorResult:
    folder: str  # the plugin assets folder written
    split: str
    images: int
    z_dim: int
    tile: tuple[int, int]  # (width, height) of a face in the sprite
    sprite_size: tuple[int, int]  # (width, height) of sprite.png


def check_max_images(max_images: int) -> None:
    if isinstance(max_images, bool) or not isinstance(max_images, int):
        raise ProjectorError(f"`max_images`={max_images!r}: give a whole number")
    if not 1 <= max_images <= MAX_PROJECTOR_IMAGES:
        raise ProjectorError(
            f"`max_images`={max_images}: give 1..{MAX_PROJECTOR_IMAGES:,} (the projector "
            "shows a few thousand points well)"
        )


def projector_split(manifest: schema.Manifest, split: str | None = None) -> str:
    """`split` (DatasetError listing the splits if absent), or the first of PROJECTOR_SPLITS."""
    if split is not None:
        manifest.split(split)
        return split
    for name in PROJECTOR_SPLITS:
        if manifest.has_split(name):
            return name
    return manifest.split(PROJECTOR_SPLITS[0]).name  # raises: lists the splits there are


def sprite_layout(n: int, height: int, width: int) -> tuple[int, tuple[int, int]]:
    """(faces per row and column, (tile width, tile height)) of a square sprite of n faces:
    the faces at their own size, or shrunk (aspect kept) so the sprite is at most
    MAX_SPRITE_SIDE pixels a side."""
    cols = max(1, math.ceil(math.sqrt(n)))
    side, longest = MAX_SPRITE_SIDE // cols, max(height, width)
    if longest <= side:
        return cols, (width, height)
    return cols, (max(1, width * side // longest), max(1, height * side // longest))


def _clean(text: str) -> str:
    """A metadata cell: no tabs or line breaks, which would shift the table."""
    return " ".join(text.replace("\t", " ").splitlines()) or "-"


def write_projector(
    model: keras.Model,
    manifest: schema.Manifest,
    workdir: str,
    *,
    split: str | None = None,
    max_images: int = DEFAULT_PROJECTOR_IMAGES,
    batch_size: int = 64,
) -> ProjectorResult:
    """Encodes the first `max_images` images of `split` (default: PROJECTOR_SPLITS) and
    writes the projector's files under `<workdir>/logs/` (see the module doc), whole.

    ProjectorError for a bad `max_images`, DatasetError for a missing split or a corrupt
    shard, WriteError when the folder cannot be written.
    """
    check_max_images(max_images)
    split = projector_split(manifest, split)
    manifest.check_image_shape(model.network.image_shape)
    n = min(max_images, manifest.num_examples(split))
    height, width, channels = manifest.image_shape
    cols, (tile_w, tile_h) = sprite_layout(n, height, width)
    sprite = np.full((cols * tile_h, cols * tile_w, channels), 255, np.uint8)
    names = list(manifest.attribute_names)
    rows = ["\t".join(["index", "source_id", *names])]
    codes = []
    encode = tf.function(model.encode, reduce_retracing=True)
    count = 0
    examples = dataset.examples(manifest, split).take(n).batch(batch_size)
    with dataset.explain_corrupt_shards(manifest):
        for batch in examples:
            images = batch["image"].numpy()  # (B, H, W, C) uint8
            z_mean, _ = encode(tf.constant(images, tf.float32) / 255.0)
            codes.append(np.asarray(z_mean, np.float32))
            labels = batch["attributes"].numpy() if names else np.zeros((len(images), 0))
            for image, source_id, index, label in zip(
                images, batch["source_id"].numpy(), batch["index"].numpy(), labels, strict=True
            ):
                row, col = divmod(count, cols)
                sprite[row * tile_h : (row + 1) * tile_h, col * tile_w : (col + 1) * tile_w] = (
                    _tile(image, tile_w, tile_h)
                )
                cells = [str(int(index)), _clean(source_id.decode("utf-8", "replace"))]
                rows.append("\t".join(cells + [str(int(v)) for v in label]))
                count += 1
    z = np.concatenate(codes)  # (n, z_dim)

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = f"z_mean ({split})"
    embedding.tensor_path = TENSOR_FILE
    embedding.tensor_shape.extend(z.shape)
    embedding.metadata_path = METADATA_FILE
    embedding.sprite.image_path = SPRITE_FILE
    embedding.sprite.single_image_dim.extend([tile_w, tile_h])

    target = os.path.join(workdir, wd.LOGS_DIR, PROJECTOR_DIR)
    tmp = files.fresh_temp_dir(target)
    try:
        tensor = io.BytesIO()
        np.savetxt(tensor, z, fmt="%.6g", delimiter="\t")
        files.write_bytes(os.path.join(tmp, TENSOR_FILE), tensor.getvalue())
        files.write_bytes(os.path.join(tmp, METADATA_FILE), ("\n".join(rows) + "\n").encode())
        files.write_png(os.path.join(tmp, SPRITE_FILE), sprite)
        files.write_bytes(
            os.path.join(tmp, projector_metadata.PROJECTOR_FILENAME),
            text_format.MessageToString(config).encode(),
        )
        files.move_into_place(tmp, target)
    except BaseException as e:
        files.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, files.WriteError):
            raise files.WriteError(target, e) from e
        raise
    size = (sprite.shape[1], sprite.shape[0])
    return ProjectorResult(target, split, count, z.shape[1], (tile_w, tile_h), size)


def _tile(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A face (H, W, C) uint8 at (height, width), shrunk with a box filter if smaller."""
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[-1]
    picture = Image.fromarray(image[..., 0] if channels == 1 else image)
    small = np.asarray(picture.resize((width, height), Image.Resampling.BOX))
    return small[..., None] if channels == 1 else small


def write_workdir_projector(
    workdir: str, *, split: str | None = None, max_images: int = DEFAULT_PROJECTOR_IMAGES
) -> ProjectorResult:
    """The projector of a finished (or checkpointed) run, from its workdir alone: restores
    the model, reads the dataset its config.json names, writes the files (write_projector).

    A run trained before sessions were written gets its HParams file too, so logs/ is a
    run TensorBoard lists. WorkdirError, DatasetError, ProjectorError or WriteError.
    """
    check_max_images(max_images)  # before the restore
    model, run_config = wd.restore(workdir)
    manifest = schema.Manifest.read(run_config.flags.data_dir)
    logs = os.path.join(workdir, wd.LOGS_DIR)
    if read_session(logs) is None:
        write_hparams(logs, hparams_values(run_config.flags, run_config.model, manifest))
    return write_projector(model, manifest, workdir, split=split, max_images=max_images)


def projector_after_training(
    model: keras.Model, manifest: schema.Manifest, workdir: str
) -> ProjectorResult | None:
    """write_projector at the end of a run; a failure is printed, not raised: the run
    itself is saved and complete."""
    try:
        result = write_projector(model, manifest, workdir)
    except (OSError, schema.DatasetError, ProjectorError) as e:
        print(f"projector: not written ({e})", flush=True)
        return None
    print(f"projector: {result.images} {result.split} images' z_mean in {result.folder}")
    return result
