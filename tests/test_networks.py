"""Tests of model/networks.py: shapes for several configs, config validation, dict round trip."""

import json

import numpy as np
import pytest

from model.networks import NetworkConfig, build_decoder, build_encoder


def test_default_networks_match_the_original_shapes():
    config = NetworkConfig()
    encoder, decoder = build_encoder(config), build_decoder(config)
    assert encoder.name == "encoder" and decoder.name == "decoder"
    assert [tuple(t.shape) for t in encoder.outputs] == [(None, 256), (None, 256)]
    assert encoder.output_names == ["z_mean", "z_log_var"]
    assert decoder.get_layer("reshape").output.shape == (None, 6, 6, 256)
    assert tuple(decoder.output.shape) == (None, 96, 96, 3)
    assert config.bottleneck_shape == (6, 6, 256)


@pytest.mark.parametrize(
    "config",
    [
        NetworkConfig(image_shape=(64, 64, 3), filters=(8, 16, 32), z_dim=16, dense_units=32),
        NetworkConfig(image_shape=(32, 32, 1), filters=(8, 16), z_dim=8, norm="none"),
        NetworkConfig(image_shape=(32, 48, 3), filters=(8, 16), z_dim=4, activation="relu"),
        NetworkConfig(image_shape=(32, 32, 3), filters=(8,), kernel_size=5, z_dim=8),
    ],
)
def test_shapes_for_several_configs(config):
    encoder, decoder = build_encoder(config), build_decoder(config)
    images = np.random.default_rng(0).random((2, *config.image_shape), dtype=np.float32)
    z_mean, z_log_var = encoder(images)
    assert z_mean.shape == z_log_var.shape == (2, config.z_dim)
    assert z_mean.dtype.name == "float32"
    logits = decoder(z_mean)
    assert logits.shape == (2, *config.image_shape)
    # The dense layer sits before the heads only when asked for.
    assert ("dense" in [layer.name for layer in encoder.layers]) == bool(config.dense_units)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_shape": (100, 100, 3)}, "divisible by 2\\*\\*len\\(filters\\)=16"),
        ({"image_shape": (96, 96)}, "image_shape"),
        ({"image_shape": (96, 0, 3)}, "image_shape"),
        ({"filters": ()}, "filters"),
        ({"filters": (32, -1)}, "filters"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"z_dim": 0}, "z_dim"),
        ({"dense_units": -1}, "dense_units"),
        ({"norm": "layer"}, "norm='layer'"),
        ({"activation": "softmax"}, "activation='softmax'"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(**kwargs)


def test_dict_round_trip_through_json():
    config = NetworkConfig(image_shape=(64, 64, 3), filters=(8, 16), dense_units=4)
    restored = NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.filters, tuple)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys \\['zdim'\\]"):
        NetworkConfig.from_dict({"zdim": 8})
