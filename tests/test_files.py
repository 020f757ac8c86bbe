"""pipeline/files.py: whole-or-nothing writes of files and folders, whose entries, caches."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path

import corrupt
import numpy as np
import pytest
from PIL import Image

from facevae.pipeline import files

Killed = corrupt.Killed  # kill_after: a fixture of conftest.py


# --------------------------------------------------------------------------- files


def test_write_bytes_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.bin"
    assert files.write_bytes(str(path), b"first") == str(path)
    files.write_bytes(str(path), b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_write_creates_missing_folders(tmp_path):
    path = tmp_path / "a" / "b" / "c.json"
    files.write_json(str(path), {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}


def test_write_json_is_indented_with_a_final_newline(tmp_path):
    path = files.write_json(str(tmp_path / "m.json"), {"b": [1, 2], "a": None})
    text = Path(path).read_text()
    assert text.endswith("}\n") and "\n  " in text
    assert json.loads(text) == {"b": [1, 2], "a": None}


def test_npz_is_readable_without_pickle(tmp_path):
    arrays = {
        "mean": np.arange(6.0).reshape(2, 3),
        "labels": np.array([1, 0], np.int64),
        "names": np.array(["a", "bc"]),
    }
    path = files.write_npz(str(tmp_path / "codes.npz"), **arrays)
    with np.load(path, allow_pickle=False) as saved:
        assert sorted(saved.files) == ["labels", "mean", "names"]
        np.testing.assert_array_equal(saved["mean"], np.arange(6.0).reshape(2, 3))
        assert saved["labels"].dtype == np.int64 and saved["names"].tolist() == ["a", "bc"]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_write_png_round_trip(tmp_path, channels):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, channels), dtype=np.uint8)
    path = files.write_png(str(tmp_path / "grid.png"), pixels)
    with Image.open(path) as image:
        read = np.asarray(image)
    np.testing.assert_array_equal(read.reshape(pixels.shape), pixels)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 2), np.uint8)],
)
def test_write_png_rejects_what_is_not_an_image(tmp_path, pixels):
    with pytest.raises(ValueError, match="uint8"):
        files.write_png(str(tmp_path / "x.png"), pixels)
    assert os.listdir(tmp_path) == []


def test_file_mode_honours_the_umask(tmp_path, monkeypatch):
    current = os.umask(0o022)
    os.umask(current)
    assert current == files._UMASK  # read at import
    path = files.write_bytes(str(tmp_path / "default"), b"x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~current  # not mkstemp's 0600
    for umask, mode in [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o027, 0o640)]:
        monkeypatch.setattr(files, "_UMASK", umask)
        path = files.write_json(str(tmp_path / f"{umask:o}.json"), {})
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, oct(umask)


# Every writer, and what it writes: each is tried on a full disk below.
WRITERS = {
    "bytes": lambda path: files.write_bytes(path, b"new content"),
    "json": lambda path: files.write_json(path, {"new": True}),
    "npz": lambda path: files.write_npz(path, new=np.ones(3)),
    "png": lambda path: files.write_png(path, np.full((4, 4, 3), 255, np.uint8)),
}


def _fail_fsync(monkeypatch, code: int) -> list[int]:
    """Makes every os.fsync fail with `code` (a full disk shows at the flush at the latest)."""
    calls = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_keeps_the_old_file_and_says_to_free_space(tmp_path, monkeypatch, writer, code):
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / f"target.{writer}"
    path.write_bytes(b"old content")
    calls = _fail_fsync(monkeypatch, code)
    with pytest.raises(files.WriteError) as caught:
        WRITERS[writer](str(path))
    assert calls  # the failure was the flush, after the content was written
    assert path.read_bytes() == b"old content"
    assert os.listdir(folder) == [path.name]  # no temporary file left
    error = caught.value
    assert isinstance(error, OSError) and error.errno == code and error.disk_full
    assert error.path == str(path)
    message = str(error)
    assert f"could not write {path}" in message and f"no space left in {folder}" in message
    assert "free space and run the same command again" in message
    assert "unchanged" in message and "\n" not in message


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_leaves_nothing_where_there_was_nothing(tmp_path, monkeypatch, writer):
    _fail_fsync(monkeypatch, errno.ENOSPC)
    with pytest.raises(files.WriteError):
        WRITERS[writer](str(tmp_path / "new"))
    assert os.listdir(tmp_path) == []


def test_a_full_disk_half_way_through_the_content(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"old")

    def write(f) -> None:
        f.write(b"x" * 1000)  # half written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(files.WriteError) as caught:
        files.write_with(str(path), write)
    assert caught.value.disk_full and "free space" in str(caught.value)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["big.bin"]


def test_other_write_errors_say_the_reason_and_are_not_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    _fail_fsync(monkeypatch, errno.EIO)
    with pytest.raises(files.WriteError) as caught:
        files.write_bytes(str(path), b"new")
    assert not caught.value.disk_full and caught.value.errno == errno.EIO
    message = str(caught.value)
    reason = os.strerror(errno.EIO)
    assert message == f"could not write {path} ({reason}); what was there is unchanged"
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_a_folder_that_cannot_be_made_is_a_write_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(files.WriteError) as caught:
        files.write_bytes(str(tmp_path / "file" / "inside.bin"), b"x")
    assert str(tmp_path / "file" / "inside.bin") in str(caught.value)


def test_an_error_in_the_writer_propagates_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def write(f) -> None:
        f.write(b"partial")
        raise ValueError("not serializable")

    with pytest.raises(ValueError, match="not serializable"):
        files.write_with(str(path), write)
    with pytest.raises(KeyboardInterrupt):
        files.write_with(str(path), lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_write_error_is_an_os_error_with_the_path():
    error = files.WriteError("/a/b/c.json", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(error, OSError) and error.disk_full and error.path == "/a/b/c.json"
    assert "no space left in /a/b" in str(error)
    worded = files.WriteError("/a/c.json", "a reason in words")
    assert not worded.disk_full and "(a reason in words)" in str(worded)


def test_fsync_helpers_tolerate_what_cannot_be_flushed(tmp_path):
    files.fsync_dir(str(tmp_path / "absent"))
    files.fsync_file(str(tmp_path / "absent"))
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    files.fsync_tree(str(tmp_path / "a"))


def test_remove_files_links_and_folders(tmp_path):
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "target").write_text("kept")
    os.symlink(tmp_path / "target", tmp_path / "link")
    (tmp_path / "file").write_text("x")
    for name in ("tree", "link", "file", "absent"):
        files.remove(str(tmp_path / name))
    assert os.listdir(tmp_path) == ["target"]  # the link went, not what it pointed to


# --------------------------------------------------------------------------- whole folders


def test_sibling_is_a_hidden_neighbour(tmp_path):
    assert files.sibling(str(tmp_path / "data"), "old") == str(tmp_path / ".data.old")


def test_fresh_temp_dir_removes_a_killed_runs_leftover(tmp_path):
    leftover = tmp_path / ".out.incomplete"
    leftover.mkdir()
    (leftover / "half-written").write_text("x")
    said = []
    tmp = files.fresh_temp_dir(str(tmp_path / "out"), said.append)
    assert tmp == str(leftover) and list(leftover.iterdir()) == []
    assert said and "interrupted" in said[0]


def test_fresh_temp_dir_creates_the_parent(tmp_path):
    tmp = files.fresh_temp_dir(str(tmp_path / "new" / "out"))
    assert tmp == str(tmp_path / "new" / ".out.incomplete") and os.path.isdir(tmp)


def test_move_into_place_creates_or_replaces_whole(tmp_path):
    out = tmp_path / "out"
    for content in ("first", "second"):
        tmp = files.fresh_temp_dir(str(out))
        (tmp_path / ".out.incomplete" / "file").write_text(content)
        files.move_into_place(tmp, str(out))
        assert (out / "file").read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


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
    make_pair(Path(files.stage_dir(str(tmp_path), "final")), "new")
    files.publish_stage(str(tmp_path), "final")
    assert snapshot(tmp_path) == {**NEW_PAIR, "keep.txt": "not part of the pair"}
    assert files.finish_stage(str(tmp_path), "final") is None


def test_discarded_stage_keeps_the_old_pair(tmp_path):
    make_pair(tmp_path, "old")
    make_pair(Path(files.stage_dir(str(tmp_path), "final")), "half")
    files.discard_stage(str(tmp_path), "final")
    assert snapshot(tmp_path) == OLD_PAIR


def test_a_leftover_ready_stage_is_installed_before_a_new_one(tmp_path):
    make_pair(tmp_path, "old")
    make_pair(Path(files.stage_dir(str(tmp_path), "final")), "new")
    os.rename(tmp_path / ".final.incomplete", tmp_path / ".final.ready")  # killed right here
    stage = files.stage_dir(str(tmp_path), "final")
    assert snapshot(tmp_path) == NEW_PAIR and os.listdir(stage) == []


def test_finish_stage_outcomes(tmp_path):
    assert files.finish_stage(str(tmp_path), "final") is None
    files.stage_dir(str(tmp_path), "final")
    assert files.finish_stage(str(tmp_path), "final") == "discarded"
    make_pair(Path(files.stage_dir(str(tmp_path), "final")), "new")
    os.rename(tmp_path / ".final.incomplete", tmp_path / ".final.ready")
    assert files.finish_stage(str(tmp_path), "final") == "installed"
    assert snapshot(tmp_path) == NEW_PAIR


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
            make_pair(Path(files.stage_dir(str(folder), "final")), "new")
            files.publish_stage(str(folder), "final")
        except Killed:
            killed = True
        kill_after(None)
        committed = os.path.isdir(folder / ".final.ready")
        files.finish_stage(str(folder), "final")
        result = snapshot(folder)
        assert result == (NEW_PAIR if committed or not killed else OLD_PAIR), n
        assert sorted(os.listdir(folder)) == ["export", "model.keras"], n  # no stage left
        seen.add((killed, result == NEW_PAIR))
        if not killed:
            break
    assert seen == {(True, False), (True, True), (False, True)}


def test_a_kill_anywhere_in_a_write_leaves_the_old_or_the_new_file(tmp_path, kill_after):
    path = tmp_path / "m.json"
    seen = set()
    for n in range(10):
        files.write_json(str(path), {"version": "old"})
        kill_after(n)
        with contextlib.suppress(Killed):
            files.write_json(str(path), {"version": "new"})
        kill_after(None)
        seen.add(json.loads(path.read_text())["version"])
        for name in os.listdir(tmp_path):  # a kill's leftover is recognisable as one
            assert name == "m.json" or name.startswith(files.TEMP_PREFIX), name
            if name != "m.json":
                os.remove(tmp_path / name)
    assert seen == {"old", "new"}


# --------------------------------------------------------------------------- whose files


def _judge(relative: str, is_dir: bool) -> files.Entry:
    """The owner of a run folder: checkpoints/ is looked into, logs/ is its own whole,
    config.json is its own, anything else is not."""
    if relative in ("logs", "config.json") or relative.startswith("checkpoints/ckpt-"):
        return files.Entry.OURS
    if relative == "checkpoints":
        return files.Entry.LOOK_INSIDE
    return files.Entry.FOREIGN


def test_foreign_entries(tmp_path):
    (tmp_path / "logs" / "train").mkdir(parents=True)
    (tmp_path / "logs" / "train" / "notes.txt").write_text("inside ours: not looked at")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-1.index").write_text("")
    (tmp_path / "checkpoints" / "mine.txt").write_text("a user's")
    (tmp_path / "checkpoints" / "old").mkdir()
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter.tex").write_text("")
    (tmp_path / "README").write_text("")
    os.symlink(tmp_path / "config.json", tmp_path / "link-to-ours")
    os.symlink("/nowhere", tmp_path / "checkpoints" / "ckpt-2.index")  # named like ours
    os.symlink(tmp_path / "thesis", tmp_path / "checkpoints" / "ckpt-3")  # a link to a folder
    found = files.foreign_entries(str(tmp_path), _judge)
    assert found == [
        "README",
        "checkpoints/ckpt-2.index",
        "checkpoints/ckpt-3",
        "checkpoints/mine.txt",
        "checkpoints/old/",
        "link-to-ours",
        "thesis/",
    ]


def test_foreign_entries_of_an_empty_folder_and_a_judge_that_owns_all(tmp_path):
    assert files.foreign_entries(str(tmp_path), _judge) == []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").write_text("")
    assert files.foreign_entries(str(tmp_path), lambda path, is_dir: files.Entry.OURS) == []


def test_look_inside_a_file_is_ours(tmp_path):
    """LOOK_INSIDE said of a file has nothing to look into: the file is not foreign."""
    (tmp_path / "f").write_text("")
    assert files.foreign_entries(str(tmp_path), lambda p, d: files.Entry.LOOK_INSIDE) == []


def test_the_judge_sees_slash_separated_paths_and_whether_they_are_folders(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c").write_text("")
    asked = []

    def judge(relative: str, is_dir: bool) -> files.Entry:
        asked.append((relative, is_dir))
        return files.Entry.LOOK_INSIDE if is_dir else files.Entry.FOREIGN

    assert files.foreign_entries(str(tmp_path), judge) == ["a/b/c"]
    assert asked == [("a", True), ("a/b", True), ("a/b/c", False)]


# --------------------------------------------------------------------------- caches


def test_cache_dir_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert files.cache_dir() == str(tmp_path / "xdg" / "facevae")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # set but empty: the default, as the spec says
    assert files.cache_dir() == str(tmp_path / "home" / ".cache" / "facevae")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert files.cache_dir() == str(tmp_path / "home" / ".cache" / "facevae")
