"""model/judge.py on a small synthetic set: it learns the drawn attributes, not the undrawn."""

import json
import os
import shutil

import numpy as np
import pytest

from facevae.model import judge
from facevae.model.console import one_line
from facevae.pipeline import dataset, prepare, schema, synthetic

M = schema.Manifest.read

SIDE = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """400 synthetic faces (320 train, 40 validation): enough for the judge to learn from."""
    root = tmp_path_factory.mktemp("judge")
    synthetic.write_source(str(root / "source"), 400, seed=1, workers=1, verbose=False)
    prepare.prepare(
        str(root / "source"),
        str(root / "data"),
        size=SIDE,
        examples_per_shard=200,
        workers=1,
        verbose=False,
    )
    return str(root / "data")


@pytest.fixture(scope="module")
def report(data_dir) -> judge.JudgeReport:
    return judge.train(M(data_dir), epochs=8, batch_size=32, width=16, seed=0, verbose=0)


def test_judge_beats_chance_and_the_majority(report):
    assert report.held_out_split == "validation" and report.num_held_out == 40
    pairs = zip(report.attribute_names, report.accuracy, report.baseline, strict=True)
    scores = {name: (acc, base) for name, acc, base in pairs if acc is not None}
    assert report.mean_accuracy > max(0.5, report.mean_baseline)  # chance, and the majority
    better = [name for name, (acc, base) in scores.items() if acc >= base + 0.1]
    assert len(better) >= 3, f"few attributes beat their majority baseline by 0.1: {scores}"


def test_constant_attributes_are_reported_and_left_out(report):
    # The synthetic faces never draw 15 of CelebA's 40 attributes: always 0 in the labels.
    constant = [n for n, c in zip(report.attribute_names, report.constant, strict=True) if c]
    assert len(constant) == 15 and "Attractive" in constant and "Eyeglasses" not in constant
    for name, acc, base in zip(
        report.attribute_names, report.accuracy, report.baseline, strict=True
    ):
        assert (acc is None) == (base is None) == (name in constant)
    table = report.table()
    assert "Attractive             constant: left out" in table
    assert "mean over 25 attributes" in table


def test_stored_judge_loads_and_judges(report, data_dir):
    directory = judge.default_dir(data_dir)
    with open(os.path.join(directory, judge.REPORT_FILE)) as f:
        stored = json.load(f)
    assert stored["mean_accuracy"] == pytest.approx(report.mean_accuracy)
    loaded = judge.load(directory, M(data_dir))
    assert loaded.report == report
    images = next(iter(dataset.load(M(data_dir), "test", 8, training=False, cache="none")))
    features, probabilities = loaded(images)
    assert features.shape == (8, judge.FEATURES) and probabilities.shape == (8, 40)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert loaded.active.sum() == 25


def test_missing_judge_names_the_command(tmp_path, data_dir):
    with pytest.raises(judge.JudgeError, match="no judge") as caught:
        judge.load(str(tmp_path), M(data_dir))
    assert f"python -m tools.train_judge --data_dir {data_dir}" in one_line(caught.value)
    (tmp_path / judge.MODEL_FILE).write_bytes(b"truncated")
    (tmp_path / judge.REPORT_FILE).write_text("{}")
    with pytest.raises(judge.JudgeError, match="cannot be read"):
        judge.load(str(tmp_path), M(data_dir))


def test_dataset_without_labels_is_refused(tmp_path, data_dir):
    copy = str(tmp_path / "unlabelled")
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns(schema.JUDGE_DIR))
    manifest = dict(M(copy).raw)
    manifest["attribute_names"] = []
    schema.write_manifest(copy, manifest)
    with pytest.raises(judge.JudgeError, match="lists no attributes"):
        judge.train(M(copy))


def test_label_counts_match_the_records(data_dir):
    positives, known = judge.label_counts(M(data_dir), "train")
    labels = np.stack([e["attributes"].numpy() for e in dataset.examples(M(data_dir), "train")])
    np.testing.assert_array_equal(positives, (labels == 1).sum(0))
    np.testing.assert_array_equal(known, (labels >= 0).sum(0))
