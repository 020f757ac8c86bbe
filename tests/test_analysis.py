import numpy as np
import pytest

from facevae.model import analysis


def test_slerp_and_lerp_endpoints_equal_inputs():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(16), rng.standard_normal(16)
    for method in ("linear", "spherical"):
        path = analysis.interpolate(a, b, 7, method)
        assert path.shape == (7, 16)
        np.testing.assert_array_equal(path[0], a)
        np.testing.assert_array_equal(path[-1], b)


def test_slerp_follows_the_great_circle():
    a, b = np.array([2.0, 0.0]), np.array([0.0, 2.0])
    path = analysis.slerp(a, b, np.linspace(0, 1, 5))
    # Equal norms: every point keeps the norm, at evenly spaced angles.
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 2.0)
    np.testing.assert_allclose(np.arctan2(path[:, 1], path[:, 0]), np.linspace(0, np.pi / 2, 5))
    # Parallel vectors have no circle: slerp is lerp.
    np.testing.assert_allclose(analysis.slerp(a, 3 * a, np.array([0.5]))[0], 2 * a)
    with pytest.raises(ValueError, match="linear"):
        analysis.interpolate(a, b, 5, "cubic")


def test_attribute_vectors_equal_the_mean_difference():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((40, 6))
    attributes = rng.integers(0, 2, (40, 3))
    attributes[0, 0] = -1  # unknown labels are ignored
    attributes[:, 2] = 1  # an attribute every image has: undefined
    vectors = analysis.attribute_vectors(z, attributes)
    assert vectors.shape == (3, 6)
    for k in range(2):
        has, lacks = attributes[:, k] == 1, attributes[:, k] == 0
        np.testing.assert_allclose(vectors[k], z[has].mean(0) - z[lacks].mean(0))
    assert np.isnan(vectors[2]).all()
    with pytest.raises(ValueError, match="attributes"):
        analysis.attribute_vectors(z, attributes[:5])


def test_kl_active_units_and_aggregate_posterior():
    rng = np.random.default_rng(2)
    z_mean = np.zeros((500, 3))
    z_mean[:, 0] = rng.standard_normal(500)  # the only dimension that varies with x
    z_log_var = np.zeros((500, 3))
    z_log_var[:, 2] = np.log(0.25)
    kl = analysis.kl_per_dimension(z_mean, z_log_var)
    np.testing.assert_allclose(kl[1], 0.0)  # the posterior equals the prior
    np.testing.assert_allclose(kl[2], -0.5 * (1 + np.log(0.25) - 0.25))
    np.testing.assert_allclose(kl[0], 0.5 * np.mean(z_mean[:, 0] ** 2))
    assert analysis.active_units(z_mean).tolist() == [True, False, False]
    mean, std = analysis.aggregate_posterior(z_mean, z_log_var)
    np.testing.assert_allclose(std, np.sqrt([1 + z_mean[:, 0].var(), 1.0, 0.25]))
    np.testing.assert_allclose(mean, z_mean.mean(0))


def test_psnr():
    a = np.full((2, 4, 4, 3), 0.5)
    b = a.copy()
    b[1] += 0.1
    values = analysis.psnr(a, b)
    assert values[0] == np.inf
    np.testing.assert_allclose(values[1], 20.0)  # 10 log10(1 / 0.01)


def _reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr(sqrtm(S_a S_b)): S_a S_b is similar to a PSD matrix, so its eigenvalues are >= 0.
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)).sum()
    return np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b) - 2 * trace_sqrt


@pytest.mark.parametrize("n, f", [(300, 4), (12, 40)])  # the full-rank and the low-rank route
def test_frechet_distance_matches_the_definition(n, f):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((n, f))
    b = 1.5 * rng.standard_normal((n + 5, f)) + 0.2
    np.testing.assert_allclose(analysis.frechet_distance(a, b), _reference_fid(a, b), rtol=1e-6)
    assert analysis.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_kid_is_zero_in_expectation_and_grows_with_shift():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((200, 8)), rng.standard_normal((200, 8))
    same, _ = analysis.kernel_inception_distance(a, b, num_subsets=20, subset_size=100)
    shifted, _ = analysis.kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=100)
    assert abs(same) < 0.05 < shifted


def test_fid_from_cached_statistics_equals_fid_from_features():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((400, 6))
    b = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.5
    mu, cov = analysis.gaussian_stats(a)
    np.testing.assert_allclose(mu, a.mean(0))
    np.testing.assert_allclose(cov, np.cov(a, rowvar=False))
    from_stats = analysis.frechet_distance_from_stats(mu, cov, *analysis.gaussian_stats(b))
    np.testing.assert_allclose(from_stats, analysis.frechet_distance(a, b), rtol=1e-8)
    assert analysis.frechet_distance_from_stats(mu, cov, mu, cov) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="feature sizes differ"):
        analysis.frechet_distance_from_stats(mu, cov, mu[:3], cov[:3, :3])
