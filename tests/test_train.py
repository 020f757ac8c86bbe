"""train.py end to end: the real command (and several at once) on a tiny synthetic dataset.

The library behind it, model.trainer, is tested in-process in test_trainer.py; these
tests need processes: flags and settings order, console output to a file, kill -9,
signals, virtual CPUs and two workers.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import cli_driver
import numpy as np
import pytest
import tensorflow as tf

from facevae.model.callbacks import logged_steps
from facevae.model.config import TrainConfig
from facevae.model.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--batch_size=8", "--z_dim=8", "--filters=8,16", "--shuffle_buffer=64", "--cache=none"]
TINY_CONFIG = {
    "batch_size": 8,
    "z_dim": 8,
    "filters": (8, 16),
    "shuffle_buffer": 64,
    "cache": "none",
}
ESCAPES = re.compile(r"\x1b|\r|\x08")  # ANSI escape codes, carriage returns, backspaces


def command(*args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"), *TINY, *args]


def train(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def latest_step(workdir) -> int:
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def optimizer_steps(workdir) -> int:
    reader = tf.train.load_checkpoint(os.path.join(workdir, "ckpt"))
    return int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def epoch_loss_in_tensorboard(workdir, step: int) -> float:
    folder = os.path.join(workdir, "logs", "train")
    for name in os.listdir(folder):
        for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == "loss" and event.step == step:
                    return float(tf.make_ndarray(value.tensor))
    raise AssertionError(f"no loss at step {step} in {folder}")


def start(args: list[str], env=None) -> subprocess.Popen:
    """train.py in the background, its output captured."""
    return subprocess.Popen(
        command(*args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def start_until(args: list[str], workdir, done, env=None, timeout: float = 180) -> subprocess.Popen:
    """Starts train.py and returns once `done(latest checkpoint step)` holds."""
    proc = start(args, env)
    deadline = time.time() + timeout
    while not (reached := done(latest_step(workdir))) and time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"train.py ended first: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    assert reached, f"no such checkpoint in {timeout} s"
    return proc


@pytest.fixture(scope="module")
def demo_run(tiny_data_dir, tmp_path_factory):
    """--demo with tiny settings and output to a pipe, as under nohup or CI."""
    workdir = str(tmp_path_factory.mktemp("run") / "w")
    done = train(
        f"--data_dir={tiny_data_dir}",
        f"--workdir={workdir}",
        "--demo",
        "--epochs=1",
        "--steps_per_epoch=4",
        "--log_every_steps=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done


def test_log_to_a_file_is_plain_lines_with_tensorboards_epoch_loss(demo_run):
    workdir, done = demo_run
    assert not ESCAPES.search(done.stdout)
    lines = done.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch")] == [
        "epoch 1/1 step 2/4",
        "epoch 1/1",
    ]
    (epoch_line,) = [line for line in lines if line.startswith("epoch 1/1  train loss ")]
    shown = epoch_line.split("train loss ")[1].split()[0]
    assert shown == f"{epoch_loss_in_tensorboard(workdir, 4):.4g}"
    assert "I0000" not in done.stderr and "INFO" not in done.stderr  # TF log noise quieted


def test_demo_ends_with_the_path_of_its_sample_grid(demo_run):
    workdir, done = demo_run
    last = done.stdout.strip().splitlines()[-1]
    assert last == os.path.join(workdir, "samples", "epoch_0001.png") and os.path.isfile(last)
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    assert config["flags"]["z_dim"] == 8 and "demo" not in config["flags"]


def test_final_model_loads_in_a_fresh_process(demo_run):
    workdir, _ = demo_run
    code = (
        "import sys, keras, numpy as np; import facevae.model.vae; "
        "m = keras.models.load_model(sys.argv[1]); "
        "print(m.reconstruct(np.zeros((2, 32, 32, 3), 'float32')).shape)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, os.path.join(workdir, "model.keras")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(2, 32, 32, 3)")
    served = tf.saved_model.load(os.path.join(workdir, "export"))
    images = served.signatures["serving_default"](z=tf.zeros((3, 8)))["images"]
    assert images.dtype == tf.uint8 and images.shape == (3, 32, 32, 3)


def checkpoint_variables(workdir) -> dict[str, np.ndarray]:
    """Every variable of the run's last checkpoint but the save counter of its process."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(workdir, "ckpt")))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not name.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))
    }


def assert_same_variables(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_sigkill_mid_epoch_then_the_run_resumes_from_config_json(tiny_data_dir, tmp_path):
    workdir = tmp_path / "w"
    args = [
        f"--data_dir={tiny_data_dir}",
        "--epochs=2",
        "--steps_per_epoch=30",
        "--checkpoint_every_steps=5",
        "--flip",
    ]
    never_stopped = start([*args, f"--workdir={tmp_path / 'once'}"])  # meanwhile
    proc = start_until([*args, f"--workdir={workdir}"], workdir, lambda step: 30 < step < 60)
    proc.kill()  # inside epoch 2
    proc.communicate()
    killed_at = latest_step(workdir)
    # Only --workdir: every other flag comes from its config.json.
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {workdir}/ckpt/ckpt-{killed_at} (step {killed_at}" in done.stdout
    assert "30 steps/epoch of 8" in done.stdout
    assert latest_step(workdir) == optimizer_steps(workdir) == 60  # no step lost or repeated
    # Each epoch's outputs once: epoch 1's were written before the kill, not again.
    for folder, tag in (("validation", "loss"), ("train", "samples")):
        assert logged_steps(str(workdir / "logs" / folder), tag) == {30, 60}
    assert sorted(os.listdir(workdir / "samples")) == ["epoch_0001.png", "epoch_0002.png"]
    # The same run as one that never stopped: every weight, slot and counter.
    _, stderr = never_stopped.communicate(timeout=240)
    assert never_stopped.returncode == 0, stderr[-3000:]
    assert_same_variables(checkpoint_variables(workdir), checkpoint_variables(tmp_path / "once"))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(signum, code, tiny_data_dir, tmp_path):
    workdir = tmp_path / "w"
    args = [
        f"--data_dir={tiny_data_dir}",
        f"--workdir={workdir}",
        "--epochs=1",
        "--steps_per_epoch=500",
        "--checkpoint_every_steps=5",
    ]
    proc = start_until(args, workdir, lambda step: step >= 5)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    (line,) = stderr.strip().splitlines()[-1:]
    assert line.startswith(f"stopped by {signal.Signals(signum).name} at step ")
    assert line.endswith("run the same command to resume") and "Traceback" not in stderr
    step = int(line.split("at step ")[1].split(";")[0])
    assert latest_step(workdir) == step and line.count(f"ckpt-{step}") == 1


@pytest.fixture(scope="module")
def in_one_process(tiny_data_dir, tmp_path_factory) -> dict:
    """Several train.py command lines run by train.main in one process (cli_driver): one
    TensorFlow start-up instead of one each. The damaged run is trained first, in-process."""
    root = tmp_path_factory.mktemp("cli")
    mine = root / "celeba96"  # e.g. a typo, or a dataset not prepared yet
    mine.mkdir()
    damaged = root / "damaged"
    config = TrainConfig(data_dir=tiny_data_dir, epochs=1, steps_per_epoch=2, **TINY_CONFIG)
    train_and_evaluate(config, str(damaged))
    text = (damaged / "config.json").read_text()
    (damaged / "config.json").write_text(text[:40])  # truncated, as by a full disk
    data = f"--data_dir={tiny_data_dir}"
    lines = {
        "filters": [*TINY, data, f"--workdir={root / 'w'}", "--filters=8,x"],
        "demo_into_mine": [*TINY, "--demo", f"--data_dir={mine}", f"--workdir={root / 'w'}"],
        "benchmark": [*TINY, data, "--benchmark_steps=2", "--steps_per_execution=2"],
        "damaged": [*TINY, data, f"--workdir={damaged}", "--epochs=1", "--steps_per_epoch=2"],
    }
    reports = cli_driver.run_many({"facevae.train": {"lines": lines}}, timeout=600)
    return {"reports": reports, "root": root, "mine": mine, "damaged": damaged}


def test_invalid_flags_stop_in_one_line_before_work(in_one_process):
    report = in_one_process["reports"]["facevae.train filters"]
    assert report["code"] == 1
    assert "\n" not in report["message"].strip()
    assert "--filters=8,x: give comma-separated integers" in report["message"]
    assert not (in_one_process["root"] / "w").exists()


def test_demo_never_writes_synthetic_faces_into_a_given_data_dir(in_one_process):
    report = in_one_process["reports"]["facevae.train demo_into_mine"]
    mine = in_one_process["mine"]
    assert report["code"] == 1 and "Traceback" not in report["stderr"]
    assert f"--data_dir={mine}" in report["message"].strip().splitlines()[-1]
    assert os.listdir(mine) == [] and not (in_one_process["root"] / "w").exists()


def test_a_damaged_config_is_named_and_overwrite_starts_afresh(in_one_process, tiny_data_dir):
    report = in_one_process["reports"]["facevae.train damaged"]
    lines = report["message"].strip().splitlines()
    assert report["code"] == 1 and len(lines) == 1 and "config.json is damaged" in lines[0]
    workdir = in_one_process["damaged"]
    args = [f"--data_dir={tiny_data_dir}", f"--workdir={workdir}", "--epochs=1"]
    fresh = train(*args, "--steps_per_epoch=3", "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    config = json.loads((workdir / "config.json").read_text())
    assert latest_step(workdir) == 3 and config["flags"]["epochs"] == 1


def test_mirrored_over_two_logical_cpus(tiny_data_dir, tmp_path):
    done = train(
        f"--data_dir={tiny_data_dir}",
        f"--workdir={tmp_path / 'w'}",
        "--epochs=1",
        "--steps_per_epoch=2",
        "--strategy=mirrored",
        "--logical_cpus=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 replica(s)" in done.stdout
    # 5 validation images cannot fill a batch of 4 per replica: skipped, not reported as 0.
    assert "validation skipped" in done.stdout and "validation loss 0 " not in done.stdout
    assert optimizer_steps(tmp_path / "w") == 2


def test_benchmark_prints_one_json_line(in_one_process):
    report = in_one_process["reports"]["facevae.train benchmark"]
    assert report["code"] == 0, report["message"] + report["stderr"]
    result = json.loads(report["stdout"].strip().splitlines()[-1])
    assert result["benchmark"] == "train" and result["images_per_sec"] > 0
    assert result["steps"] == 2 and result["steps_per_execution"] == 2
    assert 0 <= result["input_wait_fraction"] <= 1 and result["peak_rss_mb"] > 0
    assert result["jit_compile"] is False  # auto: no XLA on a CPU


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(args: list[str], workdir, scratch, done=None) -> list[subprocess.Popen]:
    """The README's two-worker example on 127.0.0.1: TF_CONFIG and --strategy multi_worker."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(scratch)}
        if done and index == 1:
            workers.append(start_until(args, workdir, done, env=env))
        else:
            workers.append(start(args, env))
    return workers


def test_two_workers_train_one_run_and_resume_after_a_kill(tiny_data_dir, tmp_path):
    workdir, scratch = tmp_path / "w", tmp_path / "scratch"
    scratch.mkdir()
    args = [
        f"--data_dir={tiny_data_dir}",
        f"--workdir={workdir}",
        "--strategy=multi_worker",
        "--epochs=2",
        "--steps_per_epoch=12",
        "--checkpoint_every_steps=3",
    ]
    # The reference, meanwhile: the same two workers, never stopped.
    once = tmp_path / "once"
    reference = start_workers([*args[:1], f"--workdir={once}", *args[2:]], once, scratch)
    # Both killed (a lost worker stops the others' collectives) after a mid-epoch checkpoint.
    first = start_workers(args, workdir, scratch, done=lambda step: 3 <= step < 12)
    for worker in first:
        worker.kill()
        worker.communicate()
    killed_at = latest_step(workdir)
    for worker in reference:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr[-3000:]
    second = start_workers(args, workdir, scratch)
    for worker in second:
        stdout, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr[-3000:]
        assert "2 replica(s)" in stdout and f"(step {killed_at}" in stdout  # both resumed
    assert latest_step(workdir) == optimizer_steps(workdir) == 24
    # Only the chief (worker 0) wrote the workdir.
    assert sorted(os.listdir(workdir)) == [
        ".lock",
        "ckpt",
        "config.json",
        "export",
        "logs",
        "model.keras",
        "samples",
    ]
    writers = {
        re.search(r"\.(\d+)\.\d+\.v2$", name).group(1)
        for split in ("train", "validation")
        if (workdir / "logs" / split).is_dir()
        for name in os.listdir(workdir / "logs" / split)
    }
    assert writers <= {str(first[0].pid), str(second[0].pid)}
    # The killed worker's scratch folder stays in the temp folder; the finished ones' are gone.
    assert len([n for n in os.listdir(scratch) if n.startswith("facevae-worker-")]) == 1
    assert logged_steps(str(workdir / "logs" / "train"), "samples") == {12, 24}
    assert np.isfinite(epoch_loss_in_tensorboard(workdir, 24))
    # Each worker read its part of the data from where it stopped: the same weights.
    assert_same_variables(checkpoint_variables(workdir), checkpoint_variables(once))
