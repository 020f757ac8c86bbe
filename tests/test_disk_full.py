"""A full disk, for real: a small tmpfs under each write of ours (root only; skipped elsewhere).

Every write stops with one line naming the folder, keeps what was there, and says that
running the same command again continues once space is freed; then it does.
"""

import contextlib
import json
import os
import subprocess

import pytest
import tensorflow as tf

from facevae.model import evaluation, sampling
from facevae.model.config import TrainConfig, TrainError
from facevae.model.sample_config import SampleConfig
from facevae.model.trainer import train_and_evaluate
from facevae.pipeline import files, prepare, schema, synthetic


@contextlib.contextmanager
def small_disk(folder, kilobytes: int):
    """A tmpfs of `kilobytes` mounted at `folder` for the block."""
    os.makedirs(folder, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()[:80]})")
    try:
        yield str(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def grow(folder, kilobytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={kilobytes}k", str(folder)], check=True)


def fill(folder) -> None:
    """Takes every free byte of the disk holding `folder`."""
    with contextlib.suppress(OSError), open(os.path.join(folder, "filler"), "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def tiny(data_dir: str, **changes) -> TrainConfig:
    settings = {
        "data_dir": data_dir,
        "batch_size": 8,
        "z_dim": 8,
        "filters": (8, 16),
        "cache": "none",
        "epochs": 1,
        "steps_per_epoch": 4,
        "checkpoint_every_steps": 1,
        "log_every_steps": 1000,
        **changes,
    }
    return TrainConfig(**settings)


def one_line_with_the_fix(error: BaseException, folder: str) -> None:
    message = str(error)
    assert "\n" not in message and folder in message, message
    assert "free space and run the same command again" in message, message


def test_a_full_disk_stops_training_at_a_checkpoint_and_the_rerun_continues(
    tiny_data_dir, tmp_path, capsys
):
    with small_disk(tmp_path / "disk", 700) as disk:  # the config and one checkpoint fit
        workdir = os.path.join(disk, "run")
        with pytest.raises(TrainError) as caught:
            train_and_evaluate(tiny(tiny_data_dir), workdir)
        one_line_with_the_fix(caught.value, workdir)
        assert "the last one is" in str(caught.value)
        latest = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
        assert latest and latest.endswith("ckpt-1")  # kept, and still readable
        tf.train.load_checkpoint(latest).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")
        capsys.readouterr()
        grow(disk, 16 * 1024)
        result = train_and_evaluate(tiny(tiny_data_dir), workdir)
        assert result.step == 4 and os.path.isfile(os.path.join(workdir, "model.keras"))
        assert "resumed from" in capsys.readouterr().out


@pytest.fixture(scope="module")
def finished_run(tiny_data_dir, tmp_path_factory) -> str:
    workdir = str(tmp_path_factory.mktemp("full") / "run")
    train_and_evaluate(tiny(tiny_data_dir, steps_per_epoch=2), workdir)
    return workdir


def test_a_full_disk_under_a_picture_or_results_keeps_what_was_there(finished_run, tmp_path):
    with small_disk(tmp_path / "disk", 256) as disk:
        old = os.path.join(disk, "results.json")
        with open(old, "w") as f:
            f.write('{"old": 1}')
        fill(disk)
        with pytest.raises(files.WriteError) as caught:
            sampling.run(
                SampleConfig(workdir=finished_run, mode="random", n=4, out=f"{disk}/a.png")
            )
        one_line_with_the_fix(caught.value, disk)
        with pytest.raises(files.WriteError) as caught:
            evaluation.run(
                evaluation.EvalConfig(
                    workdir=finished_run, inception_weights="none", fid_samples=2, out=old
                )
            )
        one_line_with_the_fix(caught.value, disk)
        with open(old) as f:
            assert json.load(f) == {"old": 1}  # the previous results stand
        assert sorted(os.listdir(disk)) == ["filler", "results.json"]  # nothing half-written


def test_a_full_disk_stops_preparation_and_leaves_no_half_dataset(tmp_path):
    source = str(tmp_path / "source")
    synthetic.write_source(source, 40, seed=0, workers=1, verbose=False)
    with small_disk(tmp_path / "disk", 48) as disk:
        out = os.path.join(disk, "data")
        with pytest.raises(files.WriteError) as caught:
            prepare.prepare(source, out, size=32, workers=1, verbose=False)
        one_line_with_the_fix(caught.value, disk)
        assert os.listdir(disk) == []  # no dataset, no temporary folder
        grow(disk, 4096)
        manifest = prepare.prepare(source, out, size=32, workers=1, verbose=False)
        assert manifest.num_examples("train") > 0 and schema.Manifest.read(out) == manifest
