"""Latent-space and sample-quality measures of sample.py and evaluate.py: numpy in, numpy out.

- lerp / slerp: paths between latent vectors.
- attribute_vectors: mean latent of images with an attribute minus those without.
- kl_per_dimension, active_units, aggregate_posterior: how the encoder uses its latents.
- psnr: per-image peak signal-to-noise ratio.
- frechet_distance (FID) and kernel_inception_distance (KID) between two feature sets, and
  gaussian_stats / frechet_distance_from_stats for statistics kept instead of features.
  The features come from model/inception.py (FID, KID) or model/judge.py (judge_fd).
"""

from __future__ import annotations

import numpy as np

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): Cov_x(E_q[z_d]) above this is "active"


# --------------------------------------------------------------------------- paths


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points (1 - t) a + t b for each t: a, b (D,), t (T,) -> (T, D)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]  # (T, 1)
    return (1.0 - t) * a + t * b


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation: a, b (D,), t (T,) -> (T, D); the ends are a and b exactly.

    Moves along the great circle between the directions (White, 2016): for vectors of equal
    norm the path keeps that norm, staying in the shell where Gaussian samples live instead
    of cutting through the low-density centre as lerp does. Nearly parallel vectors fall
    back to lerp.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0 or norm_b == 0:
        return lerp(a, b, t)
    cos = np.clip(np.dot(a / norm_a, b / norm_b), -1.0, 1.0)
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return lerp(a, b, t)
    t_col = t[:, None]  # (T, 1)
    points = (np.sin((1.0 - t_col) * omega) * a + np.sin(t_col * omega) * b) / np.sin(omega)
    # The exact endpoints, free of rounding: a path from an image must start at its code.
    points[t == 0.0] = a
    points[t == 1.0] = b
    return points


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
    """`steps` points from a to b inclusive, method "linear" or "spherical": (steps, D)."""
    if steps < 2:
        raise ValueError(f"interpolate needs steps >= 2 to include both ends, got {steps}")
    t = np.linspace(0.0, 1.0, steps)
    if method == "linear":
        return lerp(a, b, t)
    if method == "spherical":
        return slerp(a, b, t)
    raise ValueError(f"interpolation method {method!r}: use 'linear' or 'spherical'")


# --------------------------------------------------------------------------- latents


def attribute_vectors(z_means: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Per attribute, mean z_mean of images with it minus the mean of those without.

    z_means (N, D); attributes (N, A) 1 = has it, 0 = lacks it, anything else (the
    schema's -1) = unknown and ignored. Returns (A, D) float64; the row of an attribute
    that no image has, or every image has, is NaN (the difference is undefined).
    """
    z = np.asarray(z_means, np.float64)
    attributes = np.asarray(attributes)
    if z.ndim != 2 or attributes.ndim != 2 or len(z) != len(attributes):
        raise ValueError(
            f"attribute_vectors needs z_means (N, D) and attributes (N, A), got "
            f"{z.shape} and {attributes.shape}"
        )
    has = (attributes == 1).astype(np.float64)  # (N, A)
    lacks = (attributes == 0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_with = (has.T @ z) / has.sum(0)[:, None]  # (A, D)
        mean_without = (lacks.T @ z) / lacks.sum(0)[:, None]
    return mean_with - mean_without


def kl_per_dimension(z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray:
    """KL(q(z_d|x) || N(0, 1)) averaged over the N examples: (N, D) -> (D,) nats."""
    z_mean, z_log_var = np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)
    kl = -0.5 * (1.0 + z_log_var - np.square(z_mean) - np.exp(z_log_var))  # (N, D)
    return kl.mean(axis=0)


def active_units(z_mean: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> np.ndarray:
    """Which latent dimensions the encoder uses: variance over x of z_mean > threshold, (D,)."""
    return np.asarray(z_mean, np.float64).var(axis=0) > threshold


def aggregate_posterior(z_mean: np.ndarray, z_log_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per dimension of q(z) = mean over x of N(z_mean, exp(z_log_var)): (D,) each.

    For a VAE that matches its prior both are close to 0 and 1.
    """
    z_mean, z_log_var = np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)
    mean = z_mean.mean(axis=0)
    # Law of total variance: E_x[Var(z|x)] + Var_x(E[z|x]).
    variance = np.exp(z_log_var).mean(axis=0) + z_mean.var(axis=0)
    return mean, np.sqrt(variance)


# --------------------------------------------------------------------------- image quality


def psnr(a: np.ndarray, b: np.ndarray, max_value: float = 1.0) -> np.ndarray:
    """PSNR in dB per image of two (N, H, W, C) batches in [0, max_value]: (N,); inf if equal."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr needs batches of one shape, got {a.shape} and {b.shape}")
    mse = np.square(a - b).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(max_value**2 / mse)


def _centred(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and centred rows (N, F) of a feature set."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, F) features, got shape {features.shape}")
    mean = features.mean(axis=0)
    return mean, features - mean


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (rounding negatives to 0)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """tr((S_a S_b)^(1/2)) of the covariances S = X^T X / (N - 1) of centred rows a and b.

    With fewer samples than features, S_a S_b has the nonzero eigenvalues of
    (a b^T)(b a^T) / c, so the trace is the sum of the singular values of the small
    (N_a, N_b) matrix a b^T over sqrt(c). Otherwise the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2), which has the spectrum of S_a S_b, avoid a complex sqrtm.
    """
    scale = (len(a) - 1) * (len(b) - 1)
    if min(len(a), len(b)) <= a.shape[1]:
        return float(np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(scale))
    cov_a, cov_b = a.T @ a / (len(a) - 1), b.T @ b / (len(b) - 1)  # (F, F)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fit to (N, F)."""
    mu_a, a = _centred(feats_a)
    mu_b, b = _centred(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape[0]} and {mu_b.shape[0]}")
    trace_a = np.square(a).sum() / (len(a) - 1)  # tr(S_a) without forming S_a
    trace_b = np.square(b).sum() / (len(b) - 1)
    distance = np.sum(np.square(mu_a - mu_b)) + trace_a + trace_b
    distance -= 2.0 * _trace_sqrt_product(a, b)
    return float(max(distance, 0.0))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of (N >= 2, F) features, in float64."""
    mean, centred = _centred(features)
    return mean, centred.T @ centred / (len(centred) - 1)


def frechet_distance_from_stats(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """FID from the Gaussians' statistics, as kept in a cache: the same value as from features."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape[0]} and {mu_b.shape[0]}")
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a  # the spectrum of S_a S_b, symmetric
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(values, 0.0, None)).sum()
    distance = np.sum(np.square(mu_a - mu_b)) + np.trace(cov_a) + np.trace(cov_b)
    return float(max(distance - 2.0 * trace_sqrt, 0.0))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3  # the kernel of Binkowski et al. (2018)


def kernel_inception_distance(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with a cubic polynomial kernel, mean and std over random subsets.

    Each subset draws min(subset_size, N_a, N_b) rows of each set without replacement.
    """
    a, b = np.asarray(feats_a), np.asarray(feats_b)  # float64 per subset only: bounded memory
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)].astype(np.float64)  # (m, F)
        y = b[rng.choice(len(b), m, replace=False)].astype(np.float64)
        k_xx, k_yy, k_xy = (
            _polynomial_kernel(x, x),
            _polynomial_kernel(y, y),
            _polynomial_kernel(x, y),
        )
        # Unbiased: the diagonals of K_xx and K_yy (a sample against itself) are left out.
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates.append(within - 2.0 * k_xy.mean())
    return float(np.mean(estimates)), float(np.std(estimates))
