import errno
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

# The kill -9 stand-in of the atomic-folder tests (pytest puts tests/ on sys.path).
import corrupt
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.checkpoint import functional_saver

from facevae.model import workdir as wd
from facevae.model.config import RunConfig, TrainConfig
from facevae.model.grid import save_grid
from facevae.model.networks import NetworkConfig
from facevae.model.vae import VAE, ModelConfig

Killed = corrupt.Killed  # kill_after: a fixture of conftest.py
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = {
    "network": {"image_shape": [16, 16, 3], "filters": [4, 8], "z_dim": 4, "norm": "none"},
    "mode": "vae",
    "kl_weight": 1e-3,
    "kl_warmup_steps": 0,
    "reconstruction_loss": "bce",
    "seed": 0,
}
RUN = RunConfig(
    TrainConfig(data_dir="data/x", z_dim=4, filters=(4, 8), norm="none"),
    ModelConfig.from_dict(MODEL),
)


def test_missing_config_says_how_to_train(tmp_path):
    with pytest.raises(wd.WorkdirError, match=r"does not exist.*train one there first"):
        wd.read_config(str(tmp_path))


def test_config_round_trip_and_model_differences(tmp_path):
    wd.write_config(str(tmp_path / "run"), RUN)
    assert wd.read_config(str(tmp_path / "run")) == RUN
    assert wd.read_config(str(tmp_path / "run")).model.to_dict() == {
        **MODEL,
        "network": NetworkConfig.from_dict(MODEL["network"]).to_dict(),
    }
    other = ModelConfig.from_dict({**MODEL, "mode": "ae", "seed": 1})  # seed: not the model's
    assert wd.model_differences(RUN.model, other) == ["mode: stored 'vae', now 'ae'"]


def test_restore_needs_a_checkpoint_or_model(tmp_path):
    wd.write_config(str(tmp_path), RUN)
    with pytest.raises(wd.WorkdirError, match="no checkpoint"):
        wd.restore(str(tmp_path))


def test_restore_from_the_final_model(tmp_path):
    wd.write_config(str(tmp_path), RUN)
    trained = wd.build_model(wd.read_config(str(tmp_path)))
    trained.set_weights([w + 0.5 for w in trained.get_weights()])  # unlike any fresh model
    trained.save(os.path.join(tmp_path, wd.MODEL_FILE))
    restored, _ = wd.restore(str(tmp_path))
    z = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(restored.decode(z), trained.decode(z), rtol=1e-6)


# --------------------------------------------------------------------------- config.json


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"flags": {"z_dim": 4}, "model": {"netw', "not valid JSON"),  # truncated
        ("\x00\xff\xfe garbage", "not valid JSON"),
        ("[1, 2]", "a JSON list"),
        ('{"flags": {}}', 'no "model"'),
        ('{"flags": {}, "model": {"mode": "vae"}}', '"network"'),
    ],
)
def test_a_damaged_config_names_the_file_and_the_fix(tmp_path, content, problem):
    (tmp_path / "config.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(wd.WorkdirError, match=re.escape(problem)) as error:
        wd.read_config(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "config.json") in message and "`overwrite`" in message
    assert "\n" not in message


def test_an_oversized_or_folder_config_is_refused_before_reading(tmp_path):
    with open(tmp_path / "config.json", "wb") as f:
        f.truncate(wd.MAX_CONFIG_BYTES + 1)  # sparse: nothing is read
    with pytest.raises(wd.WorkdirError, match="bytes, more than"):
        wd.read_config(str(tmp_path))
    os.remove(tmp_path / "config.json")
    (tmp_path / "config.json").mkdir()
    with pytest.raises(wd.WorkdirError, match="is not a file"):
        wd.read_config(str(tmp_path))


# --------------------------------------------------------------------------- check_workdir


def test_check_workdir_accepts_new_and_existing_folders_and_writes_nothing(tmp_path):
    wd.check_workdir(str(tmp_path / "a" / "b" / "new"))
    wd.check_workdir(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_check_workdir_refuses_a_file_a_path_under_a_file_and_a_broken_link(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(wd.WorkdirError, match="is a file, not a folder"):
        wd.check_workdir(str(tmp_path / "file"))
    with pytest.raises(wd.WorkdirError, match=f"lies under {re.escape(str(tmp_path / 'file'))}"):
        wd.check_workdir(str(tmp_path / "file" / "sub" / "run"))
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(wd.WorkdirError, match="symbolic link to the missing"):
        wd.check_workdir(str(tmp_path / "link"))


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(name, options): a tmpfs mounted at tmp_path/name (root only; else skip)."""
    mounted = []

    def mount(name: str, options: str) -> str:
        path = tmp_path / name
        path.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return str(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_check_workdir_refuses_a_read_only_mount(mount_tmpfs):
    read_only = mount_tmpfs("ro", "ro,size=1m")
    for workdir in (read_only, os.path.join(read_only, "new", "run")):
        with pytest.raises(wd.WorkdirError, match=r"cannot be written .*Read-only file system"):
            wd.check_workdir(workdir)
        with pytest.raises(wd.WorkdirError, match="cannot be written"), wd.lock(workdir):
            pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the permission bits say")
def test_check_workdir_refuses_a_folder_without_write_permission(tmp_path):
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(wd.WorkdirError, match=r"cannot be written .*Permission denied"):
            wd.check_workdir(str(tmp_path / "run"))
    finally:
        os.chmod(tmp_path, 0o755)


def test_check_workdir_tries_a_write_rather_than_reading_permission_bits(tmp_path, monkeypatch):
    def refuse(**kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(wd.tempfile, "mkdtemp", refuse)
    with pytest.raises(wd.WorkdirError, match=f"cannot be written .*in {re.escape(str(tmp_path))}"):
        wd.check_workdir(str(tmp_path / "run"))


# --------------------------------------------------------------------------- lock

HOLD_LOCK = """
import sys, time
from facevae.model import workdir as wd
with wd.lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_process_is_refused_until_the_holder_is_killed(tmp_path):
    workdir = str(tmp_path / "run")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, workdir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(wd.WorkdirError) as error, wd.lock(workdir):
            pytest.fail("two processes hold the lock")
        message = str(error.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message
        assert f"`-c {workdir}`" in message and f"kill {holder.pid}" in message  # command, fix
        assert "another `workdir`" in message and "\n" not in message
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the OS releases the lock
        holder.wait()
    with wd.lock(workdir):
        holder_info = json.loads((tmp_path / "run" / ".lock").read_text())
        assert holder_info["pid"] == os.getpid()


def test_lock_is_exclusive_within_a_process_too_and_forgets_its_holder(tmp_path):
    wd.write_config(str(tmp_path), RUN)
    with (
        wd.lock(str(tmp_path)),
        pytest.raises(wd.WorkdirError, match=f"pid {os.getpid()} "),
        wd.lock(str(tmp_path)),
    ):
        pass
    assert (tmp_path / ".lock").read_text() == ""  # kept beside the run, naming nobody
    with wd.lock(str(tmp_path)):
        pass


def test_a_lock_holder_that_has_not_written_its_name_yet(tmp_path):
    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with (
            pytest.raises(wd.WorkdirError, match="in use by another training run"),
            wd.lock(str(tmp_path)),
        ):
            pass
    finally:
        os.close(fd)


def test_lock_takes_the_file_anew_when_its_holder_removed_it_meanwhile(tmp_path, monkeypatch):
    path = tmp_path / ".lock"
    path.write_text("")
    stale = os.open(path, os.O_RDWR)  # opened just before its holder removed it
    os.remove(path)
    opened, real_open = [], os.open

    def open_stale_first(*args, **kwargs):
        opened.append(stale if not opened else real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(wd.os, "open", open_stale_first)
    with wd.lock(str(tmp_path)):
        assert len(opened) == 2 and json.loads(path.read_text())["pid"] == os.getpid()


def test_a_folder_the_lock_created_is_removed_if_nothing_else_was_written(tmp_path):
    with wd.lock(str(tmp_path / "run")):
        assert os.listdir(tmp_path / "run") == [".lock"]
    assert list(tmp_path.iterdir()) == []
    with wd.lock(str(tmp_path / "run")):
        wd.write_config(str(tmp_path / "run"), RUN)
    assert sorted(os.listdir(tmp_path / "run")) == [".lock", "config.json"]


def test_lock_on_a_file_is_one_line_from_check_workdir(tmp_path):
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(wd.WorkdirError, match="is a file, not a folder"),
        wd.lock(str(tmp_path / "file")),
    ):
        pass


# --------------------------------------------------------------------------- --overwrite


def write_files(folder, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def checkpoint_files(step: int, text: str) -> dict[str, str]:
    """The files of a CheckpointManager checkpoint, enough for tf.train.latest_checkpoint."""
    return {
        f"ckpt/ckpt-{step}.index": text,
        f"ckpt/ckpt-{step}.data-00000-of-00001": text,
        "ckpt/checkpoint": f'model_checkpoint_path: "ckpt-{step}"\n'
        f'all_model_checkpoint_paths: "ckpt-{step}"\n',
    }


OLD_RUN = {
    "config.json": json.dumps(RUN.to_dict()),
    **checkpoint_files(40, "old"),
    "logs/train/events.out.tfevents.1.host.1.v2": "old",
    "logs/validation/events.out.tfevents.2.host.1.v2": "old",
    "samples/epoch_0001.png": "old",
    "model.keras": "old",
    "export/saved_model.pb": "old",
    "export/fingerprint.pb": "old",
    "export/variables/variables.index": "old",
    "random.png": "old",  # sample.py's outputs and cache
    "stats.json": "old",
    "attribute_vectors_validation.npz": "old",
    "prior_gmm.npz": "old",
    "eval.json": "old",  # evaluate.py
    ".outputs": json.dumps(["eval.json", "random.png", "stats.json"]),  # as they noted them
}
# One entry of each kind: the kill test's runtime grows with the square of the entries.
SMALL_RUN = {
    k: v
    for k, v in OLD_RUN.items()
    if k.split("/")[0] in ("config.json", "ckpt", "samples", "model.keras")
}
NEW_CONFIG = json.dumps(
    RunConfig(TrainConfig(data_dir="data/x", z_dim=8), ModelConfig.from_dict(MODEL)).to_dict()
)
NEW_START = {"config.json": NEW_CONFIG, "logs/train/events.out.tfevents.3.host.1.v2": "new"}
NEW_RUN = {**NEW_START, **checkpoint_files(1, "new")}


def files_of(folder) -> dict[str, str]:
    """Every file of a workdir but the lock, relative path -> text."""
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def old_run(folder, files=OLD_RUN):
    folder.mkdir(exist_ok=True)
    write_files(folder, files)
    (folder / ".lock").write_text("")
    return str(folder)


@pytest.mark.parametrize(
    "foreign, listed",
    [
        ("logs/server.log", "logs/server.log"),
        ("samples/holiday.png", "samples/holiday.png"),
        ("export/report.csv", "export/report.csv"),
        ("notes.txt", "notes.txt"),
        ("data/x.csv", "data/"),
        ("ckpt/other/model.h5", "ckpt/other/"),
    ],
)
def test_overwrite_refuses_a_folder_with_files_no_run_writes(tmp_path, foreign, listed):
    workdir = old_run(tmp_path / "run")
    assert wd.foreign_entries(workdir) == []
    write_files(tmp_path / "run", {foreign: "the user's"})
    before = files_of(tmp_path / "run")
    with pytest.raises(wd.WorkdirError) as error:
        wd.begin_overwrite(workdir)
    assert f"does not write ({listed}); move them out" in str(error.value)
    assert "`overwrite` refused" in str(error.value) and "another `workdir`" in str(error.value)
    assert files_of(tmp_path / "run") == before
    assert not (tmp_path / "run" / ".replaced-run").exists()


def test_overwrite_refuses_a_symbolic_link_and_lists_at_most_a_few(tmp_path):
    workdir = old_run(tmp_path / "run")
    (tmp_path / "run" / "samples" / "link.png").symlink_to(tmp_path / "elsewhere.png")
    write_files(tmp_path / "run", {f"zz_{i}.txt": "x" for i in range(20)})
    with pytest.raises(wd.WorkdirError, match=r"samples/link\.png.* and 13 more"):
        wd.begin_overwrite(workdir)


@pytest.mark.parametrize(
    "files, problem",
    [
        ({"config.json": '{"name": "some other tool"}'}, "is not a config.json of ours"),
        ({"config.json": '{"flags": '}, "is not a config.json of ours"),
        ({"logs/train/events.out.tfevents.1.x": "tb"}, "holds no training run"),
    ],
)
def test_overwrite_refuses_what_is_not_a_run_of_ours(tmp_path, files, problem):
    write_files(tmp_path, files)
    with pytest.raises(wd.WorkdirError, match=problem):
        wd.begin_overwrite(str(tmp_path))
    assert files_of(tmp_path) == files


@pytest.mark.parametrize("config", ['{"flags": ', None])
def test_overwrite_accepts_a_run_whose_config_is_damaged_or_lost(tmp_path, config):
    workdir = old_run(tmp_path)
    if config is None:
        os.remove(tmp_path / "config.json")
    else:
        (tmp_path / "config.json").write_text(config)
    assert wd.begin_overwrite(workdir) is not None


def test_overwrite_of_an_empty_or_missing_folder_replaces_nothing(tmp_path):
    assert wd.begin_overwrite(str(tmp_path / "missing")) is None
    (tmp_path / ".lock").write_text("")
    assert wd.begin_overwrite(str(tmp_path)) is None


def test_commit_deletes_the_old_run_and_keeps_the_new(tmp_path):
    workdir = old_run(tmp_path / "run")
    replacement = wd.begin_overwrite(workdir)
    assert sorted(os.listdir(workdir)) == [".lock", ".replaced-run"]
    write_files(tmp_path / "run", NEW_RUN)
    replacement.commit()
    replacement.rollback()  # after a commit: nothing to undo
    assert files_of(tmp_path / "run") == NEW_RUN
    assert sorted(os.listdir(workdir)) == [".lock", "ckpt", "config.json", "logs"]


def test_rollback_puts_the_old_run_back_and_keeps_what_a_user_added(tmp_path):
    workdir = old_run(tmp_path / "run")
    replacement = wd.begin_overwrite(workdir)
    write_files(tmp_path / "run", {**NEW_START, "samples/.tmp-1-epoch_0001.png": "half"})
    write_files(tmp_path / "run", {"notes.txt": "written by the user meanwhile"})
    replacement.rollback()
    assert files_of(tmp_path / "run") == {**OLD_RUN, "notes.txt": "written by the user meanwhile"}
    assert wd.recover(workdir) == []


@pytest.mark.parametrize("new_run_checkpointed", [False, True])
def test_recover_after_a_kill_keeps_exactly_one_run(tmp_path, new_run_checkpointed):
    workdir = old_run(tmp_path / "run")
    wd.begin_overwrite(workdir)  # then killed: neither commit() nor rollback() runs
    write_files(tmp_path / "run", NEW_RUN if new_run_checkpointed else NEW_START)
    (line,) = wd.recover(workdir)
    if new_run_checkpointed:
        assert files_of(tmp_path / "run") == NEW_RUN and "deleted the previous run" in line
    else:
        assert files_of(tmp_path / "run") == OLD_RUN and "put the previous run back" in line
    assert not [n for n in os.listdir(workdir) if n.startswith(".replaced-run")]


@pytest.mark.parametrize("new_run", ["diverges before a checkpoint", "checkpoints"])
def test_a_kill_at_any_point_of_an_overwrite_keeps_one_whole_run(tmp_path, kill_after, new_run):
    """Kill after 0, 1, 2, ... file operations of the overwrite (and again after 0, 1, ...
    of the recover that follows); the next recover leaves the old run, or the new one once
    it has a checkpoint; never neither, never a mix, nothing left aside."""
    checkpoints = new_run == "checkpoints"
    outcomes = set()
    for n in range(200):
        for m in range(200):
            folder = tmp_path / f"{n}-{m}"
            workdir = old_run(folder, SMALL_RUN)
            killed, checkpointed = True, False
            kill_after(n)
            try:
                replacement = wd.begin_overwrite(workdir)
                write_files(folder, NEW_RUN if checkpoints else NEW_START)
                checkpointed = checkpoints
                if checkpoints:
                    replacement.commit()
                else:  # e.g. a non-finite loss at step 2
                    replacement.rollback()
                killed = False
            except Killed:
                pass
            kill_after(m)
            try:
                wd.recover(workdir)
                recovered = True
            except Killed:
                recovered = False
            kill_after(None)
            wd.recover(workdir)
            result = files_of(folder)
            assert result == (NEW_RUN if checkpointed else SMALL_RUN), (n, m)
            assert not [f for f in os.listdir(workdir) if f.startswith(".replaced")], (n, m)
            outcomes.add((killed, result == NEW_RUN))
            if recovered:
                break
        if not killed:
            break
    else:
        pytest.fail("the overwrite never completed")
    assert outcomes == (
        {(True, False), (True, True), (False, True)}
        if checkpoints
        else {(True, False), (False, False)}
    )


# --------------------------------------------------------------------------- recover


def test_recover_removes_what_a_killed_checkpoint_save_left(tmp_path, monkeypatch):
    """The leftovers are made by TensorFlow itself, killed before it merges the shards."""
    workdir = old_run(tmp_path / "run")
    checkpoint = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]))
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(workdir, "ckpt"), 3)

    def killed(*args, **kwargs):
        raise Killed("merge_v2_checkpoints")

    monkeypatch.setattr(functional_saver.gen_io_ops, "merge_v2_checkpoints", killed)
    with pytest.raises(Killed):
        manager.save(checkpoint_number=41)
    monkeypatch.undo()
    temp = os.listdir(os.path.join(workdir, "ckpt", "ckpt-41_temp"))
    assert temp and all(name.startswith("part-") for name in temp)
    write_files(
        tmp_path / "run",
        {
            "ckpt/checkpoint.tmp0123abcd": "half-written state",
            "ckpt/ckpt-42.data-00000-of-00001": "data whose index was never written",
            "samples/.tmp-77-epoch_0002.png": "half a grid",
        },
    )
    (ckpt_line, samples_line) = wd.recover(workdir)
    for name in ("ckpt-41_temp", "checkpoint.tmp0123abcd", "ckpt-42.data-00000-of-00001"):
        assert name in ckpt_line
    assert ".tmp-77-epoch_0002.png" in samples_line
    assert files_of(tmp_path / "run") == OLD_RUN
    assert tf.train.latest_checkpoint(os.path.join(workdir, "ckpt")).endswith("ckpt-40")
    assert wd.recover(workdir) == []


def test_recover_of_a_missing_or_clean_folder_does_nothing(tmp_path):
    assert wd.recover(str(tmp_path / "missing")) == []
    assert wd.recover(old_run(tmp_path / "run")) == []
    assert files_of(tmp_path / "run") == OLD_RUN


def test_recover_refuses_to_guess_when_the_state_is_lost(tmp_path):
    workdir = old_run(tmp_path / "run")
    wd.begin_overwrite(workdir)
    os.remove(os.path.join(workdir, ".replaced-run", ".state-kept"))
    with pytest.raises(wd.WorkdirError, match=r"\.replaced-run holds the run .* marker is lost"):
        wd.recover(workdir)


# --------------------------------------------------------------------------- save_final

TINY = NetworkConfig(image_shape=(32, 32, 3), filters=(8, 16), z_dim=4)
Z = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)


def tiny_model(offset: float) -> VAE:
    model = VAE(network=TINY, seed=0)
    model.set_weights([w + offset for w in model.get_weights()])  # tells models apart
    return model


def final_pair(workdir: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded Z from model.keras (as uint8, like the export) and from export/."""
    loaded = keras.models.load_model(os.path.join(workdir, "model.keras"))
    from_keras = np.round(np.asarray(loaded.decode(Z), np.float32) * 255).astype(np.uint8)
    export = tf.saved_model.load(os.path.join(workdir, "export"))
    return from_keras, export.serve(tf.constant(Z))["images"].numpy()


def test_save_final_writes_a_pair_that_agrees(tmp_path):
    model = tiny_model(0.0)
    wd.save_final(model, str(tmp_path))
    from_keras, served = final_pair(str(tmp_path))
    expected = np.round(np.asarray(model.decode(Z), np.float32) * 255).astype(np.uint8)
    assert served.dtype == np.uint8 and served.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(from_keras, expected)
    np.testing.assert_array_equal(served, expected)
    assert sorted(os.listdir(tmp_path)) == ["export", "model.keras"]


@pytest.mark.parametrize("failing", ["keras", "saved_model"])
def test_a_failed_save_final_keeps_the_previous_pair(tmp_path, monkeypatch, failing):
    wd.save_final(tiny_model(0.0), str(tmp_path))
    before = final_pair(str(tmp_path))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if failing == "keras":
        monkeypatch.setattr(VAE, "save", disk_full)
    else:
        monkeypatch.setattr(wd.tf.saved_model, "save", disk_full)
    with pytest.raises(wd.WorkdirError, match=r"No space left on device.*unchanged"):
        wd.save_final(tiny_model(0.5), str(tmp_path))
    monkeypatch.undo()
    np.testing.assert_array_equal(final_pair(str(tmp_path)), before)
    assert sorted(os.listdir(tmp_path)) == ["export", "model.keras"]


def folder_bytes(workdir: str, name: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(os.path.join(workdir, name))
        for f in files
    )


def fill_disk(path: str, leave: int) -> None:
    """Fills the filesystem of `path` with one file, then frees about `leave` bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    size = 0
    try:
        while True:
            size += os.write(fd, bytes(65536))
    except OSError as e:
        assert e.errno == errno.ENOSPC
    os.ftruncate(fd, max(0, size - leave))
    os.close(fd)


def test_a_full_disk_during_save_final_keeps_the_previous_pair(tmp_path, mount_tmpfs):
    workdir = mount_tmpfs("small", "size=4m")
    wd.save_final(tiny_model(0.0), workdir)
    before = final_pair(workdir)
    # Leave room for model.keras but not for export/: the failure comes half-way through.
    room = (
        os.path.getsize(os.path.join(workdir, "model.keras")) + folder_bytes(workdir, "export") // 2
    )
    fill_disk(os.path.join(workdir, "filler"), leave=room)
    with pytest.raises(wd.WorkdirError, match=r"\(No space left on device\).*unchanged"):
        wd.save_final(tiny_model(0.5), workdir)
    np.testing.assert_array_equal(final_pair(workdir), before)
    assert sorted(os.listdir(workdir)) == ["export", "filler", "model.keras"]
    os.remove(os.path.join(workdir, "filler"))
    wd.save_final(tiny_model(0.5), workdir)
    after = final_pair(workdir)
    np.testing.assert_array_equal(after[0], after[1])
    assert not np.array_equal(after[0], before[0])


def test_what_tensorflow_and_keras_write_is_recognised_as_ours(tmp_path):
    """Real artefacts, not hand-made names: a run of ours passes foreign_entries."""
    workdir = str(tmp_path)
    model = tiny_model(0.0)
    wd.write_config(workdir, RunConfig(TrainConfig(data_dir="d"), ModelConfig(TINY)))
    checkpoint = tf.train.Checkpoint(model=model)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(workdir, "ckpt"), 1)
    manager.save(checkpoint_number=1)
    manager.save(checkpoint_number=2)  # and one deleted by max_to_keep
    writer = tf.summary.create_file_writer(os.path.join(workdir, "logs", "train"))
    with writer.as_default(step=2):
        tf.summary.scalar("loss", 1.0)
        tf.summary.image("samples", np.zeros((1, 8, 8, 3), np.float32))
    writer.close()
    save_grid(
        np.zeros((4, 8, 8, 3), np.float32), os.path.join(workdir, "samples", "epoch_0001.png")
    )
    wd.save_final(model, workdir)
    assert sorted(os.listdir(tmp_path)) == [
        "ckpt",
        "config.json",
        "export",
        "logs",
        "model.keras",
        "samples",
    ]
    assert wd.foreign_entries(workdir) == []
    assert wd.recover(workdir) == []


def test_overwrite_rollback_and_commit_work_on_a_full_disk(mount_tmpfs):
    disk = Path(mount_tmpfs("full", "size=1m"))
    workdir = old_run(disk / "run")
    fill_disk(str(disk / "filler"), leave=0)
    wd.begin_overwrite(workdir).rollback()
    assert files_of(disk / "run") == OLD_RUN
    wd.begin_overwrite(workdir).commit()
    assert os.listdir(workdir) == [".lock"]
