"""Where sampled latents come from: the prior N(0, T^2 I), or a mixture fitted on training codes.

A VAE's aggregate posterior q(z) = E_x q(z|x) rarely fills N(0, I): decoding prior samples
from the holes between the codes gives blurry or broken faces. Ghosh et al. (2020, "From
Variational to Deterministic Autoencoders") fit a Gaussian mixture (10 components, full
covariances) to the training codes after training and sample from it instead ("ex-post
density estimation"), with large FID gains for VAEs; it also makes a plain autoencoder
generative. Here:

- fit_gmm: EM on codes (N, D) in numpy, seeded (k-means++ start, then Lloyd, then EM), so
  the same codes and seed give the same mixture.
- workdir_gmm: the mixture of a run, fitted on the z_mean of the first GMM_MAX_CODES
  training images and cached in <workdir>/prior_gmm.npz for these weights and that data.
- latents: n latent vectors from "normal" or "gmm", seeded.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import zipfile

import keras
import numpy as np

from facevae.model import codes as latent_codes
from facevae.pipeline import files, schema

PRIORS = ("normal", "gmm")
GMM_FILE = "prior_gmm.npz"
DEFAULT_COMPONENTS = 10  # Ghosh et al. (2020)
GMM_MAX_CODES = latent_codes.TRAIN_CODES  # EM costs N * K * D^2 per iteration: ~a minute
REG_COVAR = 1e-6  # added to every covariance's diagonal: collapsed latent dims stay invertible
KMEANS_ITERATIONS = 10


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    """weights (K,), means (K, D), covariances (K, D, D), all float64."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    @property
    def cholesky(self) -> np.ndarray:
        return np.linalg.cholesky(self.covariances)  # (K, D, D) lower

    def sample(self, n: int, seed: int, temperature: float = 1.0) -> np.ndarray:
        """n codes (n, D): a component by weight, then its mean + T * its Gaussian noise."""
        rng = np.random.default_rng(seed)
        components = rng.choice(len(self.weights), size=n, p=self.weights)  # (n,)
        noise = rng.standard_normal((n, self.means.shape[1]))  # (n, D)
        spread = np.einsum("nij,nj->ni", self.cholesky[components], noise)
        return self.means[components] + temperature * spread

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        """log density of each row of z (N, D): (N,)."""
        return _logsumexp(_component_log_densities(self, np.asarray(z, np.float64)), axis=1)

    def save(self, path: str, key: str) -> None:
        """Writes the mixture and its cache key to an .npz, whole or not at all."""
        files.write_npz(
            path,
            weights=self.weights,
            means=self.means,
            covariances=self.covariances,
            key=np.array(key),
        )

    @classmethod
    def load(cls, path: str) -> tuple[GaussianMixture, str]:
        """A saved mixture and its key; ValueError if the file is not one (never unpickled)."""
        with np.load(path, allow_pickle=False) as f:
            gmm = cls(f["weights"], f["means"], f["covariances"])
            key = str(f["key"])
        k, d = gmm.means.shape if gmm.means.ndim == 2 else (0, 0)
        if (
            gmm.weights.shape != (k,)
            or gmm.covariances.shape != (k, d, d)
            or not all(np.isfinite(a).all() for a in (gmm.weights, gmm.means, gmm.covariances))
        ):
            raise ValueError("the arrays do not make a finite Gaussian mixture")
        return gmm, key


# --------------------------------------------------------------------------- EM


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    peak = x.max(axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.exp(x - peak).sum(axis=axis))


def _component_log_densities(gmm: GaussianMixture, z: np.ndarray) -> np.ndarray:
    """log(w_k N(z_n | mu_k, S_k)): (N, K)."""
    n, d = z.shape
    out = np.empty((n, len(gmm.weights)))
    for k, lower in enumerate(gmm.cholesky):
        whitened = np.linalg.solve(lower, (z - gmm.means[k]).T)  # (D, N)
        log_det = 2.0 * np.log(np.diag(lower)).sum()
        out[:, k] = -0.5 * (np.square(whitened).sum(0) + log_det + d * np.log(2 * np.pi))
    return out + np.log(gmm.weights)


def _kmeans_plus_plus(z: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k starting centres (k, D), each drawn with probability ~ squared distance to the rest."""
    centres = [z[rng.integers(len(z))]]
    distance = np.square(z - centres[0]).sum(1)
    for _ in range(1, k):
        total = distance.sum()
        index = rng.choice(len(z), p=distance / total) if total > 0 else rng.integers(len(z))
        centres.append(z[index])
        distance = np.minimum(distance, np.square(z - z[index]).sum(1))
    return np.stack(centres)


def _m_step(z: np.ndarray, resp: np.ndarray) -> GaussianMixture:
    """Weights, means and regularised covariances from responsibilities (N, K)."""
    counts = resp.sum(0) + 1e-10  # (K,)
    means = resp.T @ z / counts[:, None]  # (K, D)
    covariances = np.empty((len(counts), z.shape[1], z.shape[1]))
    for k in range(len(counts)):
        centred = z - means[k]
        covariances[k] = (resp[:, k, None] * centred).T @ centred / counts[k]
        covariances[k].flat[:: z.shape[1] + 1] += REG_COVAR
    return GaussianMixture(counts / counts.sum(), means, covariances)


def fit_gmm(
    z: np.ndarray,
    components: int = DEFAULT_COMPONENTS,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-3,
) -> GaussianMixture:
    """A K-component full-covariance mixture fitted to codes (N, D) by EM; deterministic.

    Stops when the mean log-likelihood per code improves by less than `tol` nats.
    """
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"fit_gmm needs codes (N >= 2, D), got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("fit_gmm: the codes contain NaN or Inf (a diverged model?)")
    components = min(components, len(z))
    rng = np.random.default_rng(seed)
    centres = _kmeans_plus_plus(z, components, rng)
    for _ in range(KMEANS_ITERATIONS):
        # ||z - c||^2 without the (N, K, D) difference array: -2 z.c + ||c||^2 (+ ||z||^2).
        nearest = np.argmin(np.square(centres).sum(1) - 2.0 * z @ centres.T, axis=1)  # (N,)
        for k in range(components):
            if (nearest == k).any():
                centres[k] = z[nearest == k].mean(0)
    resp = np.eye(components)[nearest]  # (N, K) hard assignments to start EM
    gmm = _m_step(z, resp)
    previous = -np.inf
    for _ in range(max_iter):
        log_densities = _component_log_densities(gmm, z)  # (N, K)
        log_norm = _logsumexp(log_densities, axis=1)  # (N,)
        gmm = _m_step(z, np.exp(log_densities - log_norm[:, None]))
        mean_log_likelihood = float(log_norm.mean())
        if mean_log_likelihood - previous < tol:
            break
        previous = mean_log_likelihood
    return gmm


# --------------------------------------------------------------------------- a run's mixture


def gmm_key(model: keras.Model, manifest: schema.Manifest, components: int, seed: int) -> str:
    return (
        f"weights={latent_codes.weights_fingerprint(model)} "
        f"train={manifest.split('train').fingerprint} codes={GMM_MAX_CODES} "
        f"components={components} seed={seed}"
    )


def cached_gmm(
    model: keras.Model,
    workdir: str,
    manifest: schema.Manifest,
    *,
    components: int = DEFAULT_COMPONENTS,
    seed: int = 0,
) -> GaussianMixture | None:
    """The mixture cached in <workdir>/prior_gmm.npz for these weights, data and settings."""
    path = os.path.join(workdir, GMM_FILE)
    if not os.path.isfile(path):
        return None
    try:
        cached, cached_key = GaussianMixture.load(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # a kill, or foreign
        print(f"prior: ignoring unreadable {path} ({str(e)[:80]})", file=sys.stderr)
        return None
    return cached if cached_key == gmm_key(model, manifest, components, seed) else None


def workdir_gmm(
    model: keras.Model,
    workdir: str,
    manifest: schema.Manifest,
    *,
    components: int = DEFAULT_COMPONENTS,
    seed: int = 0,
    batch_size: int = 64,
    codes: latent_codes.Codes | None = None,
) -> GaussianMixture:
    """The run's mixture prior: from <workdir>/prior_gmm.npz when it was fitted for these
    weights, data and settings, else fitted now (on `codes` if given: the z_mean of the first
    GMM_MAX_CODES training images) and cached there. A read-only workdir is not an error."""
    cached = cached_gmm(model, workdir, manifest, components=components, seed=seed)
    if cached is not None:
        return cached
    if codes is None:
        codes = latent_codes.encode_split(
            model, manifest, "train", batch_size=batch_size, limit=GMM_MAX_CODES
        )
    gmm = fit_gmm(codes.z_mean, components, seed)
    print(
        f"prior: fitted a {len(gmm.weights)}-component Gaussian mixture on {len(codes.z_mean)} "
        "training codes",
        file=sys.stderr,
    )
    path = os.path.join(workdir, GMM_FILE)
    try:
        gmm.save(path, gmm_key(model, manifest, components, seed))
        print(f"prior: cached in {path}", file=sys.stderr)
    except OSError as e:
        print(f"prior: not cached ({e}); it is refitted next time", file=sys.stderr)
    return gmm


def latents(
    prior: str,
    n: int,
    z_dim: int,
    seed: int,
    temperature: float = 1.0,
    gmm: GaussianMixture | None = None,
) -> np.ndarray:
    """n latent vectors (n, z_dim) float32 from "normal" (N(0, T^2 I)) or "gmm", seeded."""
    if prior == "normal":
        z = np.random.default_rng(seed).standard_normal((n, z_dim)) * temperature
    elif prior == "gmm":
        if gmm is None:
            raise ValueError("prior 'gmm' needs the fitted mixture (workdir_gmm)")
        z = gmm.sample(n, seed, temperature)
    else:
        raise ValueError(f"prior {prior!r}: use one of {PRIORS}")
    return z.astype(np.float32)
