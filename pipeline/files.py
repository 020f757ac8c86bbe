"""Files and folders that appear whole or not at all: the one home of every write we make.

- write_bytes, write_json, write_npz, write_png: the content goes to a temporary file beside
  the target, is flushed to disk (fsync), renamed over the target, and the folder is
  flushed too, so after a crash of the process or of the machine the path holds the old
  content or the new one, never an empty or partial file.
- fresh_temp_dir, then move_into_place: a whole folder, built beside its target.
- stage_dir, then publish_stage (finish_stage after a kill): several entries of one folder
  replaced together, e.g. a model file and its export.
- foreign_entries: what in a folder the caller did not write (it must not replace those).
- cache_dir: where caches live, `$XDG_CACHE_HOME/facevae` or `~/.cache/facevae`.

A write that fails (a full disk, a read-only folder) raises WriteError, an OSError that
names the path and says that what was there is unchanged. TensorFlow-free, so processes
that never need TensorFlow (synthetic faces, preparation workers) import it quickly.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

TEMP_PREFIX = ".tmp-"  # every temporary file of write_bytes starts so: a kill's leftovers match


class WriteError(OSError):
    """A write that failed; what the path held before is unchanged.

    The message names the path and the reason, and, for a full disk, that running the same
    command again continues once space is freed.
    """

    def __init__(self, path: str, error: OSError | str) -> None:
        reason = error if isinstance(error, str) else (error.strerror or str(error))
        code = None if isinstance(error, str) else error.errno
        super().__init__(code, reason)
        self.path = path
        self.reason = reason
        # A library's own error (TensorFlow's) carries the reason as text only.
        self.disk_full = code in (errno.ENOSPC, errno.EDQUOT) or "no space left" in reason.lower()

    def __str__(self) -> str:
        folder = os.path.dirname(os.path.abspath(self.path)) or "."
        if self.disk_full:
            return (
                f"could not write {self.path}: no space left in {folder}; what was there is "
                "unchanged: free space and run the same command again to continue"
            )
        return f"could not write {self.path} ({self.reason}); what was there is unchanged"


def _read_umask() -> int:
    # os.umask can only be read by setting it: do that once, at import, before any threads.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


# --------------------------------------------------------------------------- durability


def fsync_dir(folder: str) -> None:
    """Flushes a folder's entries (a rename in it) to disk; a no-op where folders cannot be
    opened (Windows) or the filesystem refuses (some network mounts)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_file(path: str) -> None:
    """Flushes a file written by a library that does not (TensorFlow's checkpoints)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(folder: str) -> None:
    """Flushes every file below `folder`, then its folders (a tree written by a library
    that does not fsync, e.g. a SavedModel, before the rename that publishes it)."""
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            fsync_file(os.path.join(parent, name))
    for parent, _dirs, _names in os.walk(folder, topdown=False):
        fsync_dir(parent)


# --------------------------------------------------------------------------- files


def write_with(path: str, write: Callable[[BinaryIO], None]) -> str:
    """Calls `write(f)` on a temporary file beside `path`, then puts it in place durably.

    The folder is created if missing. Raises WriteError (the old file unchanged) if any
    step fails; the temporary file is removed. Returns `path`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
    except OSError as e:
        raise WriteError(path, e) from e
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a shared dataset must be readable
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(path, e) from e
        raise
    fsync_dir(folder)
    return path


def write_bytes(path: str, content: bytes) -> str:
    """`content` at `path`, whole or not at all (see write_with)."""
    return write_with(path, lambda f: f.write(content))


def write_json(path: str, content: Any) -> str:
    """JSON, indented, with a final newline, whole or not at all."""
    return write_bytes(path, (json.dumps(content, indent=2) + "\n").encode())


def write_npz(path: str, **arrays: Any) -> str:
    """numpy arrays as an uncompressed .npz, whole or not at all (read it with
    allow_pickle=False: nothing here needs pickling)."""
    return write_with(path, lambda f: np.savez(f, **arrays))


def write_png(path: str, pixels: np.ndarray) -> str:
    """A uint8 image (H, W, C) with C 1, 3 or 4 as a PNG, whole or not at all."""
    from PIL import Image  # only here: most users of this module never draw

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4):
        raise ValueError(f"write_png needs uint8 (H, W, 1|3|4) pixels, got {pixels.dtype} "
                         f"{pixels.shape}")  # fmt: skip
    image = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_bytes(path, buffer.getvalue())


def remove(path: str) -> None:
    """Deletes a file, a symbolic link or a whole folder; a missing path is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


# --------------------------------------------------------------------------- whole folders


def sibling(path: str, suffix: str) -> str:
    """`/a/b` -> `/a/.b.<suffix>`: a hidden neighbour on the same filesystem (rename is atomic)."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.{suffix}")


def fresh_temp_dir(path: str, say: Callable[[str], None] | None = None) -> str:
    """An empty `.<name>.incomplete` folder beside `path` (the parent is created if missing).

    The name is fixed, so the leftover of a killed run is found and removed first.
    """
    tmp = sibling(path, "incomplete")
    if os.path.exists(tmp):
        if say:
            say(f"removing {tmp}, left by an interrupted run")
        shutil.rmtree(tmp)
    try:
        os.makedirs(tmp)
    except OSError as e:
        raise WriteError(path, e) from e
    return tmp


def move_into_place(tmp: str, path: str) -> None:
    """Renames the finished folder `tmp` to `path`, replacing an existing one, durably.

    The old folder is moved aside first, so `path` never holds a mix of the two.
    """
    fsync_tree(tmp)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path):
        os.rename(tmp, path)
        fsync_dir(parent)
        return
    old = sibling(path, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(path, old)
    os.rename(tmp, path)
    fsync_dir(parent)
    shutil.rmtree(old)


# Several entries of one folder replaced together (e.g. a model file and its export): they
# are written into `<folder>/.<tag>.incomplete`, which is renamed to `.<tag>.ready` once
# complete. That rename is the single point of no return: before it the old entries stand,
# after it the new ones win, even if a kill stops the moves that follow (finish_stage).


def stage_path(folder: str, tag: str, state: str) -> str:
    return os.path.join(folder, f".{tag}.{state}")


def stage_dir(folder: str, tag: str) -> str:
    """An empty `<folder>/.<tag>.incomplete` to write the new entries into.

    A stage an earlier process left is finished first (see finish_stage).
    """
    finish_stage(folder, tag)
    tmp = stage_path(folder, tag, "incomplete")
    os.makedirs(tmp)
    return tmp


def discard_stage(folder: str, tag: str) -> None:
    """Removes an unfinished stage (after a failed write): the old entries stay as they were."""
    shutil.rmtree(stage_path(folder, tag, "incomplete"), ignore_errors=True)


def publish_stage(folder: str, tag: str) -> None:
    """Replaces the entries of `folder` named like those in the finished stage, together."""
    incomplete = stage_path(folder, tag, "incomplete")
    fsync_tree(incomplete)
    os.rename(incomplete, stage_path(folder, tag, "ready"))
    fsync_dir(folder)
    finish_stage(folder, tag)


def finish_stage(folder: str, tag: str) -> str | None:
    """Completes or undoes a stage a kill interrupted.

    Returns "installed" (a ready stage moved in), "discarded" (an incomplete one removed)
    or None (no stage).
    """
    ready = stage_path(folder, tag, "ready")
    outcome = None
    if os.path.isdir(ready):
        for name in sorted(os.listdir(ready)):
            new, target = os.path.join(ready, name), os.path.join(folder, name)
            if os.path.isdir(new) or (os.path.isdir(target) and not os.path.islink(target)):
                remove(target)  # a file onto a file needs no removal: the rename is atomic
            os.replace(new, target)
        os.rmdir(ready)
        fsync_dir(folder)
        outcome = "installed"
    incomplete = stage_path(folder, tag, "incomplete")
    if os.path.lexists(incomplete):
        remove(incomplete)
        outcome = outcome or "discarded"
    return outcome


# --------------------------------------------------------------------------- whose files


class Entry(enum.Enum):
    """What a folder's owner says of one of its entries (see foreign_entries)."""

    OURS = "ours"  # written by the owner; a folder is taken whole, unlooked-at
    LOOK_INSIDE = "look inside"  # a folder of the owner's, whose entries are judged in turn
    FOREIGN = "foreign"  # not the owner's: never replaced nor deleted


def foreign_entries(folder: str, judge: Callable[[str, bool], Entry]) -> list[str]:
    """The entries below `folder` its owner did not write, as relative paths (folders end in
    a slash), sorted. `judge(relative_path, is_dir)` says of each entry whose it is, with "/"
    between the parts of the path; symbolic links are always foreign (replacing one could
    delete what it points to)."""
    found: list[str] = []

    def walk(relative: str) -> None:
        for entry in sorted(os.scandir(os.path.join(folder, relative)), key=lambda e: e.name):
            path = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_symlink():
                found.append(path)
                continue
            is_dir = entry.is_dir()
            verdict = judge(path, is_dir)
            if verdict is Entry.FOREIGN:
                found.append(path + "/" if is_dir else path)
            elif verdict is Entry.LOOK_INSIDE and is_dir:
                walk(path)

    walk("")
    return found


# --------------------------------------------------------------------------- caches


def cache_dir() -> str:
    """Where caches live: `$XDG_CACHE_HOME/facevae`, else `~/.cache/facevae`."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "facevae")
