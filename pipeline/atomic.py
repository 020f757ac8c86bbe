"""Output folders that appear whole or not at all: build beside the target, then swap it in.

Two forms: one folder (fresh_temp_dir, then move_into_place), or several entries of one
folder replaced together (stage_dir, then publish_stage; finish_stage after a kill).
TF-free, so tools.make_synthetic can use it without importing TensorFlow.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable


def sibling(path: str, suffix: str) -> str:
    """`/a/b` -> `/a/.b.<suffix>`: a hidden neighbour on the same filesystem (rename is atomic)."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.{suffix}")


def fresh_temp_dir(path: str, say: Callable[[str], None] | None = None) -> str:
    """An empty `.<name>.incomplete` folder beside `path`.

    The name is fixed, so the leftover of a killed run is found and removed first.
    """
    tmp = sibling(path, "incomplete")
    if os.path.exists(tmp):
        if say:
            say(f"removing {tmp}, left by an interrupted run")
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    return tmp


def move_into_place(tmp: str, path: str) -> None:
    """Renames the finished folder `tmp` to `path`, replacing an existing one.

    The old folder is moved aside first, so `path` never holds a mix of the two.
    """
    if not os.path.exists(path):
        os.rename(tmp, path)
        return
    old = sibling(path, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old)


def remove(path: str) -> None:
    """Deletes a file, a symbolic link or a whole folder; a missing path is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


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
    os.rename(stage_path(folder, tag, "incomplete"), stage_path(folder, tag, "ready"))
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
        outcome = "installed"
    incomplete = stage_path(folder, tag, "incomplete")
    if os.path.lexists(incomplete):
        remove(incomplete)
        outcome = outcome or "discarded"
    return outcome
