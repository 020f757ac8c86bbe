"""model/trainer.py called in-process, as from a notebook, on the tiny synthetic dataset."""

import dataclasses
import glob
import json
import math
import os
import shutil
import signal

import corrupt
import keras
import numpy as np
import pytest
import tensorflow as tf

from facevae.model.callbacks import Interrupted, logged_steps
from facevae.model.config import TrainConfig, TrainError
from facevae.model.console import one_line
from facevae.model.trainer import train_and_evaluate
from facevae.model.workdir import WorkdirError
from facevae.pipeline.schema import DatasetError


def tiny(data_dir: str, **changes) -> TrainConfig:
    config = TrainConfig(
        data_dir=data_dir,
        batch_size=8,
        z_dim=8,
        filters=(8, 16),
        shuffle_buffer=64,
        cache="none",
        epochs=1,
        steps_per_epoch=2,
    )
    return dataclasses.replace(config, **changes)


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def scalars(folder: str, tag: str) -> dict[int, float]:
    """step -> value of one TensorBoard scalar tag in a folder."""
    found = {}
    for name in os.listdir(folder):
        for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    found[event.step] = float(tf.make_ndarray(value.tensor))
    return found


def snapshot(folder) -> dict[str, int]:
    """Relative path -> size of every file below a folder."""
    return {
        os.path.relpath(os.path.join(root, name), folder): os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.fixture(scope="module")
def one_epoch(tiny_data_dir, tmp_path_factory):
    """A finished one-epoch run of two steps; tests copy it before changing it."""
    workdir = str(tmp_path_factory.mktemp("trainer") / "run")
    result = train_and_evaluate(tiny(tiny_data_dir), workdir)
    return workdir, result


def copy_run(one_epoch, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(one_epoch[0], workdir)
    return workdir


def test_in_process_call_writes_every_artifact(one_epoch, tiny_data_dir):
    workdir, result = one_epoch
    assert result.step == 2 and result.epochs == 1
    assert result.sample_grid == os.path.join(workdir, "samples", "epoch_0001.png")
    assert os.path.isfile(result.sample_grid) and os.path.isfile(result.model_path)
    assert set(result.logs) >= {"loss", "val_loss", "images_per_sec", "input_wait_fraction"}
    config = read_json(os.path.join(workdir, "config.json"))
    assert config["flags"] == tiny(tiny_data_dir).to_dict()
    assert config["model"]["network"]["filters"] == [8, 16]
    assert tf.train.latest_checkpoint(os.path.join(workdir, "ckpt")).endswith("ckpt-2")
    assert os.path.isdir(os.path.join(workdir, "export"))
    assert not [n for n in os.listdir(workdir) if n.startswith(".tmp")]


def test_tensorboard_keeps_todays_names(one_epoch):
    workdir, result = one_epoch
    train_logs = os.path.join(workdir, "logs", "train")
    for tag in (
        "loss",
        "reconstruction_loss",
        "kl_loss",
        "elbo",
        "bits_per_dim",
        "learning_rate",
        "images_per_sec",
        "input_wait_fraction",
    ):
        assert list(scalars(train_logs, tag)) == [2], tag  # the epoch's means at its end
    assert scalars(train_logs, "loss")[2] == pytest.approx(result.logs["loss"])
    assert logged_steps(train_logs, "samples") == logged_steps(train_logs, "reconstructions") == {2}
    validation = scalars(os.path.join(workdir, "logs", "validation"), "loss")
    assert validation == {2: pytest.approx(result.logs["val_loss"])}


def test_same_call_resumes_with_the_new_learning_rate(one_epoch, tiny_data_dir, tmp_path, capsys):
    workdir = copy_run(one_epoch, tmp_path)
    result = train_and_evaluate(tiny(tiny_data_dir, epochs=2, learning_rate=5e-4), workdir)
    out = capsys.readouterr().out
    assert "resumed from" in out and "(step 2)" in out
    assert result.step == 4 and result.sample_grid.endswith("epoch_0002.png")
    # The checkpoint brought back the old rate; the config's wins.
    rates = scalars(os.path.join(workdir, "logs", "train"), "learning_rate")
    assert rates[2] == pytest.approx(1e-3) and rates[4] == pytest.approx(5e-4)
    assert logged_steps(os.path.join(workdir, "logs", "validation"), "loss") == {2, 4}


def test_cosine_schedule_follows_the_global_step_and_can_be_switched_on_resume(
    one_epoch, tiny_data_dir, tmp_path
):
    workdir = copy_run(one_epoch, tmp_path)  # 2 steps at a constant 1e-3
    cosine = tiny(tiny_data_dir, epochs=3, lr_schedule="cosine", log_every_steps=1)
    assert train_and_evaluate(cosine, workdir).step == 6
    rates = scalars(os.path.join(workdir, "logs", "train"), "learning_rate")
    # Step k used the rate of the k-1 steps before it, on a curve to 0 at step 6.
    for k in (3, 4, 5, 6):
        assert rates[k] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * (k - 1) / 6)))
    # Back to a constant rate: the optimizer's variables are the same either way.
    assert (
        train_and_evaluate(
            dataclasses.replace(cosine, epochs=4, lr_schedule="constant"), workdir
        ).step
        == 8
    )
    assert scalars(os.path.join(workdir, "logs", "train"), "learning_rate")[8] == pytest.approx(
        1e-3
    )


def test_another_model_in_the_workdir_stops_and_keeps_it(one_epoch, tiny_data_dir, tmp_path):
    workdir = copy_run(one_epoch, tmp_path)
    before = snapshot(workdir)
    with pytest.raises(TrainError, match=r"another model \(.*z_dim") as caught:
        train_and_evaluate(tiny(tiny_data_dir, z_dim=16), workdir)
    assert "\n" not in str(caught.value) and "`overwrite`" in str(caught.value)
    assert snapshot(workdir) == before


def test_owed_grid_and_validation_are_written_on_resume(one_epoch, tiny_data_dir, tmp_path, capsys):
    # A kill right after the epoch's checkpoint: its grid and validation never got written.
    workdir = copy_run(one_epoch, tmp_path)
    os.remove(os.path.join(workdir, "samples", "epoch_0001.png"))
    shutil.rmtree(os.path.join(workdir, "logs", "validation"))
    result = train_and_evaluate(tiny(tiny_data_dir), workdir)
    out = capsys.readouterr().out
    assert "epoch_0001.png, which the previous run stopped before writing" in out
    assert "(owed: the previous run stopped before writing it)" in out
    assert result.step == 2  # nothing trained again
    assert os.path.isfile(os.path.join(workdir, "samples", "epoch_0001.png"))
    assert logged_steps(os.path.join(workdir, "logs", "validation"), "loss") == {2}
    # Written once: a second resume owes nothing.
    train_and_evaluate(tiny(tiny_data_dir), workdir)
    assert "previous run stopped before writing" not in capsys.readouterr().out


def test_non_finite_loss_stops_keeping_the_last_good_checkpoint(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny(tiny_data_dir, learning_rate=1e30, steps_per_epoch=20, checkpoint_every_steps=1)
    with pytest.raises(TrainError, match="non-finite at step") as caught:
        train_and_evaluate(config, workdir)
    message = str(caught.value)
    assert "`learning_rate` (now 1e+30)" in message and "\n" not in message
    bad_step = int(message.split("non-finite at step ")[1].split(".")[0])
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
    if bad_step > 1:  # the last good step was kept, the bad one was not saved
        assert latest.endswith(f"ckpt-{bad_step - 1}") and latest in message
    else:
        assert latest is None and "none yet" in message


def test_overwrite_failing_before_a_checkpoint_puts_the_old_run_back(
    one_epoch, tiny_data_dir, tmp_path
):
    workdir = copy_run(one_epoch, tmp_path)
    before = snapshot(workdir)
    diverging = tiny(tiny_data_dir, z_dim=16, learning_rate=1e30, steps_per_epoch=20)
    with pytest.raises(TrainError, match="non-finite"):
        train_and_evaluate(diverging, workdir, overwrite=True)
    assert snapshot(workdir) == before


def test_overwrite_replaces_the_run_once_the_new_one_has_a_checkpoint(
    one_epoch, tiny_data_dir, tmp_path
):
    workdir = copy_run(one_epoch, tmp_path)
    result = train_and_evaluate(tiny(tiny_data_dir, z_dim=16), workdir, overwrite=True)
    assert result.step == 2
    assert read_json(os.path.join(workdir, "config.json"))["model"]["network"]["z_dim"] == 16
    assert not [n for n in os.listdir(workdir) if n.startswith(".replaced")]


def test_corrupt_shard_is_named(tiny_data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    shard = sorted(data.glob("train-*"))[0]
    corrupt.flip_a_byte(str(shard))
    with pytest.raises(DatasetError) as caught:
        train_and_evaluate(tiny(str(data), steps_per_epoch=6), str(tmp_path / "run"))
    assert shard.name in str(caught.value) and "--overwrite" in one_line(caught.value)


def _manifest_says_64(data_dir: str, tmp_path) -> str:
    data = tmp_path / "data64"
    shutil.copytree(data_dir, data)
    manifest = read_json(data / "dataset.json")
    manifest["image"]["height"] = manifest["image"]["width"] = 64
    (data / "dataset.json").write_text(json.dumps(manifest))
    return str(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kl_weight": float("inf")}, "`kl_weight`=inf: give a finite number"),
        ({"learning_rate": float("inf")}, "`learning_rate`=inf: give a finite number"),
        ({"batch_size": 0}, "`batch_size`=0: give a number in 1.."),
        ({"cache": "ram"}, "`cache`=ram"),
        ({"filters": (8, 16, 32, 64, 128, 256)}, "`filters`=8,16,32,64,128,256"),
        ({"data_dir": "/nonexistent/data"}, "`data_dir`=/nonexistent/data"),
        ({"data_dir": "64"}, "dataset.json says 64x64"),  # read from a header, not decoded
    ],
)
def test_settings_that_cannot_run_stop_in_one_line_before_writing(
    changes, message, tiny_data_dir, tmp_path
):
    if changes.get("data_dir") == "64":
        changes = {"data_dir": _manifest_says_64(tiny_data_dir, tmp_path)}
    workdir = tmp_path / "run"
    with pytest.raises((TrainError, DatasetError)) as caught:  # data: DatasetError, with its fix
        train_and_evaluate(dataclasses.replace(tiny(tiny_data_dir), **changes), str(workdir))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not workdir.exists()


def test_unusable_workdirs_stop_in_one_line(one_epoch, tiny_data_dir, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    for workdir, message in ((a_file, "is a file"), (a_file / "run", "which is a file")):
        with pytest.raises(WorkdirError, match=message) as caught:
            train_and_evaluate(tiny(tiny_data_dir), str(workdir))
        assert "\n" not in str(caught.value)
    assert a_file.read_text() == "not a folder"
    # A truncated config.json is named, and left for the user to restore.
    workdir = copy_run(one_epoch, tmp_path)
    config = os.path.join(workdir, "config.json")
    with open(config, "r+") as f:
        f.truncate(40)
    with pytest.raises(WorkdirError, match=r"config\.json is damaged") as caught:
        train_and_evaluate(tiny(tiny_data_dir), workdir)
    assert config in str(caught.value) and os.path.getsize(config) == 40


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_workdir_stops_in_one_line(tiny_data_dir, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(WorkdirError, match="cannot be written"):
        train_and_evaluate(tiny(tiny_data_dir), str(folder / "run"))


def test_config_round_trips_through_config_json(tiny_data_dir):
    config = tiny(tiny_data_dir, jit_compile="false")
    stored = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict({**stored, "unknown_old_flag": 1}) == config
    assert TrainConfig.from_dict({**stored, "jit_compile": False}).jit_compile == "false"
    assert isinstance(TrainConfig.from_dict(stored).filters, tuple)


@pytest.mark.parametrize("change", ["mixed_precision", "damaged"])
def test_a_checkpoint_the_model_cannot_take_is_one_line(change, one_epoch, tiny_data_dir, tmp_path):
    workdir = copy_run(one_epoch, tmp_path)
    config = tiny(tiny_data_dir, epochs=2)
    if change == "mixed_precision":  # a LossScaleOptimizer: another optimizer structure
        config = dataclasses.replace(config, mixed_precision="mixed_float16")
    else:
        latest = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
        with open(latest + ".index", "r+b") as f:
            f.truncate(20)
    message = "`mixed_precision` none" if change == "mixed_precision" else "cannot be restored"
    with pytest.raises(TrainError, match=rf"{message}.*`overwrite`"):
        train_and_evaluate(config, workdir)
    assert tf.keras.mixed_precision.global_policy().name == "float32"


# --------------------------------------------------------------------------- exact resume


class SignalAt(keras.callbacks.Callback):
    """Sends this process `signum` when the run reaches optimizer step `step`, as a
    scheduler preempting the job would."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.step, self.signum = step, signum

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            os.kill(os.getpid(), self.signum)


def final_variables(workdir: str) -> dict[str, np.ndarray]:
    """Every variable of the run's last checkpoint (model, optimizer, counters) by name; not
    the checkpoint object's own count of the saves this process made."""
    path = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
    reader = tf.train.load_checkpoint(path)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not name.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))
    }


def largest_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a if a[k].size)


def stopped_and_resumed(config: TrainConfig, workdir: str, stops: list[int], capsys) -> None:
    for stop in stops:
        with pytest.raises(Interrupted):
            train_and_evaluate(config, workdir, callbacks=[SignalAt(stop)])
        assert f"ckpt-{stop}" in tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
    train_and_evaluate(config, workdir)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("changes", "stops"),
    [
        ({"cache": "memory"}, [1, 5, 9]),
        ({"cache": "none", "flip": True}, [7]),
        ({"cache": "disk", "steps_per_execution": 2}, [4]),
    ],
    ids=["memory", "none-flip", "disk-spe2"],
)
def test_a_stopped_run_ends_with_the_weights_of_one_that_never_stopped(
    changes, stops, tiny_data_dir, tmp_path, capsys
):
    """Three stops at steps in both epochs, mid-pass (memory cache); one stop with flips and
    no cache, and with a disk cache and two steps per execution."""
    if changes.get("cache") == "disk":
        changes = {**changes, "cache": f"disk:{tmp_path / 'cache'}"}
    # 38 training images, batches of 8: a pass is 4.75 batches, so epochs of 6 steps
    # straddle passes and the stops fall mid-pass and mid-epoch.
    config = tiny(tiny_data_dir, epochs=2, steps_per_epoch=6, **changes)
    runs = {name: str(tmp_path / name) for name in ("once", "again", "stopped")}
    train_and_evaluate(config, runs["once"])
    stopped_and_resumed(config, runs["stopped"], stops, capsys)
    once, stopped = final_variables(runs["once"]), final_variables(runs["stopped"])
    difference = largest_difference(once, stopped)
    if difference > 0:  # allowed only within the kernels' own run-to-run difference
        train_and_evaluate(config, runs["again"])
        noise = largest_difference(once, final_variables(runs["again"]))
        assert difference <= noise, (difference, noise)
    assert int(stopped["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 12


def test_a_changed_steps_per_execution_ends_the_resumed_epoch_where_it_should(
    tiny_data_dir, tmp_path, capsys
):
    workdir = str(tmp_path / "run")
    with pytest.raises(Interrupted):
        train_and_evaluate(
            tiny(tiny_data_dir, epochs=2, steps_per_epoch=6), workdir, callbacks=[SignalAt(3)]
        )
    result = train_and_evaluate(
        tiny(tiny_data_dir, epochs=2, steps_per_epoch=6, steps_per_execution=2), workdir
    )
    assert result.step == 12  # 3 + 3 more, one at a time, then 6: no step over
    assert logged_steps(os.path.join(workdir, "logs", "validation"), "loss") == {6, 12}
    capsys.readouterr()


def test_a_signal_after_the_last_step_still_saves_and_exits_with_its_code(tiny_data_dir, tmp_path):
    class SignalInLastValidation(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            if int(self.model.optimizer.iterations) == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    workdir = str(tmp_path / "run")
    with pytest.raises(Interrupted) as caught:
        train_and_evaluate(tiny(tiny_data_dir), workdir, callbacks=[SignalInLastValidation()])
    assert caught.value.exit_code == 143 and "ckpt-2" in str(caught.value)
    assert not os.path.exists(os.path.join(workdir, "model.keras"))  # the rerun writes it
    result = train_and_evaluate(tiny(tiny_data_dir), workdir)
    assert result.step == 2 and os.path.isfile(os.path.join(workdir, "model.keras"))


def test_an_exploded_run_resumes_from_an_earlier_checkpoint_with_changed_settings(
    tiny_data_dir, tmp_path, capsys
):
    workdir = str(tmp_path / "run")
    good = tiny(tiny_data_dir, steps_per_epoch=4, checkpoint_every_steps=1, keep_checkpoints=50)
    train_and_evaluate(good, workdir)  # steps 1-4, each checkpointed
    exploding = dataclasses.replace(good, epochs=2, learning_rate=1e30)
    with pytest.raises(TrainError, match="non-finite") as caught:
        train_and_evaluate(exploding, workdir)
    message = str(caught.value)
    assert "`learning_rate` (now 1e+30)" in message and "`resume_step`" in message
    assert all(np.isfinite(v).all() for v in final_variables(workdir).values())  # no poison
    with pytest.raises(TrainError, match=r"`resume_step`=999: .* keeps no checkpoint"):
        train_and_evaluate(dataclasses.replace(good, epochs=2), workdir, resume_step=999)
    capsys.readouterr()
    result = train_and_evaluate(dataclasses.replace(good, epochs=2), workdir, resume_step=3)
    out = capsys.readouterr().out
    assert "resumed from" in out and "ckpt-3 (step 3" in out and "deleted the later" in out
    assert result.step == 8 and np.isfinite(result.logs["loss"])
    assert all(np.isfinite(v).all() for v in final_variables(workdir).values())


def test_tensorboard_writers_are_not_left_open_when_a_restore_fails(
    one_epoch, tiny_data_dir, tmp_path
):
    workdir = copy_run(one_epoch, tmp_path)
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
    with open(latest + ".index", "r+b") as f:
        f.truncate(20)
    events = sorted(glob.glob(os.path.join(workdir, "logs", "*", "events.*")))
    with pytest.raises(TrainError, match="cannot be restored"):
        train_and_evaluate(tiny(tiny_data_dir, epochs=2), workdir)
    assert sorted(glob.glob(os.path.join(workdir, "logs", "*", "events.*"))) == events
    open_events = [
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
        and "events.out.tfevents" in os.readlink(f"/proc/self/fd/{fd}")
        and os.readlink(f"/proc/self/fd/{fd}").startswith(workdir)
    ]
    assert open_events == []
