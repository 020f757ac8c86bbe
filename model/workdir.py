"""A run's workdir: its config, checkpoints and final model, shared by train.py and sample.py.

workdir/config.json    {"flags": {...every train.py flag...}, "model": {...VAE kwargs...}}
workdir/ckpt/          tf.train.CheckpointManager: model, optimizer, epoch
workdir/logs/          TensorBoard: train/ and validation/
workdir/samples/       epoch_XXXX.png grids from fixed latent vectors
workdir/model.keras    the final model (keras.models.load_model)
workdir/export/        SavedModel of the decoder for serving: z -> uint8 images
workdir/.lock          held (fcntl.flock) by the one training process that owns the workdir

A training run calls, in this order: check_workdir, then inside `with lock(workdir):`
recover (prints what it did), read_config, begin_overwrite when asked to start afresh (and
commit() once the new run has its first checkpoint), and save_final at the end.

--overwrite moves the old run into `.replaced-run/` and deletes it only at commit(); the
name of its `.state-<state>` marker says what a later recover() must do after a kill:
  put-back     the old run is (partly) aside and nothing new exists yet: move it back
  kept         the old run is aside, the new one runs: keep the new run if it has a
               checkpoint (delete the old one), else delete the new run's files, put back
  discard-new  a rollback is deleting the new run's files: finish, then put back
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from facevae.model.vae import VAE
from facevae.pipeline import atomic
from facevae.pipeline.schema import write_json_atomic

CONFIG_NAME = "config.json"
CKPT_DIR = "ckpt"
LOGS_DIR = "logs"
SAMPLES_DIR = "samples"
MODEL_FILE = "model.keras"
EXPORT_DIR = "export"
LOCK_FILE = ".lock"
ASIDE_DIR = ".replaced-run"  # the old run during an --overwrite, until commit()
FINAL_STAGE = "final"  # save_final writes .final.incomplete/, renamed .final.ready/ when whole

# What makes two runs different experiments: resuming across a change here is refused.
MODEL_SHAPING_KEYS = ("network", "mode", "reconstruction_loss", "kl_weight")

MAX_CONFIG_BYTES = 1 << 20  # ours are a few KB; a bigger file is not one of ours
MAX_LOCK_BYTES = 4096
MAX_LISTED = 8  # foreign entries named in a message

# Files sample.py, evaluate.py and tools.make_figures write into a workdir: <mode>.png and
# .json (eval.json, figure_run.json), and caches (attribute vectors, model.prior's mixture).
# A new one must be listed here, or --overwrite takes a run holding it for someone else's.
OUTPUT_NAMES = (
    "random reconstruct interpolate attribute traverse boundary denoise stats eval figure_run"
)
_OURS_AT_TOP = re.compile(
    r"config\.json|model\.keras|\.lock"
    r"|\.tmp-.*"  # write_json_atomic, model.grid.save_grid, sample.py: temporary files
    rf"|({'|'.join(OUTPUT_NAMES.split())})\.(png|json)|attribute_vectors_\w+\.npz|prior_gmm\.npz"
)
_OURS_HIDDEN_DIRS = re.compile(
    rf"{re.escape(ASIDE_DIR)}(\.new|\.delete)?|\.{FINAL_STAGE}\.(incomplete|ready)"
    r"|\.export\.(incomplete|old)"  # pipeline.atomic.move_into_place of earlier versions
    r"|\.write-test-\w+"  # check_workdir's probe
)
# Inside our folders: (files anywhere, folders taken whole, may other folders be entered).
_CKPT_FILE = re.compile(r"checkpoint|ckpt-\d+\.(index|data-\d{5}-of-\d{5})")
_CKPT_LEFTOVER_FILE = re.compile(r"checkpoint\.tmp[0-9a-f]+|.*\.tempstate.*")  # killed writes
_CKPT_TEMP_DIR = re.compile(r"ckpt-\d+_temp")  # functional_saver: <prefix>_temp/part-*
_RULES = {
    CKPT_DIR: (
        re.compile(f"{_CKPT_FILE.pattern}|{_CKPT_LEFTOVER_FILE.pattern}"),
        _CKPT_TEMP_DIR,
        False,
    ),
    LOGS_DIR: (re.compile(r"events\.out\.tfevents\..*"), re.compile(r"plugins"), True),
    SAMPLES_DIR: (re.compile(r"(epoch|step)_\d+[\w.-]*\.png|\.tmp-.*"), None, False),
    EXPORT_DIR: (
        re.compile(r"saved_model\.pb(txt)?|fingerprint\.pb|keras_metadata\.pb"),
        re.compile(r"variables|assets|assets\.extra"),
        False,
    ),
}

STATE_PREFIX = ".state-"  # an empty file .state-<state>: renamed, so it needs no disk space
PUT_BACK, KEPT, DISCARD_NEW = "put-back", "kept", "discard-new"


class WorkdirError(ValueError):
    """A workdir that cannot be used as asked; the message is one line naming the fix."""


# --------------------------------------------------------------------------- config


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_NAME)


def read_config(workdir: str) -> dict[str, Any]:
    """Reads `config.json`; WorkdirError naming the file and the fix if missing or damaged."""
    path = config_path(workdir)
    afresh = f"`python train.py --workdir {workdir} --overwrite` starts the run afresh"
    if not os.path.lexists(path):
        raise WorkdirError(
            f"{path} does not exist, so {workdir} is not a training run: train one with "
            f"`python train.py --data_dir DATA --workdir {workdir}` (or `python train.py --demo`)"
        )
    if not os.path.isfile(path):
        raise WorkdirError(f"{path} is not a file: move it away, then {afresh}")
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise WorkdirError(
            f"{path} has {size:,} bytes, more than a config.json of train.py "
            f"(at most {MAX_CONFIG_BYTES:,}): restore it, or {afresh}"
        )
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WorkdirError(
            f"{path} is damaged, not valid JSON ({e}; truncated?): restore it "
            f"from a backup, or {afresh}"
        ) from None
    except OSError as e:
        raise WorkdirError(f"{path} cannot be read ({e.strerror}): fix its permissions") from None
    problem = config_shape_problem(config)
    if problem:
        raise WorkdirError(
            f"{path} is not a config.json of train.py ({problem}): restore it, or {afresh}"
        )
    return config


def config_shape_problem(config: Any) -> str | None:
    """What keeps `config` from being a config.json of ours, or None."""
    if not isinstance(config, dict):
        return f"a JSON {type(config).__name__}, not an object"
    for key in ("flags", "model"):
        if not isinstance(config.get(key), dict):
            return f'no "{key}" object'
    if not isinstance(config["model"].get("network"), dict):
        return 'no "model" -> "network" object'
    return None


def write_config(workdir: str, config: dict[str, Any]) -> None:
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(config_path(workdir), config)


def model_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The model-shaping settings that differ between two model configs, as readable lines."""
    return [
        f"{key}: stored {stored.get(key)!r}, now {current.get(key)!r}"
        for key in MODEL_SHAPING_KEYS
        if stored.get(key) != current.get(key)
    ]


# --------------------------------------------------------------------------- model


def build_model(config: dict[str, Any]) -> VAE:
    """A fresh (untrained) VAE from a workdir config; its weights exist from the start."""
    return VAE(**config["model"])


def restore(workdir: str) -> tuple[VAE, dict[str, Any]]:
    """The trained model of a run (latest checkpoint, else model.keras) and its config."""
    config = read_config(workdir)
    model = build_model(config)
    latest = tf.train.latest_checkpoint(os.path.join(workdir, CKPT_DIR))
    if latest:
        # Every model variable must come from the checkpoint; its optimizer slots are unused.
        status = tf.train.Checkpoint(model=model).read(latest)
        status.assert_existing_objects_matched().expect_partial()
        return model, config
    final = os.path.join(workdir, MODEL_FILE)
    if os.path.isfile(final):
        loaded = keras.models.load_model(final)
        model.set_weights(loaded.get_weights())
        return model, config
    raise WorkdirError(
        f"{workdir} has a config but no checkpoint in {CKPT_DIR}/ and no {MODEL_FILE}: train it "
        f"first with `python train.py --workdir {workdir}` (the same command resumes)"
    )


def save_final(model: VAE, workdir: str) -> None:
    """model.keras and a SavedModel of the decoder (export/), replaced as one pair.

    Both are written into `.final.incomplete/` first; a failure there (a full disk) removes
    it and leaves the previous pair as it was. Renaming it to `.final.ready/` commits the
    new pair; recover() completes the moves into place if a kill interrupts them.
    """
    try:
        stage = atomic.stage_dir(workdir, FINAL_STAGE)
        model.save(os.path.join(stage, MODEL_FILE))
        tf.saved_model.save(DecoderExport(model), os.path.join(stage, EXPORT_DIR))
    except BaseException as e:
        atomic.discard_stage(workdir, FINAL_STAGE)
        if isinstance(e, (OSError, tf.errors.OpError)):
            raise WorkdirError(
                f"could not write {MODEL_FILE} and {EXPORT_DIR}/ in {workdir} ({_reason(e)}): the "
                f"previous ones are unchanged; free space and run the same command again"
            ) from e
        raise
    atomic.publish_stage(workdir, FINAL_STAGE)


def _reason(error: OSError | tf.errors.OpError) -> str:
    """Why a write failed: "No space left on device" (TF's messages start with the path)."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return error.message.rsplit("; ", 1)[-1]


class DecoderExport(tf.Module):
    """The serving signature: latent vectors (N, z_dim) -> uint8 images (N, H, W, C)."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, model.network.z_dim], tf.float32, name="z")],
        )

    def _serve(self, z):
        images = tf.cast(self.model.decode(z), tf.float32)  # (N, H, W, C) in [0, 1]
        return {"images": tf.cast(tf.round(images * 255.0), tf.uint8)}


# --------------------------------------------------------------------------- the folder


def check_workdir(workdir: str) -> None:
    """WorkdirError if `workdir` is a file, lies under a file or cannot be written.

    Writability is tried, not inferred from permission bits (root ignores those; a
    read-only mount does not): a probe folder is created and removed where the workdir
    is, or where it will be created.
    """
    path = os.path.abspath(workdir)
    if os.path.islink(path) and not os.path.exists(path):
        raise WorkdirError(
            f"{workdir} is a symbolic link to the missing {os.readlink(path)}: "
            "create its target, or give another --workdir"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(
            f"{workdir} is a file, not a folder: give --workdir a folder path "
            "(a missing one is created)"
        )
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WorkdirError(
            f"{workdir} lies under {existing}, which is a file, not a folder: "
            "give --workdir a path under a folder"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as e:
        raise WorkdirError(
            f"{workdir} cannot be written ({e.strerror} in {existing}): give "
            "--workdir a writable folder, or fix its permissions"
        ) from None


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Makes this process the only one training in `workdir` until the block ends.

    An exclusive fcntl.flock on `<workdir>/.lock`, which the OS releases when the process
    dies however it dies; the file names the holder for the message a second run gets.
    A workdir this call created and nothing but the lock was written into is removed again.
    """
    created = not os.path.isdir(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        fd = _acquire(os.path.join(workdir, LOCK_FILE))
    except OSError as e:
        check_workdir(workdir)  # the clearer message when there is one
        raise WorkdirError(
            f"cannot lock {workdir} ({e.strerror}): give --workdir a folder on "
            "a local, writable disk"
        ) from None
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": shlex.join(sys.argv)[:500],
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        with contextlib.suppress(OSError):  # e.g. a full disk: the name is a courtesy
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield
    finally:
        try:
            os.ftruncate(fd, 0)  # a stale name would mislead; the flock is what counts
            if created and os.listdir(workdir) == [LOCK_FILE]:
                # Unlinked while still held: a process that opened it meanwhile finds it
                # unlinked in _acquire and opens the path again.
                os.remove(os.path.join(workdir, LOCK_FILE))
                os.rmdir(workdir)
        finally:
            os.close(fd)  # releases the flock


def _acquire(path: str) -> int:
    """An fd of `path` holding its exclusive flock; WorkdirError naming the holder if taken."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, MAX_LOCK_BYTES, 0)
            os.close(fd)
            raise WorkdirError(_in_use(os.path.dirname(path), holder)) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file was removed by its last holder: lock the new one


def _in_use(workdir: str, holder: bytes) -> str:
    try:
        info = json.loads(holder)
        who = f"pid {info['pid']} on {info['host']}, since {info['since']}: `{info['command']}`"
        stop = f"stop it (`kill {info['pid']}` on {info['host']})"
    except (ValueError, TypeError, KeyError):
        who, stop = "a process that has not yet written its name", "stop it"
    return (
        f"{workdir} is in use by another training run ({who}): wait for it to end, "
        f"{stop}, or give another --workdir"
    )


# --------------------------------------------------------------------------- which files are ours


def foreign_entries(workdir: str) -> list[str]:
    """The paths in `workdir` (relative, folders ending in /) that no run of ours writes."""
    found = []
    for entry in sorted(os.scandir(workdir), key=lambda e: e.name):
        name = entry.name
        if entry.is_symlink():
            found.append(name)
        elif entry.is_dir():
            if name in _RULES:
                found += _foreign_below(entry.path, name, *_RULES[name])
            elif not _OURS_HIDDEN_DIRS.fullmatch(name):
                found.append(name + "/")
        elif not _OURS_AT_TOP.fullmatch(name):
            found.append(name)
    return found


def _foreign_below(
    folder: str, rel: str, files: re.Pattern, whole: re.Pattern | None, descend: bool
) -> list[str]:
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = f"{rel}/{entry.name}"
        if entry.is_symlink():
            found.append(path)
        elif entry.is_dir():
            if whole and whole.fullmatch(entry.name):
                continue
            if descend:
                found += _foreign_below(entry.path, path, files, whole, descend)
            else:
                found.append(path + "/")
        elif not files.fullmatch(entry.name):
            found.append(path)
    return found


def _is_ours_at_top(workdir: str, name: str) -> bool:
    """Whether a top-level name is one a run of ours writes (its contents not looked at)."""
    path = os.path.join(workdir, name)
    if os.path.islink(path):
        return False
    if os.path.isdir(path):
        return name in _RULES or bool(_OURS_HIDDEN_DIRS.fullmatch(name))
    return bool(_OURS_AT_TOP.fullmatch(name))


def has_saved_state(workdir: str) -> bool:
    """Whether the run in `workdir` has something to resume or use: a checkpoint or model."""
    return bool(tf.train.latest_checkpoint(os.path.join(workdir, CKPT_DIR))) or os.path.isfile(
        os.path.join(workdir, MODEL_FILE)
    )


# --------------------------------------------------------------------------- --overwrite


class Replacement:
    """The old run of a workdir, kept in `.replaced-run/` while a new run starts."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir

    def commit(self) -> None:
        """Deletes the old run; call once the new run has its first checkpoint."""
        if os.path.isdir(os.path.join(self.workdir, ASIDE_DIR)):
            _drop_aside(self.workdir)

    def rollback(self) -> None:
        """Deletes the new run's files and puts the old run back (a no-op after commit)."""
        if os.path.isdir(os.path.join(self.workdir, ASIDE_DIR)):
            _roll_back(self.workdir)


def begin_overwrite(workdir: str) -> Replacement | None:
    """Moves the run in `workdir` aside for a new one; None when there is none.

    Refuses (WorkdirError) a folder holding anything a run of ours does not write. Call it
    under lock() after recover().
    """
    if not os.path.isdir(workdir):
        return None
    names = sorted(n for n in os.listdir(workdir) if n != LOCK_FILE)
    if not names:
        return None
    if any(n.startswith(ASIDE_DIR) for n in names):
        raise RuntimeError(f"{workdir} has {ASIDE_DIR}: call recover() before begin_overwrite()")
    foreign = foreign_entries(workdir)
    if foreign:
        listed = ", ".join(foreign[:MAX_LISTED])
        if len(foreign) > MAX_LISTED:
            listed += f" and {len(foreign) - MAX_LISTED} more"
        raise WorkdirError(
            f"--overwrite refused: {workdir} holds files a training run does not "
            f"write ({listed}); move them out of it, or give another --workdir"
        )
    _check_is_a_run(workdir, names)

    # The old run goes into .replaced-run/ entry by entry: the folder exists (by an atomic
    # rename) with its state "put-back" before the first move, so a kill part-way is undone.
    new, aside = os.path.join(workdir, ASIDE_DIR + ".new"), os.path.join(workdir, ASIDE_DIR)
    try:
        atomic.remove(new)
        os.mkdir(new)
        _write_state(new, PUT_BACK)
        os.rename(new, aside)
        for name in names:
            os.rename(os.path.join(workdir, name), os.path.join(aside, name))
        _write_state(aside, KEPT)
    except OSError as e:
        _recover_overwrite(workdir)  # renames back: no space needed
        raise WorkdirError(
            f"--overwrite could not move the run in {workdir} aside ({e.strerror}); it is "
            "unchanged: fix that and run again"
        ) from e
    return Replacement(workdir)


def _check_is_a_run(workdir: str, names: list[str]) -> None:
    """WorkdirError unless the entries (all of names we write) make a run of ours: a config
    of ours; a damaged one beside other run files; or none beside a checkpoint or model."""
    path = config_path(workdir)
    if CONFIG_NAME in names:
        try:
            read_config(workdir)
            return
        except WorkdirError:
            if len(names) > 1:
                return  # a damaged config.json among files of ours: still our run
        raise WorkdirError(
            f"--overwrite refused: {path} is not a config.json of train.py and "
            f"nothing else of a run is in {workdir}: delete it if it is a "
            "damaged one, or give another --workdir"
        )
    if not has_saved_state(workdir):
        raise WorkdirError(
            f"--overwrite refused: {workdir} has no {CONFIG_NAME}, checkpoint or "
            f"{MODEL_FILE}, so it holds no training run ({', '.join(names)}): "
            "delete them if they are from one, or give another --workdir"
        )


def _write_state(aside: str, state: str) -> None:
    """Sets the state by renaming its marker (atomic, and possible on a full disk)."""
    old = _state_markers(aside)
    target = os.path.join(aside, STATE_PREFIX + state)
    if old:
        os.rename(os.path.join(aside, old[0]), target)
    else:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _read_state(aside: str) -> str | None:
    markers = _state_markers(aside)
    return markers[0][len(STATE_PREFIX) :] if len(markers) == 1 else None


def _state_markers(aside: str) -> list[str]:
    return [n for n in os.listdir(aside) if n.startswith(STATE_PREFIX)]


def _drop_aside(workdir: str) -> None:
    """Deletes .replaced-run/ (renamed first, so a kill part-way is not taken for a state)."""
    doomed = os.path.join(workdir, ASIDE_DIR + ".delete")
    atomic.remove(doomed)
    os.rename(os.path.join(workdir, ASIDE_DIR), doomed)
    shutil.rmtree(doomed)


def _roll_back(workdir: str) -> None:
    aside = os.path.join(workdir, ASIDE_DIR)
    state = _read_state(aside)
    if state not in (KEPT, DISCARD_NEW, PUT_BACK):
        raise WorkdirError(
            f"{aside} holds the run an interrupted --overwrite replaced, but "
            "its state marker is lost: move what you need out of it, delete it, and "
            "run again"
        )
    if state == KEPT:
        _write_state(aside, DISCARD_NEW)
        state = DISCARD_NEW
    if state == DISCARD_NEW:
        for name in os.listdir(workdir):
            # Only names of ours: anything a user put there meanwhile stays.
            if (
                name != LOCK_FILE
                and not name.startswith(ASIDE_DIR)
                and _is_ours_at_top(workdir, name)
            ):
                atomic.remove(os.path.join(workdir, name))
        _write_state(aside, PUT_BACK)
    _put_back(workdir)


def _put_back(workdir: str) -> None:
    aside = os.path.join(workdir, ASIDE_DIR)
    for name in os.listdir(aside):
        if not name.startswith(STATE_PREFIX):
            target = os.path.join(workdir, name)
            atomic.remove(target)
            os.rename(os.path.join(aside, name), target)
    _drop_aside(workdir)


# --------------------------------------------------------------------------- recover


def recover(workdir: str) -> list[str]:
    """Repairs what a killed process left in `workdir`; one line per thing it did.

    Call under lock() before anything reads the workdir. It finishes or undoes an
    interrupted --overwrite, completes or discards an interrupted save_final, and removes
    the leftovers of a checkpoint save or a sample grid that a kill interrupted.
    """
    if not os.path.isdir(workdir):
        return []
    done = _recover_overwrite(workdir)
    final = atomic.finish_stage(workdir, FINAL_STAGE)
    if final == "installed":
        done.append(
            f"finished replacing {MODEL_FILE} and {EXPORT_DIR}/ in {workdir}: a kill "
            "had interrupted it after both were written"
        )
    elif final == "discarded":
        done.append(
            f"removed the unfinished {MODEL_FILE} and {EXPORT_DIR}/ of an interrupted "
            f"save in {workdir}; the previous ones are unchanged"
        )
    for folder, leftovers in ((CKPT_DIR, _checkpoint_leftovers), (SAMPLES_DIR, _sample_leftovers)):
        path = os.path.join(workdir, folder)
        names = leftovers(path) if os.path.isdir(path) and not os.path.islink(path) else []
        for name in names:
            atomic.remove(os.path.join(path, name))
        if names:
            done.append(
                f"removed {', '.join(names)} from {path}: left by a write that a kill interrupted"
            )
    return done


def _recover_overwrite(workdir: str) -> list[str]:
    aside = os.path.join(workdir, ASIDE_DIR)
    done = []
    for suffix in (".new", ".delete"):  # nothing moved yet / a deletion cut short
        if os.path.lexists(aside + suffix):
            atomic.remove(aside + suffix)
            if suffix == ".delete":
                done.append(f"finished deleting the run that --overwrite replaced in {workdir}")
    if not os.path.isdir(aside):
        return done
    state = _read_state(aside)
    if state == KEPT and has_saved_state(workdir):
        _drop_aside(workdir)
        return [
            *done,
            f"deleted the previous run kept in {aside}: the --overwrite run that "
            "replaced it has a checkpoint",
        ]
    _roll_back(workdir)
    return [
        *done,
        f"put the previous run back in {workdir}: the --overwrite run meant to "
        "replace it stopped before its first checkpoint",
    ]


def _checkpoint_leftovers(ckpt_dir: str) -> list[str]:
    """What a killed CheckpointManager.save leaves: ckpt-N_temp/, *.tempstate*,
    checkpoint.tmp<hex>, and data files whose index was never written."""
    names = sorted(os.listdir(ckpt_dir))
    leftovers = []
    for name in names:
        path = os.path.join(ckpt_dir, name)
        if os.path.islink(path):
            continue
        if os.path.isdir(path):
            if _CKPT_TEMP_DIR.fullmatch(name):
                leftovers.append(name)
        elif _CKPT_LEFTOVER_FILE.fullmatch(name):
            leftovers.append(name)
        else:
            data = re.fullmatch(r"(ckpt-\d+)\.data-\d{5}-of-\d{5}", name)
            if data and f"{data.group(1)}.index" not in names:
                leftovers.append(name)
    return leftovers


def _sample_leftovers(samples_dir: str) -> list[str]:
    """Temporary grids (model.grid.save_grid) a kill left; only the trainer writes here."""
    return sorted(n for n in os.listdir(samples_dir) if n.startswith(".tmp-"))
