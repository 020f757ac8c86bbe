import os

import numpy as np
import pytest
from PIL import Image

from facevae.model import grid


def test_make_grid_layout_and_pixels():
    images = np.zeros((5, 4, 6, 3), np.float32)
    images[3] = 1.0  # the fourth image, row 1 col 1 in a 3-column grid
    out = grid.make_grid(images, cols=3)
    pad = grid.PAD
    assert out.shape == (2 * (4 + pad) + pad, 3 * (6 + pad) + pad, 3)
    assert out.dtype == np.uint8
    top, left = pad + 1 * (4 + pad), pad + 0 * (6 + pad)
    assert (out[top : top + 4, left : left + 6] == 255).all()
    assert (out[pad : pad + 4, pad : pad + 6] == 0).all()
    # The sixth cell is empty and stays the gutter colour.
    top, left = pad + 4 + pad, pad + 2 * (6 + pad)
    assert (out[top : top + 4, left : left + 6] == grid.PAD_VALUE).all()


def test_make_grid_scale_and_square_default():
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    out = grid.make_grid(images, scale=2)
    side = 2 * (2 * (3 + grid.PAD) + grid.PAD)
    assert out.shape == (side, side, 3)
    assert (out[2 * grid.PAD, 2 * grid.PAD] == images[0, 0, 0]).all()


def test_to_uint8_clips_and_rounds():
    out = grid.to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]))
    assert out.tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("bad", [np.zeros((0, 4, 4, 3)), np.zeros((4, 4, 3))])
def test_make_grid_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="non-empty"):
        grid.make_grid(bad)


def test_save_grid_writes_png_atomically(tmp_path):
    path = tmp_path / "sub" / "grid.png"
    grid.save_grid(np.ones((2, 4, 4, 1), np.float32), str(path), scale=3)
    image = Image.open(path)
    assert image.mode == "L"
    assert image.size == (3 * (2 * (4 + grid.PAD) + grid.PAD), 3 * (4 + 2 * grid.PAD))
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]


def test_save_grid_leaves_no_temp_file_when_writing_fails(tmp_path, monkeypatch):
    def fail(fd):
        raise OSError(28, "No space left on device")  # the disk filled while writing

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match=r"(?i)no space"):
        grid.save_grid(np.zeros((1, 4, 4, 3)), str(tmp_path / "grid.png"))
    assert list(tmp_path.iterdir()) == []
