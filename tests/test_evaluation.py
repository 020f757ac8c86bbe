"""model/evaluation.py on the tiny synthetic set with a small VAE built in-process.

The Inception is the stand-in graph of tests/inception_standin.py (the real one needs the
internet); the judge is trained for one epoch on a copy of the dataset.
"""

import math
import os
import shutil
import urllib.error

import inception_standin
import numpy as np
import pytest

from facevae.model import analysis, evaluation, inception, judge
from facevae.model.console import one_line
from facevae.model.networks import NetworkConfig
from facevae.model.vae import VAE
from facevae.pipeline import dataset, prepare, schema, synthetic

M = schema.Manifest.read

VOLATILE = {"seconds", "peak_rss_mb"}


@pytest.fixture(scope="module")
def model():
    vae = VAE(NetworkConfig(image_shape=(32, 32, 3), filters=(8, 16), z_dim=4), seed=0)
    vae.compile("adam")
    return vae


@pytest.fixture(scope="module")
def labelled(tiny_data_dir, tmp_path_factory) -> str:
    """A copy of the tiny dataset with a judge beside it."""
    copy = str(tmp_path_factory.mktemp("evaluation") / "data")
    shutil.copytree(tiny_data_dir, copy)
    judge.train(M(copy), epochs=1, batch_size=16, width=8, verbose=0)
    return copy


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> str:
    return inception_standin.write_graph(str(tmp_path_factory.mktemp("graph") / "g.pb"))


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    monkeypatch.setattr(inception, "_attempts", {})


def config(tmp_path, **kwargs) -> evaluation.EvalConfig:
    settings = {
        "workdir": str(tmp_path),
        "cache_dir": str(tmp_path / "cache"),
        "fid_samples": 8,
        "kid_subsets": 3,
        "kid_subset_size": 4,
        "edit_images": 6,
        "batch_size": 4,
        **kwargs,
    }
    return evaluation.EvalConfig(**settings)


def test_offline_evaluation_tries_the_network_once_and_reports_the_rest(
    model, tiny_data_dir, tmp_path, monkeypatch
):
    calls = []

    def offline(url):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(inception, "_urlopen", offline)
    results = evaluation.evaluate(model, config(tmp_path), M(tiny_data_dir), one_line)
    assert len(calls) == 1
    assert results["fid"] is None and results["kid"] is None
    assert "could not be downloaded" in results["fid_error"]
    assert results["fid_protocol"]["network"] is None
    assert results["num_examples"] == 5  # the tiny test split
    for key in ("elbo_nats", "bits_per_dim", "mse", "psnr_db"):
        assert math.isfinite(results[key]), key
    assert results["judge_fd"] is None
    assert "python -m tools.train_judge --data_dir" in results["judge_error"]
    monkeypatch.setattr(inception, "_attempts", {})  # the next run
    again = evaluation.evaluate(model, config(tmp_path), M(tiny_data_dir))
    assert len(calls) == 1
    assert "not retried for a day" in again["fid_error"]


def test_fid_with_the_standin_graph_and_the_real_statistics_cache(model, labelled, graph, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(labelled, data)
    settings = config(tmp_path, inception_weights=graph)
    first = evaluation.evaluate(model, settings, M(data))
    protocol = first["fid_protocol"]
    assert first["fid"] >= 0 and first["kid"] is not None and first["fid_error"] is None
    assert protocol["real_statistics"] == "computed"
    assert protocol["comparable"] and protocol["network_sha256"]
    assert (protocol["generated"], protocol["real"]) == (5, 5)  # 8 asked, capped to the split
    assert protocol["crop"] == [0, 40, 178, 218] and protocol["image_size"] == [32, 32]
    again = evaluation.evaluate(model, settings, M(data))
    assert again["fid_protocol"]["real_statistics"] == "cached"
    drop = VOLATILE | {"fid_protocol"}
    assert {k: v for k, v in again.items() if k not in drop} == {
        k: v for k, v in first.items() if k not in drop
    }  # the same seed, the same numbers
    # The dataset is prepared again from other faces: the cached statistics are stale.
    shutil.rmtree(judge.default_dir(data))  # prepare_celeba replaces only a dataset's own files
    source = str(tmp_path / "source")
    synthetic.write_source(source, 48, seed=5, workers=1, verbose=False)
    prepare.prepare(
        source, data, size=32, examples_per_shard=16, workers=1, verbose=False, overwrite=True
    )
    changed = evaluation.evaluate(model, settings, M(data))
    assert changed["fid_protocol"]["real_statistics"] == "computed"
    assert changed["fid"] != first["fid"]
    assert len(os.listdir(tmp_path / "cache" / evaluation.FID_STATS_SUBDIR)) == 1  # replaced


def test_active_units_count_the_codes_that_vary(tiny_data_dir, tmp_path, monkeypatch):
    """An encoder whose z_mean head uses dims 0 and 1 only: 2 active units of 4."""
    vae = VAE(NetworkConfig(image_shape=(32, 32, 3), filters=(8, 16), z_dim=4), seed=0)
    head = vae.encoder.get_layer("z_mean")
    kernel, bias = head.get_weights()  # (F, 4), (4,)
    kernel[:, :2] *= 100.0  # a spread of codes far above the threshold
    kernel[:, 2:] = 0.0  # z_mean = bias for every image: inactive
    head.set_weights([kernel, bias])
    settings = config(tmp_path, inception_weights="none")
    results = evaluation.evaluate(vae, settings, M(tiny_data_dir))
    images = [e["image"].numpy() for e in dataset.examples(M(tiny_data_dir), "test")]
    z_mean = vae.encode(np.stack(images).astype(np.float32) / 255.0)[0].numpy()  # (5, 4)
    assert results["active_units"] == int(analysis.active_units(z_mean).sum()) == 2
    # Only the first MAX_ACTIVE_UNIT_CODES images are kept: one image's codes never vary.
    monkeypatch.setattr(evaluation, "MAX_ACTIVE_UNIT_CODES", 1)
    assert evaluation.evaluate(vae, settings, M(tiny_data_dir))["active_units"] == 0


def test_judge_numbers(model, labelled, tmp_path):
    results = evaluation.evaluate(model, config(tmp_path, inception_weights="none"), M(labelled))
    assert results["fid"] is None and results["fid_error"] == "`inception_weights`=none"
    assert results["judge_error"] is None
    assert results["judge_fd"] > 0
    the_judge = judge.load(judge.default_dir(labelled), M(labelled))
    assert 0 < results["judge_attributes"] <= the_judge.active.sum()
    for key in (
        "judge_real_accuracy",
        "judge_recon_accuracy",
        "judge_edit_add_success",
        "judge_edit_remove_success",
        "judge_edit_success",
    ):
        assert 0 <= results[key] <= 1, key
    assert results["judge_edit_images"] == 5  # 6 asked, the split has 5
    names = np.array(the_judge.report.attribute_names)
    edited = results["judge_edit_per_attribute"]
    assert edited and set(edited) <= set(names[the_judge.active])


def test_gmm_prior_is_fitted_cached_and_changes_the_samples(model, labelled, tmp_path):
    normal = evaluation.evaluate(model, config(tmp_path, inception_weights="none"), M(labelled))
    gmm = evaluation.evaluate(
        model,
        config(tmp_path, inception_weights="none", prior="gmm", gmm_components=2),
        M(labelled),
    )
    assert os.path.isfile(tmp_path / "prior_gmm.npz")
    assert gmm["prior"] == gmm["fid_protocol"]["prior"] == "gmm"
    assert gmm["judge_fd"] != normal["judge_fd"]
    assert gmm["elbo_nats"] == normal["elbo_nats"]  # the prior changes samples only


def test_run_writes_the_json_and_stops_on_bad_settings(model, tmp_path):
    for kwargs, message in [
        ({"temperature": math.inf}, "`temperature`=inf: give a number in"),
        ({"fid_samples": 0}, "`fid_samples`=0: give a whole number of at least 1"),
        ({"fid_samples": 10**6}, "`fid_samples`=1000000: at most 100000"),
        ({"prior": "uniform"}, "`prior`=uniform: use one of normal, gmm"),
        ({"max_examples": -1}, "`max_examples`=-1: give 0 or more"),
    ]:
        with pytest.raises(evaluation.EvaluationError, match=message):
            config(tmp_path, **kwargs)


def test_missing_inception_file_is_an_error(model, tiny_data_dir, tmp_path):
    with pytest.raises(
        evaluation.EvaluationError,
        match=r"`inception_weights`=/missing\.h5: no file at /missing\.h5",
    ):
        evaluation.evaluate(
            model, config(tmp_path, inception_weights="/missing.h5"), M(tiny_data_dir)
        )
    assert not np.any([name.endswith(".json") for name in os.listdir(tmp_path)])


def test_corrupt_test_shard_is_named(model, tiny_data_dir, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(tiny_data_dir, data, ignore=shutil.ignore_patterns(schema.JUDGE_DIR))
    shard = next(name for name in sorted(os.listdir(data)) if name.startswith("test-"))
    with open(os.path.join(data, shard), "r+b") as f:
        f.seek(40)
        f.write(b"\xff" * 8)  # inside the first record: the size stays, the bytes change
    with pytest.raises(schema.DatasetError, match=f"{shard} has a different sha256"):
        evaluation.evaluate(model, config(tmp_path, inception_weights="none"), M(data))
