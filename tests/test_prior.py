"""model/prior.py: the mixture fit and its sampling are reproducible; the workdir cache is keyed."""

import os

import numpy as np
import pytest

from facevae.model import prior
from facevae.model.networks import NetworkConfig
from facevae.model.vae import VAE


def two_clusters(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    right = rng.normal(0, 0.3, (300, 3)) + np.array([3, 0, 0])
    left = rng.normal(0, 0.5, (900, 3)) - np.array([3, 0, 0])
    return np.concatenate([right, left])


def test_fit_recovers_a_known_mixture():
    gmm = prior.fit_gmm(two_clusters(), components=2, seed=0)
    order = np.argsort(gmm.means[:, 0])  # (left, right)
    np.testing.assert_allclose(gmm.weights[order], [0.75, 0.25], atol=0.02)
    np.testing.assert_allclose(gmm.means[order], [[-3, 0, 0], [3, 0, 0]], atol=0.1)
    np.testing.assert_allclose(
        np.diagonal(gmm.covariances[order], axis1=1, axis2=2), [[0.25] * 3, [0.09] * 3], rtol=0.2
    )
    # More mass where the codes are than between the clusters.
    log_p = gmm.log_prob(np.array([[3.0, 0, 0], [0.0, 0, 0]]))
    assert log_p[0] > log_p[1] + 10


def test_log_prob_of_one_component_is_the_gaussian_density():
    gmm = prior.GaussianMixture(np.ones(1), np.array([[1.0, -1.0]]), np.diag([4.0, 0.25])[None])
    z = np.array([[0.0, 0.0], [1.0, -1.0]])
    expected = -0.5 * (
        ((z - [1, -1]) ** 2 / [4.0, 0.25]).sum(1) + np.log(4 * 0.25 * (2 * np.pi) ** 2)
    )
    np.testing.assert_allclose(gmm.log_prob(z), expected)


def test_fit_and_samples_are_reproducible_with_a_seed():
    codes = np.random.default_rng(1).standard_normal((400, 5))
    first, again = (prior.fit_gmm(codes, 4, seed=7) for _ in range(2))
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(first.sample(50, seed=3), again.sample(50, seed=3))
    assert not np.array_equal(first.sample(50, seed=3), first.sample(50, seed=4))
    z = prior.latents("gmm", 20, 5, seed=3, temperature=0.5, gmm=first)
    assert z.shape == (20, 5) and z.dtype == np.float32
    # Temperature scales each component's spread around its mean, not the means.
    cold = prior.latents("gmm", 20, 5, seed=3, temperature=0.0, gmm=first)
    assert {tuple(row) for row in cold} <= {tuple(m) for m in first.means.astype(np.float32)}
    normal = prior.latents("normal", 20, 5, seed=3, temperature=2.0)
    np.testing.assert_allclose(normal, 2 * np.random.default_rng(3).standard_normal((20, 5)))
    with pytest.raises(ValueError, match="needs the fitted mixture"):
        prior.latents("gmm", 2, 5, seed=0)


def test_fit_refuses_bad_codes():
    with pytest.raises(ValueError, match="NaN"):
        prior.fit_gmm(np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="N >= 2"):
        prior.fit_gmm(np.zeros((1, 2)))


def test_workdir_mixture_is_cached_for_these_weights(tiny_manifest, tmp_path, capsys):
    model = VAE(NetworkConfig(image_shape=(32, 32, 3), filters=(8, 16), z_dim=4), seed=0)
    workdir = str(tmp_path)
    first = prior.workdir_gmm(model, workdir, tiny_manifest, components=3)
    assert "fitted a 3-component" in capsys.readouterr().err
    assert os.path.isfile(os.path.join(workdir, prior.GMM_FILE))
    again = prior.workdir_gmm(model, workdir, tiny_manifest, components=3)
    assert "fitted" not in capsys.readouterr().err  # read from the cache
    np.testing.assert_array_equal(first.means, again.means)
    model.encoder.weights[0].assign(model.encoder.weights[0] * 2)  # training went on
    prior.workdir_gmm(model, workdir, tiny_manifest, components=3)
    assert "fitted" in capsys.readouterr().err
    # A workdir it cannot write (here: under a file) still gets its samples, only no cache.
    (tmp_path / "a-file").write_text("x")
    prior.workdir_gmm(model, str(tmp_path / "a-file" / "run"), tiny_manifest, components=2)
    assert "not cached" in capsys.readouterr().err
