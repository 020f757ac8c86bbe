"""The VAE: a subclassed keras.Model with its own train_step and test_step.

Losses (all computed in float32, also under mixed precision):

- reconstruction_loss: mean binary cross-entropy per pixel from the decoder's logits
  ("bce", the original recipe), or mean squared error of the sigmoid output ("mse").
- kl_loss: KL(q(z|x) || N(0, I)) averaged over the batch and the latent dimensions.
- loss = reconstruction_loss + w * kl_loss, w = kl_weight, ramped linearly from 0 over
  kl_warmup_steps optimizer steps when warm-up is on.
- elbo: the unweighted evidence lower bound in nats per image under a Bernoulli decoder,
  -(sum of BCE over pixels + sum of KL over latent dims), averaged over the batch. It is the
  BCE-based bound also when training with "mse", so runs with different losses and weights
  compare on one scale. In "ae" mode there is no KL and it is minus the reconstruction NLL.
- bits_per_dim = -elbo / (H * W * C * ln 2).

Mode "ae" trains the same networks as a plain autoencoder: z = z_mean, no sampling, no KL.

Distribution: under tf.distribute (model.fit, or strategy.run(model.train_step, ...) in a
custom loop) each replica divides its loss by num_replicas_in_sync before the gradients,
so the summed gradients are those of the mean loss over the global batch; the metrics track
the unscaled loss. Inside strategy.run the returned metric values are the replica's own;
read `model.metrics` outside it (cross-replica context) for the global ones. Keras builds
the optimizer's slots at the first step; a loop that restores a checkpoint first calls
model.optimizer.build(model.trainable_variables) under the strategy scope.

Mixed precision: the latent heads and the logits are float32, and the loss goes through
optimizer.scale_loss, which a keras LossScaleOptimizer implements (compile() wraps the
optimizer in one when the model's policy is mixed_float16).

Non-finite input: train_step and test_step assert that the images are finite and raise
tf.errors.InvalidArgumentError naming the problem before any weight changes. The check is
one pass over the batch, about 1% of a step. Under XLA (jit_compile=True) the assertion is
compiled away; the loss is then NaN, which the trainer's per-step loss check catches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import tensorflow as tf

from facevae.model.networks import ConfigError, NetworkConfig, build_decoder, build_encoder

MODES = ("vae", "ae")
RECONSTRUCTION_LOSSES = ("bce", "mse")
METRIC_NAMES = ("loss", "reconstruction_loss", "kl_loss", "elbo", "bits_per_dim")
NON_FINITE_INPUT = (
    "VAE: the input images contain NaN or Inf; check the data pipeline "
    "(images must be float32 in [0, 1])."
)


@keras.saving.register_keras_serializable(package="facevae")
class Sampling(keras.layers.Layer):
    """z = z_mean + exp(z_log_var / 2) * eps with eps ~ N(0, I); reproducible with a seed.

    Given a `step` (the training step), eps is drawn from (seed, step) alone: the noise of
    a step is the same in a run resumed from a checkpoint as in one that never stopped.
    Without one, it comes from the layer's seed generator. Under tf.distribute each replica
    folds its replica id into the seed, so replicas draw independent noise for their parts
    of the batch.
    """

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # exp() of the log variance stays float32
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: list[tf.Tensor], step: tf.Tensor | None = None) -> tf.Tensor:
        z_mean, z_log_var = inputs  # (B, z_dim) each
        if step is not None and self.seed is not None:
            key = tf.constant([self.seed, 0], tf.int64)
            seed = tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))
        else:
            seed = self.seed_generator.next()
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            seed = tf.random.experimental.stateless_fold_in(seed, replica_id)
        eps = tf.random.stateless_normal(tf.shape(z_mean), seed=seed, dtype=z_mean.dtype)
        return z_mean + tf.exp(0.5 * z_log_var) * eps

    def compute_output_shape(self, input_shape: list[tuple]) -> tuple:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError("VAE", name, value, f"use one of {choices}.")


MAX_SEED = 2**32 - 1
VALIDATION_NOISE = 1 << 40  # offsets the step a validation's noise is drawn from


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every setting of a VAE: its networks and its loss; config.json's "model".

    Checked on construction (the networks by NetworkConfig): the one place a model setting
    is validated, whether it comes from flags, a notebook or a stored config.json. Each
    problem is a ConfigError naming the setting.
    """

    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    mode: str = "vae"
    # The original recipe's fact * mean(1 + log var - mu^2 - var) = 6.5e-4 has no 1/2: it is
    # 1.3e-3 on the mean KL (beta = kl_weight * H*W*C / z_dim on the ELBO, 0.14 at z_dim 256).
    kl_weight: float = 1.3e-3
    kl_warmup_steps: int = 0
    reconstruction_loss: str = "bce"
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.network, dict):
            object.__setattr__(self, "network", NetworkConfig.from_dict(self.network))
        elif not isinstance(self.network, NetworkConfig):
            raise ConfigError("VAE", "network", self.network, "give a NetworkConfig or its dict.")
        _check_choice("mode", self.mode, MODES)
        _check_choice("reconstruction_loss", self.reconstruction_loss, RECONSTRUCTION_LOSSES)
        weight = self.kl_weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise ConfigError("VAE", "kl_weight", weight, "give a finite number >= 0.")
        object.__setattr__(self, "kl_weight", float(weight))
        steps = self.kl_warmup_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps < 2**62:
            raise ConfigError(
                "VAE",
                "kl_warmup_steps",
                steps,
                "give 0 (no warm-up) or a positive number of steps.",
            )
        seed = self.seed
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
        ):
            raise ConfigError("VAE", "seed", seed, f"give 0..{MAX_SEED} or None.")

    @property
    def beta(self) -> float:
        """The weight of the KL on the usual ELBO: kl_weight * H*W*C / z_dim."""
        return self.kl_weight * math.prod(self.network.image_shape) / self.network.z_dim

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "network": self.network.to_dict()}

    @classmethod
    def from_dict(cls, values: Any) -> ModelConfig:
        """The inverse of to_dict; unknown keys or wrong types are a ConfigError."""
        if not isinstance(values, dict):
            raise ConfigError("VAE", "model", values, "give an object.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            problem = f"unknown keys {unknown}; known keys are {sorted(known)}."
            raise ConfigError("VAE", unknown[0], values[unknown[0]], problem, f"VAE: {problem}")
        return cls(**values)


@keras.saving.register_keras_serializable(package="facevae")
class VAE(keras.Model):
    """A convolutional VAE (or plain autoencoder) on images in [0, 1].

    Args:
      network: a NetworkConfig, its dict form, or None for the defaults (96x96x3, z_dim 256).
      mode: "vae", or "ae" for a plain autoencoder with the same networks.
      kl_weight: weight of the mean per-dimension KL in the loss; 1.3e-3 is the original
        recipe's 6.5e-4, whose KL term has no 1/2.
      kl_warmup_steps: ramp the KL weight linearly from 0 over this many optimizer steps;
        0 for no warm-up.
      reconstruction_loss: "bce" (mean per-pixel BCE from logits) or "mse".
      seed: seed of the sampling noise (None: nondeterministic).
    """

    def __init__(
        self,
        network: NetworkConfig | dict | None = None,
        *,
        mode: str = "vae",
        kl_weight: float = 1.3e-3,
        kl_warmup_steps: int = 0,
        reconstruction_loss: str = "bce",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = ModelConfig(
            network=NetworkConfig() if network is None else network,
            mode=mode,
            kl_weight=kl_weight,
            kl_warmup_steps=kl_warmup_steps,
            reconstruction_loss=reconstruction_loss,
            seed=seed,
        )
        network = self.network = self.config.network
        self.mode = mode
        self.kl_weight = self.config.kl_weight
        self.kl_warmup_steps = kl_warmup_steps
        self.reconstruction_loss = reconstruction_loss
        self.seed = seed
        self.encoder = build_encoder(network)
        self.decoder = build_decoder(network)
        self.sampling = Sampling(seed=seed, name="sampling")
        if mode == "ae":
            # No KL: the log variance gets no gradient, so it is not trained (and optimizers
            # do not warn about its missing gradients).
            self.encoder.get_layer("z_log_var").trainable = False
        self._trackers = [keras.metrics.Mean(name=name) for name in METRIC_NAMES]
        self.built = True  # the sub-models are built from the config already

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The Mean trackers of METRIC_NAMES; fit() and the trainer reset them per epoch."""
        return list(self._trackers)

    # Forward passes.

    def _forward(
        self, images: tf.Tensor, training: bool, sample: bool, step: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Logits (B, H, W, C), z_mean and z_log_var (B, z_dim), all float32; the noise of
        a sample comes from `step` when given (see Sampling)."""
        z_mean, z_log_var = self.encoder(images, training=training)
        if sample and self.mode == "vae":
            z = self.sampling([z_mean, z_log_var], step=step)
        else:
            z = z_mean
        logits = self.decoder(z, training=training)
        return tf.cast(logits, tf.float32), z_mean, z_log_var

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Reconstruction probabilities in [0, 1], (B, H, W, C); z is sampled when training."""
        logits, _, _ = self._forward(inputs, training=training, sample=bool(training))
        return tf.sigmoid(logits)

    def encode(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Images in [0, 1] (B, H, W, C) -> (z_mean, z_log_var), each (B, z_dim)."""
        z_mean, z_log_var = self.encoder(x, training=False)
        return z_mean, z_log_var

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """Latents (B, z_dim) -> images in [0, 1] (B, H, W, C)."""
        return tf.sigmoid(tf.cast(self.decoder(z, training=False), tf.float32))

    def reconstruct(self, x: tf.Tensor) -> tf.Tensor:
        """Deterministic reconstruction through z_mean, images in [0, 1]."""
        return self.decode(self.encode(x)[0])

    def generate(self, n: int, temperature: float = 1.0, seed: int | None = None) -> tf.Tensor:
        """n images from z ~ N(0, temperature^2 I); the same seed gives the same images."""
        z = keras.random.normal((n, self.network.z_dim), seed=seed) * temperature
        return self.decode(z)

    # Losses and steps.

    def _kl_scale(self) -> tf.Tensor | float:
        if self.kl_warmup_steps == 0 or self.optimizer is None:
            return self.kl_weight
        step = tf.cast(self.optimizer.iterations, tf.float32)
        return self.kl_weight * tf.minimum(1.0, step / self.kl_warmup_steps)

    def compute_losses(
        self, images: tf.Tensor, logits: tf.Tensor, z_mean: tf.Tensor, z_log_var: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """Every entry of METRIC_NAMES as a float32 scalar, for one (replica's) batch."""
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits)  # (B,H,W,C)
        if self.reconstruction_loss == "bce":
            reconstruction = tf.reduce_mean(bce)
        else:
            reconstruction = tf.reduce_mean(tf.square(tf.sigmoid(logits) - images))
        nll = tf.reduce_sum(bce, axis=[1, 2, 3])  # (B,) nats per image
        if self.mode == "vae":
            z_mean = tf.cast(z_mean, tf.float32)
            z_log_var = tf.cast(z_log_var, tf.float32)
            kl = -0.5 * (1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var))  # (B, z)
            kl_loss = tf.reduce_mean(kl)
            nll += tf.reduce_sum(kl, axis=1)
            loss = reconstruction + self._kl_scale() * kl_loss
        else:
            kl_loss = tf.zeros((), tf.float32)
            loss = reconstruction
        elbo = -tf.reduce_mean(nll)
        dims = math.prod(self.network.image_shape)
        return {
            "loss": loss,
            "reconstruction_loss": reconstruction,
            "kl_loss": kl_loss,
            "elbo": elbo,
            "bits_per_dim": -elbo / (dims * math.log(2.0)),
        }

    def _images(self, data: Any) -> tf.Tensor:
        images = data[0] if isinstance(data, (tuple, list)) else data
        images = tf.convert_to_tensor(images)
        if not images.dtype.is_floating:
            raise TypeError(
                f"VAE: images must be float32 in [0, 1], got dtype {images.dtype.name}; "
                "convert with tf.cast(images, tf.float32) / 255."
            )
        images = tf.debugging.assert_all_finite(images, NON_FINITE_INPUT)
        return tf.cast(images, tf.float32)

    def _update_metrics(self, values: dict[str, tf.Tensor], batch_size: tf.Tensor) -> dict:
        # Weighted by batch size: a short last batch counts for what it holds.
        for tracker in self._trackers:
            tracker.update_state(values[tracker.name], sample_weight=batch_size)
        return {tracker.name: tracker.result() for tracker in self._trackers}

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One optimizer step on images (B, H, W, C) in [0, 1] or an (images, ...) tuple."""
        images = self._images(data)
        with tf.GradientTape() as tape:
            logits, z_mean, z_log_var = self._forward(
                images, training=True, sample=True, step=self.optimizer.iterations
            )
            values = self.compute_losses(images, logits, z_mean, z_log_var)
            # Replica gradients are summed: scale so they add up to the global mean's.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(values["loss"] / replicas)
        weights = self.trainable_weights
        gradients = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(gradients, weights, strict=True))
        return self._update_metrics(values, tf.cast(tf.shape(images)[0], tf.float32))

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        """The same metrics without updating weights (BatchNorm in inference mode).

        In "vae" mode z is still sampled, so elbo is the usual one-sample estimate.
        """
        images = self._images(data)
        # Its own noise stream, also fixed by the step: validation at a step is repeatable.
        step = None if self.optimizer is None else self.optimizer.iterations + VALIDATION_NOISE
        logits, z_mean, z_log_var = self._forward(images, training=False, sample=True, step=step)
        values = self.compute_losses(images, logits, z_mean, z_log_var)
        return self._update_metrics(values, tf.cast(tf.shape(images)[0], tf.float32))

    # Serialisation.

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, **self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VAE:
        return cls(**config)
