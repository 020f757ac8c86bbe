"""Tests of model/networks.py: shapes for several configs, config validation, dict round trip,
and our fused BatchNormalization against Keras' layer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from facevae.model import networks
from facevae.model.networks import BatchNormalization, NetworkConfig, build_decoder, build_encoder

ROOT = Path(__file__).resolve().parents[1]


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


# ----------------------------------------------------------------- our fused BatchNormalization


def _pair(shape, policy="float32", **kwargs):
    """Our layer and Keras' with the same random gamma, beta and moving statistics."""
    ours = BatchNormalization(dtype=policy, **kwargs)
    keras_bn = keras.layers.BatchNormalization(dtype=policy, **kwargs)
    rng = np.random.default_rng(1)
    for layer in (ours, keras_bn):
        layer.build(shape)
    for ours_weight, keras_weight in zip(ours.weights, keras_bn.weights, strict=True):
        assert ours_weight.name == keras_weight.name  # checkpoints line up
        value = rng.uniform(0.5, 1.5, ours_weight.shape).astype(np.float32)
        ours_weight.assign(value)
        keras_weight.assign(value)
    return ours, keras_bn


def _step(layer, x, training, weights):
    """Output, gradients wrt (x, gamma, beta) of sum(output * weights)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    return (y, *tape.gradient(loss, [x, layer.gamma, layer.beta]))


# B*H*W = 18: the biased and Bessel-corrected variances differ by 6%, so mixing them up fails.
SHAPE_4D = (2, 3, 3, 5)
TOLERANCE = {"float32": 1e-5, "mixed_float16": 2e-2, "mixed_bfloat16": 1e-1}


@pytest.mark.parametrize(
    ("policy", "graph"),
    [
        ("float32", "eager"),
        ("float32", "tf_function"),
        ("float32", "xla"),  # train.py --jit_compile
        ("mixed_float16", "eager"),
        ("mixed_float16", "tf_function"),
        ("mixed_bfloat16", "eager"),
        ("mixed_bfloat16", "tf_function"),
    ],
)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("shape", [SHAPE_4D, (6, 5)], ids=["4d_fused", "2d_keras_path"])
def test_batch_norm_matches_keras(policy, graph, training, shape):
    ours, keras_bn = _pair(shape, policy, momentum=0.7)
    rng = np.random.default_rng(2)
    weights = tf.constant(rng.normal(size=shape), tf.float32)
    tol = TOLERANCE[policy]
    for i in range(3):  # three updates of the moving statistics
        x = tf.constant(rng.normal(3.0, 2.0, shape), tf.float32)  # far from N(0, 1)
        results = []
        for layer in (ours, keras_bn):
            step = _step if graph == "eager" else tf.function(_step, jit_compile=graph == "xla")
            results.append(step(layer, x, training, weights))
        (y, *grads), (ref_y, *ref_grads) = results
        assert y.dtype == ref_y.dtype == ours.compute_dtype
        np.testing.assert_allclose(
            tf.cast(y, tf.float32), tf.cast(ref_y, tf.float32), rtol=tol, atol=tol
        )
        for name, grad, ref_grad in zip(("x", "gamma", "beta"), grads, ref_grads, strict=True):
            assert grad.dtype == ref_grad.dtype, name
            scale = float(tf.reduce_max(tf.abs(ref_grad)))
            np.testing.assert_allclose(grad, ref_grad, atol=tol * scale, err_msg=f"{name} {i}")
        for name in ("moving_mean", "moving_variance"):
            value, ref_value = getattr(ours, name), getattr(keras_bn, name)
            assert value.dtype == ref_value.dtype == "float32"
            np.testing.assert_allclose(value, ref_value, rtol=tol / 10, err_msg=name)
    if not training:  # inference leaves the moving statistics alone
        np.testing.assert_array_equal(ours.moving_variance, keras_bn.moving_variance)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_runs_the_fused_kernel_on_4d_inputs_only(training):
    def op_types(shape):
        layer = BatchNormalization()
        layer.build(shape)
        graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(
            tf.TensorSpec(shape, tf.float32)
        )
        return {op.type for op in graph.graph.get_operations()}

    assert "FusedBatchNormV3" in op_types((2, 4, 4, 3))
    assert "FusedBatchNormV3" not in op_types((2, 3))


def test_batch_norm_without_scale_and_center_matches_keras():
    ours = BatchNormalization(scale=False, center=False)
    keras_bn = keras.layers.BatchNormalization(scale=False, center=False)
    x = tf.constant(np.random.default_rng(3).normal(1.0, 3.0, SHAPE_4D), tf.float32)
    np.testing.assert_allclose(ours(x, training=True), keras_bn(x, training=True), atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance, keras_bn.moving_variance, rtol=1e-6)


def test_networks_use_our_batch_norm_and_restore_keras_checkpoints(tmp_path, monkeypatch):
    config = NetworkConfig(image_shape=(16, 16, 3), filters=(4, 8), z_dim=4)
    ours = build_decoder(config)
    bns = [layer for layer in ours.layers if "_bn" in layer.name]
    assert len(bns) == 2 and all(type(layer) is BatchNormalization for layer in bns)
    # A checkpoint written by the Keras-BN network of earlier versions restores into ours.
    monkeypatch.setattr(networks, "BatchNormalization", keras.layers.BatchNormalization)
    old = build_decoder(config)
    for weight in old.weights:
        weight.assign(np.random.default_rng(4).normal(size=weight.shape))
    path = tf.train.Checkpoint(model=old).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=ours).read(path).assert_existing_objects_matched()
    z = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(z), old(z), rtol=1e-5, atol=1e-5)


def test_inference_statistics_follow_the_training_ones_within_tens_of_steps():
    # Early in training the weights move quickly: moving statistics that trail them by ~100
    # steps (Keras' 0.99) made the demo's inference outputs far from its training outputs.
    config = NetworkConfig(image_shape=(16, 16, 3), filters=(8, 16), z_dim=4)
    encoder = build_encoder(config)
    images = tf.random.stateless_uniform((8, 16, 16, 3), seed=(1, 2))
    for _ in range(80):
        trained = encoder(images, training=True)[0]
    inferred = encoder(images, training=False)[0]
    np.testing.assert_allclose(inferred, trained, atol=0.05 * float(tf.reduce_max(tf.abs(trained))))


def test_batch_norm_survives_a_model_keras_round_trip(tmp_path):
    config = NetworkConfig(image_shape=(16, 16, 3), filters=(4, 8), z_dim=4)
    encoder = build_encoder(config)
    images = np.random.default_rng(6).random((4, 16, 16, 3), dtype=np.float32)
    encoder(images, training=True)  # moves the moving statistics away from their init
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("conv0_bn")) is BatchNormalization
    for expected, got in zip(encoder(images), loaded(images), strict=True):
        np.testing.assert_array_equal(got, expected)


# Keras' layer is the reference under MirroredStrategy too: statistics per replica, each
# replica's copy of the moving statistics updated from its own batch.
MIRRORED_SCRIPT = """
import json
import keras
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from facevae.model.networks import BatchNormalization

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
x = np.random.default_rng(0).normal(3.0, 2.0, (8, 3, 3, 4)).astype(np.float32)
weights = tf.constant(np.random.default_rng(1).normal(size=(4, 3, 3, 4)), tf.float32)
results = {}
for cls in (keras.layers.BatchNormalization, BatchNormalization):
    with strategy.scope():
        layer = cls(momentum=0.5)
        layer.build((None, 3, 3, 4))

    @tf.function
    def step(batch):
        def replica_step(batch):
            with tf.GradientTape() as tape:
                tape.watch(batch)
                y = layer(batch, training=True)
                loss = tf.reduce_sum(y * weights)
            return y, tape.gradient(loss, [batch, layer.gamma, layer.beta])

        return strategy.run(replica_step, (batch,))

    dataset = tf.data.Dataset.from_tensor_slices(x).batch(8).repeat(2)
    for batch in strategy.experimental_distribute_dataset(dataset):
        y, grads = step(batch)
    local = strategy.experimental_local_results
    results[cls.__name__ + ("" if cls is BatchNormalization else "_keras")] = {
        "replicas": strategy.num_replicas_in_sync,
        "y": [v.numpy().tolist() for v in local(y)],
        "grad_x": [v.numpy().tolist() for v in local(grads[0])],
        "grad_gamma": strategy.reduce("SUM", grads[1], None).numpy().tolist(),
        "grad_beta": strategy.reduce("SUM", grads[2], None).numpy().tolist(),
        "moving_mean": [v.numpy().tolist() for v in layer.moving_mean.value.values],
        "moving_variance": [v.numpy().tolist() for v in layer.moving_variance.value.values],
    }
print(json.dumps(results))
"""


def test_batch_norm_under_mirrored_strategy_matches_keras(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    ours, reference = report["BatchNormalization"], report["BatchNormalization_keras"]
    assert ours["replicas"] == 2
    # Per-replica statistics: the two replicas' moving means differ, as in Keras.
    assert not np.allclose(*reference["moving_mean"])
    for key in ("y", "grad_x", "grad_gamma", "grad_beta", "moving_mean", "moving_variance"):
        np.testing.assert_allclose(ours[key], reference[key], rtol=1e-5, atol=1e-5, err_msg=key)
