"""The offline judge: a small attribute classifier trained on a dataset's own labels.

FID needs an ImageNet Inception from the internet; the judge needs nothing but the dataset.
`python -m tools.train_judge --data_dir DIR` trains it on the train split and stores it with
the dataset in DIR/judge/ (judge.keras + judge.json). Its held-out accuracy per attribute,
beside the accuracy of always answering the training majority, is stored and printed, so a
user can see how far to trust it. Attributes with one value in every known training label
(the synthetic faces leave 15 of CelebA's 40 undrawn, always 0) are "constant": excluded
from the loss, the accuracies and every mean.

evaluate.py then reports under judge_*: a Fréchet distance between samples and test
images in the judge's feature space, the attribute accuracy of reconstructions, and the
success rate of attribute edits (model/evaluation.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facevae.pipeline import dataset, files, schema

MODEL_FILE = "judge.keras"
REPORT_FILE = "judge.json"
FEATURES = 128  # width of the feature layer the judge's Fréchet distance is measured in
HELD_OUT_SPLITS = ("validation", "test")  # the first one present reports the accuracies
LABEL_BATCH = 1024


class JudgeError(ValueError):
    """No usable judge: the message names the folder and why. `judge_data_dir` is the
    dataset a judge should be trained for, when training one (again) is the fix."""

    def __init__(self, message: str, judge_data_dir: str | None = None) -> None:
        super().__init__(message)
        self.judge_data_dir = judge_data_dir


def default_dir(data_dir: str) -> str:
    return os.path.join(data_dir, schema.JUDGE_DIR)


@dataclasses.dataclass
class JudgeReport:
    """What judge.json holds: how well the judge does, per attribute, on held-out images."""

    attribute_names: list[str]
    constant: list[bool]  # one value in every known training label: excluded everywhere
    accuracy: list[float | None]  # held-out accuracy (None where constant)
    baseline: list[float | None]  # held-out accuracy of the training majority answer
    held_out_split: str
    num_train: int
    num_held_out: int
    epochs: int
    image_shape: list[int]
    train_fingerprint: str  # the fingerprint of the train split it learned from

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean([a for a in self.accuracy if a is not None]))

    @property
    def mean_baseline(self) -> float:
        return float(np.mean([b for b in self.baseline if b is not None]))

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "mean_accuracy": self.mean_accuracy,
            "mean_baseline": self.mean_baseline,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JudgeReport:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def table(self) -> str:
        """One line per attribute: accuracy against the majority baseline, constant ones marked."""
        lines = [f"{'attribute':<22} {'accuracy':>8} {'majority':>8}"]
        for name, constant, acc, base in zip(
            self.attribute_names, self.constant, self.accuracy, self.baseline, strict=True
        ):
            if constant:
                lines.append(f"{name:<22} {'constant: left out':>17}")
            else:
                mark = "  (no better than the majority)" if acc <= base else ""
                lines.append(f"{name:<22} {acc:>8.3f} {base:>8.3f}{mark}")
        active = sum(not c for c in self.constant)
        lines.append(
            f"mean over {active} attributes: accuracy {self.mean_accuracy:.3f}, majority "
            f"{self.mean_baseline:.3f} ({self.num_held_out} {self.held_out_split} images)"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------- network


def build(image_shape: tuple[int, int, int], num_attributes: int, width: int = 32) -> keras.Model:
    """Images in [0, 1] (B, H, W, C) -> [features (B, FEATURES), logits (B, A)].

    Four stride-2 convolutions with batch normalisation (fewer for small images), global
    average pooling, a ReLU feature layer, and one logit per attribute.
    """
    inputs = keras.Input(image_shape, name="images")
    x = inputs
    side = min(image_shape[:2])
    for i in range(4):
        if side < 4:
            break
        x = keras.layers.Conv2D(width * 2**i, 3, strides=2, padding="same", name=f"conv{i}")(x)
        # Momentum 0.9: the moving statistics settle within a short training on a small set.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"norm{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        side //= 2
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)  # (B, channels)
    features = keras.layers.Dense(FEATURES, activation="relu", name="features")(x)
    logits = keras.layers.Dense(num_attributes, name="logits")(features)
    return keras.Model(inputs, [features, logits], name="judge")


def masked_loss(active: np.ndarray):
    """Mean BCE over the known labels (>= 0) of the active attributes only."""
    weights = tf.constant(np.asarray(active, np.float32))  # (A,)

    def loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        known = tf.cast(labels >= 0, tf.float32) * weights  # (B, A)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.maximum(labels, 0.0), logits=logits)
        return tf.reduce_sum(bce * known) / tf.maximum(tf.reduce_sum(known), 1.0)

    return loss


# --------------------------------------------------------------------------- labels


def label_counts(manifest: schema.Manifest, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Per attribute, the number of positive and of known labels in a split: (A,), (A,).

    Reads the label field only (no image decoding), so a pass over CelebA takes seconds.
    """
    count = len(manifest.attribute_names)
    spec = {schema.KEY_ATTRIBUTES: schema.feature_spec(count)[schema.KEY_ATTRIBUTES]}
    records = tf.data.TFRecordDataset(
        manifest.shard_paths(split), compression_type=manifest.compression or ""
    )
    positives, known = np.zeros(count), np.zeros(count)
    with dataset.explain_corrupt_shards(manifest):
        for batch in records.batch(LABEL_BATCH).map(lambda s: tf.io.parse_example(s, spec)):
            labels = batch[schema.KEY_ATTRIBUTES].numpy()  # (B, A) 1, 0 or -1
            positives += (labels == 1).sum(0)
            known += (labels >= 0).sum(0)
    return positives, known


# --------------------------------------------------------------------------- the judge


class Judge:
    """A trained judge and its report; call it on images to get features and probabilities."""

    def __init__(self, model: keras.Model, report: JudgeReport, directory: str) -> None:
        self.model, self.report, self.directory = model, report, directory
        self.active = ~np.asarray(report.constant, bool)  # (A,)
        self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, images: np.ndarray | tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Images (B, H, W, C) in [0, 1] -> features (B, FEATURES), P(attribute) (B, A)."""
        features, logits = self._predict(tf.convert_to_tensor(images, tf.float32))
        return features.numpy(), tf.sigmoid(logits).numpy()


MAX_REPORT_BYTES = 1 << 20  # ours are a few KB


def load(directory: str, manifest: schema.Manifest) -> Judge:
    """The judge stored in `directory` for this dataset; JudgeError saying why not, if not:
    absent, unreadable, or made for other images or another version of the train split."""
    data_dir = manifest.data_dir
    model_path, report_path = (os.path.join(directory, f) for f in (MODEL_FILE, REPORT_FILE))
    if not (os.path.isfile(model_path) and os.path.isfile(report_path)):
        raise JudgeError(f"no judge in {directory}: train one", data_dir)
    try:
        if os.path.getsize(report_path) > MAX_REPORT_BYTES:
            raise ValueError(f"{REPORT_FILE} is over {MAX_REPORT_BYTES:,} bytes")
        with open(report_path) as f:
            report = JudgeReport.from_dict(json.load(f))
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise JudgeError(
            f"the judge in {directory} cannot be read ({reason}): train it again", data_dir
        ) from e
    if tuple(report.image_shape) != manifest.image_shape:
        raise JudgeError(
            f"the judge in {directory} takes {tuple(report.image_shape)} images, the "
            f"dataset holds {manifest.image_shape}: train it again",
            data_dir,
        )
    if not manifest.has_split("train") or (
        report.train_fingerprint != manifest.split("train").fingerprint
    ):
        raise JudgeError(
            f"the judge in {directory} learned from another version of the train split: "
            "train it again",
            data_dir,
        )
    return Judge(model, report, directory)


def train(
    manifest: schema.Manifest,
    out_dir: str | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    width: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    verbose: int = 1,
) -> JudgeReport:
    """Trains a judge on the train split, measures it on the held-out split, and stores both
    in `out_dir` (default DIR/judge/), replacing a previous judge only once complete."""
    data_dir = manifest.data_dir
    out_dir = out_dir or default_dir(data_dir)
    names = list(manifest.attribute_names)
    if not names:
        raise JudgeError(
            f"{manifest.path} lists no attributes: the judge learns from attribute labels, "
            "so prepare a labelled source (CelebA's list_attr_celeba.txt)"
        )
    held_out = next((s for s in HELD_OUT_SPLITS if manifest.has_split(s)), None)
    if held_out is None:
        raise JudgeError(f"{data_dir} has no validation or test split to measure the judge on")
    image_shape = manifest.image_shape
    num_train = manifest.num_examples("train")
    positives, known = label_counts(manifest, "train")
    constant = (positives == 0) | (positives == known)  # includes "no label known"
    if constant.all():
        raise JudgeError(f"every attribute of {data_dir}'s train split has a single value")
    active = ~constant
    try:  # before training, not after it: a read-only dataset folder needs another `out`
        tmp = files.fresh_temp_dir(out_dir)
    except OSError as e:
        raise JudgeError(
            f"cannot write the judge beside {out_dir} ({e.strerror}): give `out` a writable folder"
        ) from e
    try:
        keras.utils.set_random_seed(seed)
        judge = build(image_shape, len(names), width)
        trainer = keras.Model(judge.input, judge.output[1])  # the same layers, logits only
        trainer.compile(keras.optimizers.Adam(learning_rate), loss=masked_loss(active))
        batch_size = max(1, min(batch_size, num_train))
        train_ds = dataset.load(
            manifest,
            "train",
            batch_size,
            training=True,
            cache="auto",
            seed=seed,
            with_labels=True,
            flip=True,
        )
        # Keras prints progress on stdout, which a command line keeps for its results.
        with dataset.explain_corrupt_shards(manifest), contextlib.redirect_stdout(sys.stderr):
            trainer.fit(
                train_ds,
                epochs=epochs,
                steps_per_epoch=max(1, num_train // batch_size),
                shuffle=False,  # the dataset shuffles itself
                verbose=verbose,
            )
            accuracy, count = _held_out_accuracy(judge, manifest, held_out, batch_size)
        majority = (positives * 2 >= known).astype(np.float32)  # (A,) the training majority
        held_positives, held_known = label_counts(manifest, held_out)
        majority_right = np.where(majority == 1, held_positives, held_known - held_positives)
        with np.errstate(invalid="ignore", divide="ignore"):
            baseline = majority_right / held_known

        def per_attribute(values: np.ndarray) -> list[float | None]:
            pairs = zip(values, active, strict=True)
            return [float(v) if a and np.isfinite(v) else None for v, a in pairs]

        report = JudgeReport(
            attribute_names=names,
            constant=constant.tolist(),
            accuracy=per_attribute(accuracy),
            baseline=per_attribute(baseline),
            held_out_split=held_out,
            num_train=num_train,
            num_held_out=count,
            epochs=epochs,
            image_shape=list(image_shape),
            train_fingerprint=manifest.split("train").fingerprint,
        )
        _store(judge, report, tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-made stays beside the dataset
        raise
    return report


def _held_out_accuracy(
    judge: keras.Model, manifest: schema.Manifest, split: str, batch_size: int
) -> tuple[np.ndarray, int]:
    """Accuracy per attribute over the known labels of a split (NaN where none is known)."""
    right, known, count = 0.0, 0.0, 0
    for images, labels in dataset.load(
        manifest, split, batch_size, training=False, cache="none", with_labels=True
    ):
        _, logits = judge(images, training=False)
        labels = labels.numpy()
        said = (logits.numpy() > 0).astype(np.float32)  # P > 0.5
        right = right + ((said == labels) & (labels >= 0)).sum(0)
        known = known + (labels >= 0).sum(0)
        count += len(labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        return right / known, count


def _store(judge: keras.Model, report: JudgeReport, tmp: str, out_dir: str) -> None:
    """judge.keras and judge.json written into `tmp`, swapped in at `out_dir` as one folder."""
    judge.save(os.path.join(tmp, MODEL_FILE))
    files.write_json(os.path.join(tmp, REPORT_FILE), report.to_dict())
    files.move_into_place(tmp, out_dir)
    print(f"judge stored in {out_dir}", file=sys.stderr)
