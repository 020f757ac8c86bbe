"""train.py end to end: the real command on a tiny synthetic dataset."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--batch_size=8", "--z_dim=8", "--filters=8,16", "--shuffle_buffer=64", "--cache=none"]


def train(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *TINY, *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def events(folder: str) -> dict[str, list]:
    """Tag -> list of (step, tensor) read back from the TensorBoard event files in a folder."""
    found: dict[str, list] = {}
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.tensor))
    return found


@pytest.fixture(scope="module")
def run_two_steps(tiny_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run") / "w")
    done = train(f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", "--epochs=1",
                 "--steps_per_epoch=2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done


def test_two_steps_create_every_artifact(run_two_steps):
    workdir, done = run_two_steps
    config = read_json(os.path.join(workdir, "config.json"))
    assert config["flags"]["z_dim"] == 8 and config["model"]["network"]["z_dim"] == 8
    assert config["flags"]["filters"] == [8, 16]
    assert tf.train.latest_checkpoint(os.path.join(workdir, "ckpt")).endswith("ckpt-2")
    assert os.path.isfile(os.path.join(workdir, "samples", "epoch_0001.png"))
    assert os.path.isfile(os.path.join(workdir, "model.keras"))
    assert "epoch 1/1" in done.stdout and "samples in" in done.stdout
    assert "I0000" not in done.stderr and "INFO" not in done.stderr  # TF log noise quieted
    assert not [n for n in os.listdir(workdir) if n.startswith(".tmp")]


def test_serving_export_decodes_uint8_faces(run_two_steps):
    workdir, _ = run_two_steps
    served = tf.saved_model.load(os.path.join(workdir, "export"))
    images = served.signatures["serving_default"](z=tf.zeros((3, 8)))["images"]
    assert images.dtype == tf.uint8 and images.shape == (3, 32, 32, 3)


def test_final_model_loads_in_a_fresh_process(run_two_steps):
    workdir, _ = run_two_steps
    code = (
        "import sys, keras, numpy as np; import model.vae; "
        "m = keras.models.load_model(sys.argv[1]); "
        "print(m.reconstruct(np.zeros((2, 32, 32, 3), 'float32')).shape)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, os.path.join(workdir, "model.keras")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(2, 32, 32, 3)")


def test_tensorboard_has_scalars_and_images(run_two_steps):
    workdir, _ = run_two_steps
    train_events = events(os.path.join(workdir, "logs", "train"))
    for tag in ("loss", "reconstruction_loss", "kl_loss", "elbo", "bits_per_dim",
                "learning_rate", "images_per_sec", "input_wait_fraction"):  # fmt: skip
        assert tag in train_events, sorted(train_events)
    assert [step for step, _ in train_events["loss"]] == [2]  # the epoch's means
    samples = tf.make_ndarray(train_events["samples"][0][1])  # [width, height, png bytes]
    assert samples[2][:4] == b"\x89PNG"
    assert "reconstructions" in train_events
    validation = events(os.path.join(workdir, "logs", "validation"))
    assert np.isfinite(tf.make_ndarray(validation["loss"][0][1]))


def test_same_command_resumes_and_extends(run_two_steps, tiny_data_dir):
    workdir, _ = run_two_steps
    # Flags left out come from config.json; a larger --epochs continues the step count.
    done = train(f"--workdir={workdir}", "--epochs=2", "--learning_rate=0.0005")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(step 2)" in done.stdout
    # The new learning rate wins over the one restored with the optimizer.
    rates = dict(events(os.path.join(workdir, "logs", "train"))["learning_rate"])
    assert tf.make_ndarray(rates[4]) == pytest.approx(0.0005)
    assert tf.train.latest_checkpoint(os.path.join(workdir, "ckpt")).endswith("ckpt-4")
    assert os.path.isfile(os.path.join(workdir, "samples", "epoch_0002.png"))


def test_model_config_mismatch_stops(run_two_steps, tiny_data_dir):
    workdir, _ = run_two_steps
    done = train(f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", "--z_dim=16")
    assert done.returncode != 0
    assert "another model" in done.stderr and "--overwrite" in done.stderr


def test_sigkill_then_rerun_resumes(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "w")
    args = [
        f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", "--epochs=1",
        "--steps_per_epoch=300", "--checkpoint_every_steps=2", "--eval_every_epochs=5",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), *TINY, *args], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    state = os.path.join(workdir, "ckpt", "checkpoint")
    deadline = time.time() + 180
    while not os.path.exists(state) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
    assert latest, "no checkpoint before the deadline"
    config_before = read_json(os.path.join(workdir, "config.json"))
    done = train(*args)  # the same command
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"(step {int(latest.rsplit('-', 1)[1])})" in done.stdout  # nothing saved is lost
    assert tf.train.latest_checkpoint(os.path.join(workdir, "ckpt")).endswith("ckpt-300")
    config_after = read_json(os.path.join(workdir, "config.json"))
    assert config_after == config_before


def test_non_finite_loss_stops_with_advice(tiny_data_dir, tmp_path):
    workdir = tmp_path / "w"
    done = train(
        f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", "--epochs=1",
        "--steps_per_epoch=20", "--learning_rate=1e30", "--checkpoint_every_steps=1",
    )  # fmt: skip
    assert done.returncode != 0
    assert "non-finite at step" in done.stderr and "--learning_rate" in done.stderr
    bad_step = int(done.stderr.split("non-finite at step ")[1].split(".")[0])
    latest = tf.train.latest_checkpoint(str(workdir / "ckpt"))
    if bad_step > 1:  # the last good step was kept, the bad one was not saved
        assert latest.endswith(f"ckpt-{bad_step - 1}") and latest in done.stderr
    else:
        assert latest is None and "none yet" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch_size=0"], "--batch_size must be at least 1"),
        (["--filters=8,x"], "--filters=8,x"),
        (["--cache=ram"], "--cache=ram"),
        (["--data_dir=/nonexistent/data"], "--data_dir=/nonexistent/data"),
        (["--batch_size=7", "--strategy=mirrored", "--logical_cpus=2"], "multiple of 2"),
    ],
)
def test_invalid_flags_stop_before_work(args, message, tiny_data_dir, tmp_path):
    done = train(f"--data_dir={tiny_data_dir}", f"--workdir={tmp_path / 'w'}", *args)
    assert done.returncode != 0
    assert message in done.stderr
    assert not (tmp_path / "w").exists()


def test_mirrored_over_two_logical_cpus(tiny_data_dir, tmp_path):
    done = train(f"--data_dir={tiny_data_dir}", f"--workdir={tmp_path / 'w'}", "--epochs=1",
                 "--steps_per_epoch=2", "--strategy=mirrored", "--logical_cpus=2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 replica(s)" in done.stdout
    # 5 validation images cannot fill a batch of 4 per replica: skipped, not reported as 0.
    assert "validation skipped" in done.stdout and "validation loss 0 " not in done.stdout


def test_benchmark_prints_one_json_line(tiny_data_dir):
    done = train(f"--data_dir={tiny_data_dir}", "--benchmark_steps=2")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "train" and result["images_per_sec"] > 0
    assert 0 <= result["input_wait_fraction"] <= 1 and result["peak_rss_mb"] > 0


def test_corrupt_shard_stops_naming_it(tiny_data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    shard = sorted(data.glob("train-*"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, so only the record checksum can tell
    shard.write_bytes(bytes(raw))
    done = train(f"--data_dir={data}", f"--workdir={tmp_path / 'w'}", "--epochs=1",
                 "--steps_per_epoch=4")  # fmt: skip
    assert done.returncode != 0
    assert shard.name in done.stderr and "--overwrite" in done.stderr
