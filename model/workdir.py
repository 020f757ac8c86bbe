"""A run's workdir: its config, checkpoints and final model, written by training and read by
sampling, evaluation and the explorer.

workdir/config.json    RunConfig: {"flags": {...every training setting...}, "model": {...}}
workdir/ckpt/          tf.train.CheckpointManager: model, optimizer, epoch, input position
workdir/logs/          TensorBoard: train/ and validation/ (scalars, images), the HParams
                       session (events.out.tfevents.hparams), eval/ (make_figures' numbers)
                       and plugins/ (the Projector's files): model/dashboards.py
workdir/samples/       epoch_XXXX.png grids from fixed latent vectors
workdir/model.keras    the final model (keras.models.load_model)
workdir/export/        SavedModel of the decoder for serving: z -> uint8 images
workdir/.lock          held (fcntl.flock) by the one training process that owns the workdir
workdir/.outputs       names of the other files written into it (note_output): ours too

A training run calls, in this order: check_workdir, then inside `with lock(workdir):`
recover (prints what it did), read_config, begin_overwrite when asked to start afresh (and
commit() once the new run has its first checkpoint), and save_final at the end.

--overwrite moves the old run into `.replaced-run/` and deletes it only at commit(); the
name of its `.state-<state>` marker says what a later recover() must do after a kill:
  put-back     the old run is (partly) aside and nothing new exists yet: move it back
  kept         the old run is aside, the new one runs: keep the new run if it has a
               checkpoint (delete the old one), else delete the new run's files, put back
  discard-new  a rollback is deleting the new run's files: finish, then put back

One module, over 500 lines, because its parts keep one folder consistent together: which
files are a run's decides what overwrite may move, and recover undoes what lock, save and
overwrite leave after a kill.
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
import numpy as np
import tensorflow as tf

from facevae.model.config import RunConfig, TrainConfig
from facevae.model.networks import ConfigError
from facevae.model.vae import VAE, ModelConfig
from facevae.pipeline import files

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
OUTPUTS_FILE = ".outputs"  # the names note_output recorded, one JSON list
MAX_OUTPUTS = 4096  # names recorded; ours are a handful per tool

# What the library itself writes at the top of a workdir; files other tools write there
# (pictures, evaluation results) are recorded by note_output when they are written.
_OURS_AT_TOP = re.compile(
    r"config\.json|model\.keras|\.lock|\.outputs"
    r"|\.tmp-.*"  # pipeline.files' temporary files
    r"|attribute_vectors_\w+\.npz|prior_gmm\.npz"  # model.codes' and model.prior's caches
)
_OURS_HIDDEN_DIRS = re.compile(
    rf"{re.escape(ASIDE_DIR)}(\.new|\.delete)?|\.{FINAL_STAGE}\.(incomplete|ready)"
    r"|\.export\.(incomplete|old)"  # pipeline.files.move_into_place of earlier versions
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
    LOGS_DIR: (
        re.compile(r"events\.out\.tfevents\..*|\.tmp-.*"),  # .tmp-: pipeline.files' writes
        re.compile(r"plugins"),  # model.dashboards' projector, whole (and its temporary folders)
        True,
    ),
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


def read_config(workdir: str) -> RunConfig:
    """Reads and checks `config.json`; WorkdirError naming the file (and the key) and the
    fix if it is missing, damaged or holds what no run of ours writes. Nothing in it is
    imported or run: it is data, checked field by field (RunConfig, ModelConfig)."""
    path = config_path(workdir)
    afresh = "starting the run afresh (`overwrite`) replaces it"
    if not os.path.lexists(path):
        raise WorkdirError(
            f"{path} does not exist, so {workdir} is not a training run: train one there "
            "first (the same training command resumes)"
        )
    if not os.path.isfile(path):
        raise WorkdirError(f"{path} is not a file: move it away; {afresh}")
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise WorkdirError(
            f"{path} has {size:,} bytes, more than a config.json of ours "
            f"(at most {MAX_CONFIG_BYTES:,}): restore it; {afresh}"
        )
    try:
        with open(path, encoding="utf-8") as f:
            content = json.loads(f.read(MAX_CONFIG_BYTES + 1))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WorkdirError(
            f"{path} is damaged, not valid JSON ({str(e)[:80]}; truncated?): restore it "
            f"from a backup; {afresh}"
        ) from None
    except OSError as e:
        raise WorkdirError(f"{path} cannot be read ({e.strerror}): fix its permissions") from None
    try:
        return run_config_from_dict(content)
    except (ConfigError, TypeError, ValueError) as e:
        key = getattr(e, "field", None)
        where = f" (key {key!r})" if key else ""
        raise WorkdirError(
            f"{path} is not a config.json of ours{where}: {_short(e)}; restore it; {afresh}"
        ) from None


def run_config_from_dict(content: Any) -> RunConfig:
    """A RunConfig from config.json's content; ConfigError or ValueError naming what is off."""
    if not isinstance(content, dict):
        raise ValueError(f"a JSON {type(content).__name__}, not an object")
    for key in ("flags", "model"):
        if not isinstance(content.get(key), dict):
            raise ValueError(f'no "{key}" object')
    if not isinstance(content["model"].get("network"), dict):
        raise ValueError('no "model" -> "network" object')
    model = ModelConfig.from_dict(content["model"])
    flags = TrainConfig.from_dict(content["flags"])
    try:
        flags.check()
    except ValueError as e:  # TrainError: a setting no run of ours stores
        raise ValueError(f'"flags": {e}') from None
    return RunConfig(flags, model)


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_config(workdir: str, config: RunConfig) -> None:
    files.write_json(config_path(workdir), config.to_dict())


def model_differences(stored: ModelConfig, current: ModelConfig) -> list[str]:
    """The model-shaping settings that differ between two model configs, as readable lines."""
    old, new = stored.to_dict(), current.to_dict()
    return [
        f"{key}: stored {old.get(key)!r}, now {new.get(key)!r}"
        for key in MODEL_SHAPING_KEYS
        if old.get(key) != new.get(key)
    ]


def note_output(workdir: str, path: str) -> None:
    """Records that a tool wrote `path` into the workdir (a picture, results), so a later
    `overwrite` takes it for part of the run; a path elsewhere is not recorded. Best effort:
    a workdir that cannot be written only loses the note."""
    folder, name = os.path.split(os.path.abspath(path))
    if folder != os.path.abspath(workdir):
        return
    names = _recorded_outputs(workdir)
    if name in names or len(names) >= MAX_OUTPUTS:
        return
    with contextlib.suppress(OSError):
        files.write_json(os.path.join(workdir, OUTPUTS_FILE), sorted({*names, name}))


def _recorded_outputs(workdir: str) -> set[str]:
    path = os.path.join(workdir, OUTPUTS_FILE)
    try:
        if os.path.getsize(path) > MAX_OUTPUTS * 300:
            return set()
        with open(path, encoding="utf-8") as f:
            names = json.load(f)
    except (OSError, ValueError):
        return set()
    if not isinstance(names, list):
        return set()
    return {n for n in names if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")}


# --------------------------------------------------------------------------- model


def build_model(config: RunConfig) -> VAE:
    """A fresh (untrained) VAE from a workdir config; its weights exist from the start."""
    return VAE(**{**config.model.to_dict(), "network": config.model.network})


def restore(workdir: str) -> tuple[VAE, RunConfig]:
    """The trained model of a run (latest checkpoint, else model.keras) and its config.

    Only weights are read from the workdir: the model is built from config.json's checked
    settings, and model.keras is opened as data (its weights), never deserialised. Weights
    that are not finite (a run that diverged) are refused.
    """
    config = read_config(workdir)
    model = build_model(config)
    latest = tf.train.latest_checkpoint(os.path.join(workdir, CKPT_DIR))
    if latest:
        source = latest
        try:
            # Every model variable must come from the checkpoint; its optimizer slots are unused.
            status = tf.train.Checkpoint(model=model).read(latest)
            status.assert_existing_objects_matched().expect_partial()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise WorkdirError(
                f"{latest} cannot be restored into the model {CONFIG_NAME} describes "
                f"({_short(e, 120)}): resume training to write a new one"
            ) from None
    else:
        source = os.path.join(workdir, MODEL_FILE)
        if not os.path.isfile(source):
            raise WorkdirError(
                f"{workdir} has a config but no checkpoint in {CKPT_DIR}/ and no {MODEL_FILE}: "
                "train it first (the same training command resumes)"
            )
        try:
            model.load_weights(source)
        except Exception as e:  # a foreign file can fail any way (zip, h5py, keras): all one line
            raise WorkdirError(
                f"{source} holds no weights of the model {CONFIG_NAME} describes "
                f"({_short(e, 120)}): train the run again to write it"
            ) from None
    bad = [w.path for w in model.weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    if bad:
        raise WorkdirError(
            f"{source} holds non-finite weights (NaN or Inf in {len(bad)} of "
            f"{len(model.weights)} variables, e.g. {bad[0]}): the run diverged; resume "
            "training from an earlier checkpoint (`resume_step`) with changed settings"
        )
    return model, config


def save_final(model: VAE, workdir: str) -> None:
    """model.keras and a SavedModel of the decoder (export/), replaced as one pair.

    Both are written into `.final.incomplete/` first; a failure there (a full disk) removes
    it and leaves the previous pair as it was. Renaming it to `.final.ready/` commits the
    new pair; recover() completes the moves into place if a kill interrupts them.
    """
    try:
        stage = files.stage_dir(workdir, FINAL_STAGE)
        model.save(os.path.join(stage, MODEL_FILE))
        export_decoder(model, os.path.join(stage, EXPORT_DIR))
        files.publish_stage(workdir, FINAL_STAGE)
    except BaseException as e:
        files.discard_stage(workdir, FINAL_STAGE)
        if isinstance(e, (OSError, tf.errors.OpError)):
            raise WorkdirError(
                f"could not write {MODEL_FILE} and {EXPORT_DIR}/ in {workdir} ({_reason(e)}): "
                "the previous ones are unchanged; free space and run the same command again"
            ) from e
        raise


def _reason(error: OSError | tf.errors.OpError) -> str:
    """Why a write failed: "No space left on device" (TF's messages start with the path)."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return error.message.rsplit("; ", 1)[-1]


SERVING_SIGNATURE = "serving_default"


class DecoderExport(tf.Module):
    """The decoder for serving: latent vectors `z` float32 (N, z_dim) -> `images` uint8
    (N, H, W, C), as the signature `serving_default` (and the function `serve`). It holds
    the decoder alone: no encoder, no optimizer state."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, model.network.z_dim], tf.float32, name="z")],
        )

    def _serve(self, z):
        logits = tf.cast(self.decoder(z, training=False), tf.float32)  # (N, H, W, C)
        images = tf.sigmoid(logits)  # in [0, 1], as VAE.decode
        return {"images": tf.cast(tf.round(images * 255.0), tf.uint8)}


def export_decoder(model: VAE, path: str) -> None:
    """A SavedModel of the decoder at `path`, its signature named explicitly."""
    module = DecoderExport(model)
    signatures = {SERVING_SIGNATURE: module.serve.get_concrete_function()}
    tf.saved_model.save(module, path, signatures=signatures)


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
            "create its target, or give another `workdir`"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(
            f"{workdir} is a file, not a folder: give `workdir` a folder path "
            "(a missing one is created)"
        )
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WorkdirError(
            f"{workdir} lies under {existing}, which is a file, not a folder: "
            "give `workdir` a path under a folder"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as e:
        raise WorkdirError(
            f"{workdir} cannot be written ({e.strerror} in {existing}): give "
            "`workdir` a writable folder, or fix its permissions"
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
            f"cannot lock {workdir} ({e.strerror}): give `workdir` a folder on "
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
        f"{stop}, or give another `workdir`"
    )


# --------------------------------------------------------------------------- which files are ours


def foreign_entries(workdir: str) -> list[str]:
    """The paths in `workdir` (relative, folders ending in /) that no run of ours writes."""
    outputs = _recorded_outputs(workdir)

    def judge(path: str, is_dir: bool) -> files.Entry:
        top, _, rest = path.partition("/")
        if not rest:  # an entry of the workdir itself
            if is_dir:
                if top in _RULES:
                    return files.Entry.LOOK_INSIDE
                ours = _OURS_HIDDEN_DIRS.fullmatch(top)
            else:
                ours = _OURS_AT_TOP.fullmatch(top) or top in outputs
            return files.Entry.OURS if ours else files.Entry.FOREIGN
        names, whole, descend = _RULES[top]
        name = rest.rsplit("/", 1)[-1]
        if is_dir:
            if whole and whole.fullmatch(name):
                return files.Entry.OURS
            return files.Entry.LOOK_INSIDE if descend else files.Entry.FOREIGN
        return files.Entry.OURS if names.fullmatch(name) else files.Entry.FOREIGN

    return files.foreign_entries(workdir, judge)


def _is_ours_at_top(workdir: str, name: str) -> bool:
    """Whether a top-level name is one a run of ours writes (its contents not looked at)."""
    path = os.path.join(workdir, name)
    if os.path.islink(path):
        return False
    if os.path.isdir(path):
        return name in _RULES or bool(_OURS_HIDDEN_DIRS.fullmatch(name))
    return bool(_OURS_AT_TOP.fullmatch(name)) or name in _recorded_outputs(workdir)


def has_saved_state(workdir: str) -> bool:
    """Whether the run in `workdir` has something to resume or use: a checkpoint or model."""
    return bool(tf.train.latest_checkpoint(os.path.join(workdir, CKPT_DIR))) or os.path.isfile(
        os.path.join(workdir, MODEL_FILE)
    )


# --------------------------------------------------------------------------- overwrite


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
            f"`overwrite` refused: {workdir} holds files a training run does not "
            f"write ({listed}); move them out of it, or give another `workdir`"
        )
    _check_is_a_run(workdir, names)

    # The old run goes into .replaced-run/ entry by entry: the folder exists (by an atomic
    # rename) with its state "put-back" before the first move, so a kill part-way is undone.
    new, aside = os.path.join(workdir, ASIDE_DIR + ".new"), os.path.join(workdir, ASIDE_DIR)
    try:
        files.remove(new)
        os.mkdir(new)
        _write_state(new, PUT_BACK)
        os.rename(new, aside)
        for name in names:
            os.rename(os.path.join(workdir, name), os.path.join(aside, name))
        _write_state(aside, KEPT)
    except OSError as e:
        _recover_overwrite(workdir)  # renames back: no space needed
        raise WorkdirError(
            f"`overwrite` could not move the run in {workdir} aside ({e.strerror}); it is "
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
            f"`overwrite` refused: {path} is not a config.json of ours and "
            f"nothing else of a run is in {workdir}: delete it if it is a "
            "damaged one, or give another `workdir`"
        )
    if not has_saved_state(workdir):
        raise WorkdirError(
            f"`overwrite` refused: {workdir} has no {CONFIG_NAME}, checkpoint or "
            f"{MODEL_FILE}, so it holds no training run ({', '.join(names)}): "
            "delete them if they are from one, or give another `workdir`"
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
    files.remove(doomed)
    os.rename(os.path.join(workdir, ASIDE_DIR), doomed)
    shutil.rmtree(doomed)


def _roll_back(workdir: str) -> None:
    aside = os.path.join(workdir, ASIDE_DIR)
    state = _read_state(aside)
    if state not in (KEPT, DISCARD_NEW, PUT_BACK):
        raise WorkdirError(
            f"{aside} holds the run an interrupted `overwrite` replaced, but "
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
                files.remove(os.path.join(workdir, name))
        _write_state(aside, PUT_BACK)
    _put_back(workdir)


def _put_back(workdir: str) -> None:
    aside = os.path.join(workdir, ASIDE_DIR)
    for name in os.listdir(aside):
        if not name.startswith(STATE_PREFIX):
            target = os.path.join(workdir, name)
            files.remove(target)
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
    final = files.finish_stage(workdir, FINAL_STAGE)
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
            files.remove(os.path.join(path, name))
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
            files.remove(aside + suffix)
            if suffix == ".delete":
                done.append(f"finished deleting the run that `overwrite` replaced in {workdir}")
    if not os.path.isdir(aside):
        return done
    state = _read_state(aside)
    if state == KEPT and has_saved_state(workdir):
        _drop_aside(workdir)
        return [
            *done,
            f"deleted the previous run kept in {aside}: the `overwrite` run that "
            "replaced it has a checkpoint",
        ]
    _roll_back(workdir)
    return [
        *done,
        f"put the previous run back in {workdir}: the `overwrite` run meant to "
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
