"""Encoder and decoder networks of the VAE, built from a small frozen config.

The encoder is a stack of stride-2 convolutions (each halves the image), an optional
Dense layer, and two Dense heads `z_mean` and `z_log_var`. The decoder mirrors it: a
Dense to the encoder's last feature map, e.g. (6, 6, 256) for 96x96 inputs with four
convolutions, then stride-2 transposed convolutions, the last one linear: it returns
LOGITS, whose sigmoid is the image (so BCE can be computed stably from logits).

BatchNormalization here is keras.layers.BatchNormalization running TensorFlow's fused
kernel on 4-D channels-last inputs: Keras 3's own layer is not fused (separate moments and
normalisation ops), which cost about a third of a training step on a CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

NORMS = ("batch", "none")
ACTIVATIONS = ("leaky_relu", "relu", "elu", "gelu", "silu", "tanh")
MAX_UNITS = 1 << 16  # widths and latent sizes beyond this are a typo, not a model


class ConfigError(ValueError):
    """A model setting that cannot be built: `field` names it (the flag of the same name),
    `problem` says what to give instead; the message is `<owner>.<field>=<value>: <problem>`."""

    def __init__(
        self, owner: str, field: str, value: Any, problem: str, message: str | None = None
    ) -> None:
        super().__init__(message or f"{owner}.{field}={_short(value)}: {problem}")
        self.field, self.value, self.problem = field, value, problem


def _positive_ints(name: str, values: tuple[int, ...], most: int = MAX_UNITS) -> None:
    if not values or any(
        isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= most for v in values
    ):
        raise ConfigError("NetworkConfig", name, values, f"give positive integers (<= {most:,}).")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Shapes and layer choices of the encoder and decoder.

    Attributes:
      image_shape: (height, width, channels) of the images; height and width must be
        divisible by 2**len(filters).
      filters: encoder convolution widths (each conv has stride 2); the decoder mirrors them.
      kernel_size: convolution kernel size.
      z_dim: latent dimensions.
      norm: "batch" (BatchNormalization after each conv) or "none".
      activation: name of a keras activation, one of ACTIVATIONS.
      dense_units: width of an extra Dense layer before the latent heads, 0 for none
        (a narrow one shrinks the heads' weights on large images).
    """

    image_shape: tuple[int, int, int] = (96, 96, 3)
    filters: tuple[int, ...] = (32, 64, 128, 256)
    kernel_size: int = 3
    z_dim: int = 256
    norm: str = "batch"
    activation: str = "leaky_relu"
    dense_units: int = 0

    def __post_init__(self) -> None:
        # JSON gives lists: store tuples so the config stays hashable and comparable.
        for name in ("image_shape", "filters"):  # JSON gives lists; a hostile file gives anything
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ConfigError("NetworkConfig", name, value, "give a list.")
            object.__setattr__(self, name, tuple(value))
        if len(self.image_shape) != 3:
            raise ConfigError(
                "NetworkConfig", "image_shape", self.image_shape, "give (height, width, channels)."
            )
        _positive_ints("image_shape", self.image_shape)
        if len(self.filters) > 8:  # each halves the image: 2**8 = 256 pixels already
            raise ConfigError("NetworkConfig", "filters", self.filters, "give at most 8.")
        _positive_ints("filters", self.filters)
        _positive_ints("kernel_size", (self.kernel_size,), most=15)
        _positive_ints("z_dim", (self.z_dim,))
        if (
            isinstance(self.dense_units, bool)
            or not isinstance(self.dense_units, int)
            or not 0 <= self.dense_units <= MAX_UNITS
        ):
            raise ConfigError(
                "NetworkConfig",
                "dense_units",
                self.dense_units,
                f"give 0 (no extra Dense) or a positive integer (<= {MAX_UNITS:,}).",
            )
        if self.norm not in NORMS:
            raise ConfigError("NetworkConfig", "norm", self.norm, f"use one of {NORMS}.")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                "NetworkConfig", "activation", self.activation, f"use one of {ACTIVATIONS}."
            )
        factor = 2 ** len(self.filters)
        height, width, _ = self.image_shape
        if height % factor or width % factor:
            raise ConfigError(
                "NetworkConfig",
                "filters",
                self.filters,
                f"the image_shape {self.image_shape!r} needs height and width divisible by "
                f"2**len(filters)={factor}; resize the images or use fewer filters.",
            )

    @property
    def bottleneck_shape(self) -> tuple[int, int, int]:
        """Shape of the encoder's last feature map, e.g. (6, 6, 256)."""
        factor = 2 ** len(self.filters)
        return (self.image_shape[0] // factor, self.image_shape[1] // factor, self.filters[-1])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        """The inverse of to_dict; unknown keys are an error."""
        if not isinstance(d, dict):
            raise ConfigError("NetworkConfig", "network", d, "give an object.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            problem = f"unknown keys {_short(unknown)}; known keys are {sorted(known)}."
            raise ConfigError(
                "NetworkConfig", unknown[0], d[unknown[0]], problem, f"NetworkConfig: {problem}"
            )
        return cls(**d)


_FUSED_DTYPES = (tf.float32, tf.float16, tf.bfloat16)  # the kernel's input types (float32 stats)


@keras.saving.register_keras_serializable(package="facevae")
class BatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization computed by TF's fused kernel on (B, H, W, C) inputs.

    The same variables (gamma, beta, moving_mean, moving_variance), config and results as
    Keras' layer: batch statistics in float32 also under mixed precision, moving statistics
    updated with Keras' convention `moving = moving * momentum + batch * (1 - momentum)` from
    the biased batch variance, per replica under tf.distribute (through the same variable
    assignments). Other inputs (2-D, a mask, channels-first, renorm, synchronized, float64)
    take Keras' path unchanged.
    """

    def _fusable(self, inputs: tf.Tensor, mask: tf.Tensor | None) -> bool:
        rank = len(inputs.shape)
        return (
            rank == 4
            and self.axis % rank == 3
            and mask is None
            and not self.renorm
            and not self.synchronized
            and tf.as_dtype(inputs.dtype) in _FUSED_DTYPES
            and self.variable_dtype == "float32"
        )

    def call(
        self, inputs: tf.Tensor, training: bool | None = None, mask: tf.Tensor | None = None
    ) -> tf.Tensor:
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = tf.convert_to_tensor(self.gamma) if self.scale else tf.ones((channels,), tf.float32)
        offset = (
            tf.convert_to_tensor(self.beta) if self.center else tf.zeros((channels,), tf.float32)
        )
        if training and self.trainable:
            outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs,  # (B, H, W, C), float32 / float16 / bfloat16
                scale=scale,
                offset=offset,
                mean=tf.constant([], tf.float32),
                variance=tf.constant([], tf.float32),
                epsilon=self.epsilon,
                is_training=True,
            )
            # The kernel returns the Bessel-corrected variance n / (n - 1) * biased (n = B*H*W,
            # with n - 1 floored at 1); Keras averages the biased one into moving_variance.
            n = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, tf.float32)
            variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
        else:
            outputs, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=scale,
                offset=offset,
                mean=tf.convert_to_tensor(self.moving_mean),
                variance=tf.convert_to_tensor(self.moving_variance),
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)


# Keras' default 0.99 averages the batch statistics over ~100 steps, while early in training
# the weights move faster than that: the demo's moving statistics trailed the network so far
# that its test PSNR was 17.8 dB in inference mode and 24.1 dB with statistics recomputed for
# the final weights. 0.9 (PyTorch's default) follows within ~10 steps; training is unchanged.
BN_MOMENTUM = 0.9


def _norm_act(x: keras.KerasTensor, config: NetworkConfig, name: str) -> keras.KerasTensor:
    if config.norm == "batch":
        x = BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation(config.activation, name=f"{name}_act")(x)


def build_encoder(config: NetworkConfig) -> keras.Model:
    """Image in [0, 1] (B, H, W, C) -> [z_mean, z_log_var], each (B, z_dim) float32."""
    use_bias = config.norm == "none"  # BatchNorm's beta makes a conv bias redundant
    images = keras.Input(config.image_shape, name="images")
    x = images
    for i, filters in enumerate(config.filters):
        x = keras.layers.Conv2D(
            filters,
            config.kernel_size,
            strides=2,
            padding="same",
            use_bias=use_bias,
            name=f"conv{i}",
        )(x)  # (B, H / 2^(i+1), W / 2^(i+1), filters)
        x = _norm_act(x, config, f"conv{i}")
    x = keras.layers.Flatten(name="flatten")(x)  # (B, 6 * 6 * 256) for the default
    if config.dense_units:
        x = keras.layers.Dense(config.dense_units, use_bias=use_bias, name="dense")(x)
        x = _norm_act(x, config, "dense")
    # float32 heads: the latent statistics feed exp() and the KL, even under mixed precision.
    z_mean = keras.layers.Dense(config.z_dim, dtype="float32", name="z_mean")(x)
    z_log_var = keras.layers.Dense(config.z_dim, dtype="float32", name="z_log_var")(x)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def build_decoder(config: NetworkConfig) -> keras.Model:
    """Latent z (B, z_dim) -> logits (B, H, W, C) float32; the images are their sigmoid."""
    use_bias = config.norm == "none"
    bottleneck = config.bottleneck_shape
    z = keras.Input((config.z_dim,), name="z")
    x = keras.layers.Dense(
        bottleneck[0] * bottleneck[1] * bottleneck[2], use_bias=use_bias, name="dense"
    )(z)
    x = _norm_act(x, config, "dense")
    x = keras.layers.Reshape(bottleneck, name="reshape")(x)  # (B, 6, 6, 256) for the default
    for i, filters in enumerate(reversed(config.filters[:-1])):
        x = keras.layers.Conv2DTranspose(
            filters,
            config.kernel_size,
            strides=2,
            padding="same",
            use_bias=use_bias,
            name=f"deconv{i}",
        )(x)  # doubles height and width
        x = _norm_act(x, config, f"deconv{i}")
    # The last upsampling maps to the image channels, linear; float32 logits for the loss.
    logits = keras.layers.Conv2DTranspose(
        config.image_shape[2],
        config.kernel_size,
        strides=2,
        padding="same",
        dtype="float32",
        name="logits",
    )(x)  # (B, H, W, C)
    return keras.Model(z, logits, name="decoder")
