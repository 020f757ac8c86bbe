"""Tests of model/vae.py on tiny models: 32x32 images, filters (8, 16), z_dim 8."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from facevae.model.networks import NetworkConfig
from facevae.model.vae import METRIC_NAMES, VAE, Sampling

ROOT = Path(__file__).resolve().parents[1]
TINY = NetworkConfig(image_shape=(32, 32, 3), filters=(8, 16), z_dim=8)


@pytest.fixture(scope="module")
def images():
    # Smooth images, so a tiny model can learn them within a few steps.
    rng = np.random.default_rng(0)
    coarse = rng.random((8, 4, 4, 3), dtype=np.float32)
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)  # (8, 32, 32, 3)


def tiny_vae(**kwargs) -> VAE:
    keras.utils.set_random_seed(0)
    model = VAE(TINY, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def run_python(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_call_and_helpers_give_images_in_unit_range(images):
    model = tiny_vae()
    for output in (model(images), model.reconstruct(images), model.generate(3, seed=1)):
        output = np.asarray(output)
        assert output.dtype == np.float32
        assert output.shape[1:] == (32, 32, 3)
        assert output.min() >= 0.0 and output.max() <= 1.0
    z_mean, z_log_var = model.encode(images)
    assert z_mean.shape == z_log_var.shape == (8, 8)
    assert model.decode(z_mean).shape == (8, 32, 32, 3)
    # Inference is deterministic (z = z_mean); training-mode calls sample z.
    np.testing.assert_array_equal(model(images), model(images))
    np.testing.assert_array_equal(model(images), model.reconstruct(images))


def test_losses_match_the_closed_form_in_numpy():
    model = VAE(TINY, kl_weight=0.25)
    rng = np.random.default_rng(1)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    logits = rng.normal(size=x.shape).astype(np.float32) * 3
    mean = rng.normal(size=(4, 8)).astype(np.float32)
    log_var = rng.normal(size=(4, 8)).astype(np.float32)
    values = {k: float(v) for k, v in model.compute_losses(x, logits, mean, log_var).items()}

    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p))
    kl = -0.5 * (1 + log_var - mean**2 - np.exp(log_var))
    elbo = -np.mean(bce.sum(axis=(1, 2, 3)) + kl.sum(axis=1))
    np.testing.assert_allclose(values["reconstruction_loss"], bce.mean(), rtol=1e-5)
    np.testing.assert_allclose(values["kl_loss"], kl.mean(), rtol=1e-5)
    np.testing.assert_allclose(values["loss"], bce.mean() + 0.25 * kl.mean(), rtol=1e-5)
    np.testing.assert_allclose(values["elbo"], elbo, rtol=1e-5)
    np.testing.assert_allclose(values["bits_per_dim"], -elbo / (32 * 32 * 3 * math.log(2)), 1e-5)

    mse = VAE(TINY, reconstruction_loss="mse").compute_losses(x, logits, mean, log_var)
    np.testing.assert_allclose(float(mse["reconstruction_loss"]), np.mean((p - x) ** 2), 1e-5)
    # The ELBO stays the Bernoulli (BCE) bound whatever the training loss.
    np.testing.assert_allclose(float(mse["elbo"]), elbo, rtol=1e-5)


def test_ae_mode_has_zero_kl_and_no_sampling(images):
    model = tiny_vae(mode="ae")
    logs = model.train_step(images)
    assert float(logs["kl_loss"]) == 0.0
    assert float(logs["loss"]) == pytest.approx(float(logs["reconstruction_loss"]))
    assert model.encoder.get_layer("z_log_var").trainable_weights == []
    assert not any(w.path.startswith("z_log_var/") for w in model.trainable_weights)
    np.testing.assert_array_equal(model(images, training=True), model(images, training=True))


def test_kl_warmup_starts_from_zero_weight(images):
    model = tiny_vae(kl_weight=1.0, kl_warmup_steps=10)
    logs = model.test_step(images)  # iterations == 0: the KL weight is 0
    assert float(logs["kl_loss"]) > 0
    assert float(logs["loss"]) == pytest.approx(float(logs["reconstruction_loss"]))


def test_loss_goes_down_in_30_steps(images):
    model = tiny_vae()
    step = tf.function(model.train_step)
    losses = []
    for _ in range(30):
        model.reset_metrics()
        losses.append(float(step(images)["loss"]))
    assert losses[-1] < 0.9 * losses[0], losses


def test_fit_and_evaluate_report_every_metric(images):
    model = tiny_vae()
    history = model.fit(images, epochs=1, batch_size=4, verbose=0)  # 2 steps
    assert set(history.history) == set(METRIC_NAMES)
    assert int(model.optimizer.iterations) == 2
    logs = model.evaluate(images, images, batch_size=4, verbose=0, return_dict=True)
    assert set(logs) == set(METRIC_NAMES)
    assert all(math.isfinite(v) for v in logs.values())


def test_sampling_is_reproducible_with_a_seed(images):
    model = tiny_vae()
    np.testing.assert_array_equal(model.generate(4, seed=7), model.generate(4, seed=7))
    assert not np.array_equal(model.generate(4, seed=7), model.generate(4, seed=8))
    z_mean, z_log_var = model.encode(images)
    first, second = Sampling(seed=3), Sampling(seed=3)
    draw = first([z_mean, z_log_var])
    np.testing.assert_array_equal(draw, second([z_mean, z_log_var]))
    assert not np.array_equal(draw, first([z_mean, z_log_var]))  # the state advances


def test_config_round_trip_and_bad_arguments():
    model = VAE(TINY, mode="ae", kl_weight=1e-3, kl_warmup_steps=5, reconstruction_loss="mse")
    clone = VAE.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.network == TINY and clone.get_config() == model.get_config()
    assert VAE().network == NetworkConfig()
    for kwargs, message in [
        ({"mode": "gan"}, "mode='gan'"),
        ({"reconstruction_loss": "l1"}, "reconstruction_loss='l1'"),
        ({"kl_weight": -1.0}, "kl_weight"),
        ({"kl_warmup_steps": -3}, "kl_warmup_steps"),
    ]:
        with pytest.raises(ValueError, match=message):
            VAE(TINY, **kwargs)


def test_non_finite_input_raises_before_any_update(images):
    model = tiny_vae()
    before = [w.numpy() for w in model.weights]
    bad = images.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="contain NaN or Inf"):
        tf.function(model.train_step)(bad)
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    with pytest.raises(TypeError, match="float32 in \\[0, 1\\]"):
        model.train_step((images * 255).astype(np.uint8))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_train_step_returns_finite_float32(images, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = tiny_vae()
        # Only float16 needs loss scaling; keras wraps the optimizer for it in compile().
        scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert scaled == (policy == "mixed_float16")
        assert model.encoder.get_layer("conv0").compute_dtype == policy.removeprefix("mixed_")
        logs = tf.function(model.train_step)(images)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for value in logs.values():
        assert value.dtype == tf.float32 and math.isfinite(float(value))
    assert int(model.optimizer.iterations) == 1
    assert model.encode(images)[0].dtype == tf.float32


LOAD_SCRIPT = """
import sys
import keras
import numpy as np
import facevae.model.vae  # registers the classes

data = np.load(sys.argv[1])
model = keras.models.load_model(sys.argv[2])  # safe_mode is on by default
z_mean, z_log_var = model.encode(data["x"])
np.savez(sys.argv[3], z_mean=z_mean, z_log_var=z_log_var,
         decoded=model.decode(data["z"]), reconstructed=model.reconstruct(data["x"]),
         iterations=int(model.optimizer.iterations))
"""


def test_save_and_load_in_a_fresh_process(images, tmp_path):
    model = tiny_vae(kl_warmup_steps=3, seed=5)
    model.fit(images, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    z = np.random.default_rng(2).normal(size=(3, 8)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=images, z=z)
    run_python(LOAD_SCRIPT, str(tmp_path / "inputs.npz"), str(path), str(tmp_path / "out.npz"))
    loaded = np.load(tmp_path / "out.npz")
    z_mean, z_log_var = model.encode(images)
    np.testing.assert_array_equal(loaded["z_mean"], z_mean)
    np.testing.assert_array_equal(loaded["z_log_var"], z_log_var)
    np.testing.assert_array_equal(loaded["decoded"], model.decode(z))
    np.testing.assert_array_equal(loaded["reconstructed"], model.reconstruct(images))
    assert int(loaded["iterations"]) == 2


# norm="none": BatchNorm statistics are per replica, so they differ from one device's by
# design. The sampling noise differs per replica too (each folds in its replica id), so the
# script replaces Sampling with z = z_mean; the KL term and its gradients remain.
DISTRIBUTED_SCRIPT = """
import json
import keras
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from facevae.model.networks import NetworkConfig
from facevae.model.vae import VAE, Sampling

Sampling.call = lambda self, inputs, step=None: inputs[0]
network = NetworkConfig(image_shape=(32, 32, 3), filters=(8, 16), z_dim=8, norm="none")
images = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)


def train(strategy, mode):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = VAE(network, mode=mode, kl_weight=0.5)
        # SGD, not Adam: Adam's update hardly depends on the gradients' scale, so it would
        # hide a missing 1 / num_replicas.
        model.compile(optimizer=keras.optimizers.SGD(1.0))
    initial = [w.numpy() for w in model.trainable_weights]
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(8).repeat(3)

    @tf.function
    def step(batch):
        return strategy.run(model.train_step, args=(batch,))

    for batch in strategy.experimental_distribute_dataset(dataset):
        step(batch)
    # Read in cross-replica context: the replicas' metric states are summed.
    metrics = {m.name: float(m.result()) for m in model.metrics}
    return metrics, [w.numpy() - w0 for w, w0 in zip(model.trainable_weights, initial)]


# One MirroredStrategy per process: a second one reuses collective keys.
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
report = {}
for mode in ("vae", "ae"):
    one_metrics, one_updates = train(tf.distribute.get_strategy(), mode)
    two_metrics, two_updates = train(mirrored, mode)
    report[mode] = {
        "replicas": mirrored.num_replicas_in_sync,
        "one": one_metrics,
        "two": two_metrics,
        "max_update_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(one_updates, two_updates, strict=True)
        ),
        "max_update": max(float(np.abs(a).max()) for a in one_updates),
    }
print(json.dumps(report))
"""


def test_mirrored_strategy_matches_one_device():
    report = json.loads(run_python(DISTRIBUTED_SCRIPT).strip().splitlines()[-1])
    for mode, result in report.items():
        assert result["replicas"] == 2
        for name in METRIC_NAMES:
            assert result["two"][name] == pytest.approx(result["one"][name], rel=1e-4, abs=1e-5), (
                mode,
                name,
            )
        assert result["max_update"] > 1e-3, (mode, result)  # the weights did move
        assert result["max_update_diff"] < 1e-3 * result["max_update"], (mode, result)
