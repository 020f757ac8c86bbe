"""model/inception.py through a stand-in of TTUR's graph (the real one needs the internet)."""

import io
import json
import os
import urllib.error

import inception_standin
import numpy as np
import pytest
import tensorflow as tf

from facevae.model import analysis, inception


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Every test starts as a new process would: nothing loaded or tried yet."""
    monkeypatch.setattr(inception, "_attempts", {})


def new_process(monkeypatch):
    monkeypatch.setattr(inception, "_attempts", {})


def fid(a: np.ndarray, b: np.ndarray) -> float:
    return analysis.frechet_distance_from_stats(
        *analysis.gaussian_stats(a), *analysis.gaussian_stats(b)
    )


def test_standin_graph_fid_is_zero_on_itself_and_grows_with_noise(tmp_path):
    network = inception.load(inception_standin.write_graph(str(tmp_path / "g.pb")), "unused")
    assert network.comparable and network.name.startswith("inception-2015-12-05")
    rng = np.random.default_rng(0)
    # Smooth images (blocks of 4x4 pixels), so that pixel noise changes the features.
    images = rng.integers(0, 256, (120, 6, 6, 3)).repeat(4, axis=1).repeat(4, axis=2)
    images = images.astype(np.uint8)  # (120, 24, 24, 3)
    features = network.features(images)  # 120 images: three batches of up to 50
    assert features.shape == (120, inception_standin.FEATURES)
    np.testing.assert_array_equal(network.features(images[:7]), features[:7])  # batch-agnostic
    noisy = [
        np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)
        for sigma in (10, 40, 90)
    ]
    distances = [fid(features, network.features(x)) for x in noisy]
    assert fid(features, features) < 1e-6 * distances[0]
    assert 0 < distances[0] < distances[1] < distances[2]
    # Floats in [0, 1] are quantised like a saved PNG: the same features as the uint8 images.
    np.testing.assert_allclose(network.features(images / 255.0), features, rtol=1e-6)


def test_offline_download_is_tried_once_and_not_again_for_a_day(tmp_path, monkeypatch):
    calls = []

    def offline(url):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(inception, "_urlopen", offline)
    cache = str(tmp_path / "cache")
    for _ in range(2):  # one process asking twice
        with pytest.raises(inception.NoInceptionError, match="could not be downloaded"):
            inception.load("ttur", cache)
    assert len(calls) == 1
    new_process(monkeypatch)  # the next run, minutes later
    with pytest.raises(inception.NoInceptionError, match="not retried for a day") as error:
        inception.load("ttur", cache)
    assert "`inception_weights` /path/to/classify_image_graph_def.pb" in str(error.value)
    assert len(calls) == 1
    marker = os.path.join(cache, inception.GRAPH_SUBDIR, "download-failed.json")
    with open(marker) as f:
        failure = json.load(f)
    failure["time"] -= inception.RETRY_AFTER_S + 1  # a day later
    with open(marker, "w") as f:
        json.dump(failure, f)
    new_process(monkeypatch)
    with pytest.raises(inception.NoInceptionError, match="could not be downloaded"):
        inception.load("ttur", cache)
    assert len(calls) == 2


def test_download_is_verified_cached_and_checked_on_every_use(tmp_path, monkeypatch):
    archive = inception_standin.write_archive(str(tmp_path / "inception-2015-12-05.tgz"))
    calls = []

    def online(url):
        calls.append(url)
        with open(archive, "rb") as f:
            return io.BytesIO(f.read())

    monkeypatch.setattr(inception, "_urlopen", online)
    cache = str(tmp_path / "cache")
    network = inception.load("ttur", cache)
    path = os.path.join(cache, inception.GRAPH_SUBDIR, inception.GRAPH_FILE)
    assert os.path.isfile(path) and os.path.isfile(path + ".sha256")
    with open(path + ".sha256") as f:
        assert network.digest == f.read()
    new_process(monkeypatch)
    assert inception.load("ttur", cache).digest == network.digest
    assert len(calls) == 1  # the second run read the cache
    with open(path, "ab") as f:
        f.write(b"\0")  # damaged after the download
    new_process(monkeypatch)
    with pytest.raises(inception.NoInceptionError, match="differs from the copy downloaded"):
        inception.load("ttur", cache)


def test_downloaded_file_that_is_not_the_graph_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "_urlopen", lambda url: io.BytesIO(b"<html>captive portal"))
    with pytest.raises(inception.NoInceptionError, match=r"not a readable \.tgz"):
        inception.load("ttur", str(tmp_path))
    assert not os.path.exists(os.path.join(tmp_path, inception.GRAPH_SUBDIR, inception.GRAPH_FILE))


def test_sources_given_as_paths(tmp_path):
    archive = inception_standin.write_archive(str(tmp_path / "inception.tgz"))
    from_archive = inception.load(archive, "unused")
    from_graph = inception.load(inception_standin.write_graph(str(tmp_path / "g.pb")), "unused")
    assert from_archive.digest == from_graph.digest
    with pytest.raises(inception.InceptionFileError, match=r"no file at .*missing\.pb"):
        inception.load(str(tmp_path / "missing.pb"), "unused")
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff" * 100)
    with pytest.raises(inception.InceptionFileError, match="not a GraphDef"):
        inception.load(str(junk), "unused")
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.placeholder(tf.float32, [None, 3], name="ExpandDims")
    other = tmp_path / "other.pb"
    other.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(inception.InceptionFileError, match=r"no tensor \['pool_3:0'\]"):
        inception.load(str(other), "unused")
    with pytest.raises(inception.NoInceptionError, match="none"):
        inception.load("none", "unused")


def test_bad_keras_weights_file_is_an_error(tmp_path):
    bad = tmp_path / "weights.h5"
    bad.write_bytes(b"not an h5 file")
    with pytest.raises(inception.InceptionFileError, match="not keras InceptionV3"):
        inception.load(str(bad), "unused")
