from pipeline import atomic


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
