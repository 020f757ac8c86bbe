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

import math
from typing import Any

import keras
import tensorflow as tf

from facevae.model.networks import NetworkConfig, build_decoder, build_encoder

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

    Under tf.distribute each replica folds its replica id into the seed, so replicas draw
    independent noise for their parts of the batch.
    """

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # exp() of the log variance stays float32
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        z_mean, z_log_var = inputs  # (B, z_dim) each
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
    if value not in choices:
        raise ValueError(f"VAE {name}={value!r}: use one of {choices}.")


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
        if network is None:
            network = NetworkConfig()
        elif isinstance(network, dict):
            network = NetworkConfig.from_dict(network)
        _check_choice("mode", mode, MODES)
        _check_choice("reconstruction_loss", reconstruction_loss, RECONSTRUCTION_LOSSES)
        if not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise ValueError(f"VAE kl_weight={kl_weight!r}: give a finite number >= 0.")
        if not isinstance(kl_warmup_steps, int) or kl_warmup_steps < 0:
            raise ValueError(
                f"VAE kl_warmup_steps={kl_warmup_steps!r}: give 0 (no warm-up) or a positive "
                "number of steps."
            )
        self.network = network
        self.mode = mode
        self.kl_weight = float(kl_weight)
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
        self, images: tf.Tensor, training: bool, sample: bool
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Logits (B, H, W, C), z_mean and z_log_var (B, z_dim), all float32."""
        z_mean, z_log_var = self.encoder(images, training=training)
        z = self.sampling([z_mean, z_log_var]) if sample and self.mode == "vae" else z_mean
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
            logits, z_mean, z_log_var = self._forward(images, training=True, sample=True)
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
        logits, z_mean, z_log_var = self._forward(images, training=False, sample=True)
        values = self.compute_losses(images, logits, z_mean, z_log_var)
        return self._update_metrics(values, tf.cast(tf.shape(images)[0], tf.float32))

    # Serialisation.

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "network": self.network.to_dict(),
            "mode": self.mode,
            "kl_weight": self.kl_weight,
            "kl_warmup_steps": self.kl_warmup_steps,
            "reconstruction_loss": self.reconstruction_loss,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VAE:
        return cls(**config)
