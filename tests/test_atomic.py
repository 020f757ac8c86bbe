import os
from pathlib import Path

import pytest

from facevae.pipeline import atomic


def test_sibling_is_a_hidden_neighbour(tmp_path):
    assert atomic.sibling(str(tmp_path / "data"), "old") == str(tmp_path / ".data.old")


def test_fresh_temp_dir_removes_a_killed_runs_leftover(tmp_path):
    leftover = tmp_path / ".out.incomplete"
    leftover.mkdir()
    (leftover / "half-written").write_text("x")
    said = []
    tmp = atomic.fresh_temp_dir(str(tmp_path / "out"), said.append)
    assert tmp == str(leftover) and list(leftover.iterdir()) == []
    assert said and "interrupted" in said[0]


def test_move_into_place_creates_or_replaces_whole(tmp_path):
    out = tmp_path / "out"
    for content in ("first", "second"):
        tmp = atomic.fresh_temp_dir(str(out))
        (tmp_path / ".out.incomplete" / "file").write_text(content)
        atomic.move_into_place(tmp, str(out))
        assert (out / "file").read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


class Killed(BaseException):
    """A stand-in for kill -9: once raised, every later file operation fails too."""


@pytest.fixture
def kill_after(monkeypatch):
    """kill_after(n): the n+1-th mutating file operation from now on raises Killed, and so
    does every one after it, so no cleanup code can run, as after a real kill."""
    ops = [(os, n) for n in ("rename", "replace", "remove", "unlink", "rmdir", "mkdir")]
    originals = {name: getattr(module, name) for module, name in ops}
    budget = {"left": None}

    def guarded(name):
        def op(*args, **kwargs):
            if budget["left"] is not None:
                if budget["left"] <= 0:
                    raise Killed(name)
                budget["left"] -= 1
            return originals[name](*args, **kwargs)

        return op

    for module, name in ops:
        monkeypatch.setattr(module, name, guarded(name))

    def arm(n: int | None) -> None:
        budget["left"] = n

    return arm


def snapshot(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def make_pair(folder, version: str) -> None:
    (folder / "model.keras").write_text(version)
    (folder / "export" / "variables").mkdir(parents=True, exist_ok=True)
    (folder / "export" / "saved_model.pb").write_text(version)
    (folder / "export" / "variables" / "variables.index").write_text(version)


OLD_PAIR = {
    "export/saved_model.pb": "old",
    "export/variables/variables.index": "old",
    "model.keras": "old",
}
NEW_PAIR = {k: "new" for k in OLD_PAIR}


def test_stage_publish_replaces_the_pair_and_leaves_nothing(tmp_path):
    make_pair(tmp_path, "old")
    (tmp_path / "keep.txt").write_text("not part of the pair")
    make_pair(Path(atomic.stage_dir(str(tmp_path), "final")), "new")
    atomic.publish_stage(str(tmp_path), "final")
    assert snapshot(tmp_path) == {**NEW_PAIR, "keep.txt": "not part of the pair"}
    assert atomic.finish_stage(str(tmp_path), "final") is None


def test_discarded_stage_keeps_the_old_pair(tmp_path):
    make_pair(tmp_path, "old")
    make_pair(Path(atomic.stage_dir(str(tmp_path), "final")), "half")
    atomic.discard_stage(str(tmp_path), "final")
    assert snapshot(tmp_path) == OLD_PAIR


def test_a_leftover_ready_stage_is_installed_before_a_new_one(tmp_path):
    make_pair(tmp_path, "old")
    make_pair(Path(atomic.stage_dir(str(tmp_path), "final")), "new")
    os.rename(tmp_path / ".final.incomplete", tmp_path / ".final.ready")  # killed right here
    stage = atomic.stage_dir(str(tmp_path), "final")
    assert snapshot(tmp_path) == NEW_PAIR and os.listdir(stage) == []


def test_a_kill_anywhere_in_a_publish_leaves_one_whole_pair(tmp_path, kill_after):
    """Kill after 0, 1, 2, ... file operations; the next start's finish_stage then leaves
    the old pair (killed before the stage was complete) or the new one, never a mix."""
    seen = set()
    for n in range(100):
        folder = tmp_path / str(n)
        folder.mkdir()
        make_pair(folder, "old")
        killed = False
        kill_after(n)
        try:
            make_pair(Path(atomic.stage_dir(str(folder), "final")), "new")
            atomic.publish_stage(str(folder), "final")
        except Killed:
            killed = True
        kill_after(None)
        committed = os.path.isdir(folder / ".final.ready")
        atomic.finish_stage(str(folder), "final")
        result = snapshot(folder)
        assert result == (NEW_PAIR if committed or not killed else OLD_PAIR), n
        assert sorted(os.listdir(folder)) == ["export", "model.keras"], n  # no stage left
        seen.add((killed, result == NEW_PAIR))
        if not killed:
            break
    assert seen == {(True, False), (True, True), (False, True)}
