"""The one image-grid writer: train.py's sample grids and every sample.py picture."""

from __future__ import annotations

import math

import numpy as np

from facevae.pipeline import files

PAD = 2  # pixels between cells
PAD_VALUE = 255  # white gutters


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (or uint8) -> uint8, clipped; shape is kept."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_grid(images: np.ndarray, cols: int | None = None, scale: int = 1) -> np.ndarray:
    """Tiles (N, H, W, C) images row-major into one (rows*H', cols*W', C) uint8 array.

    `cols` defaults to a near-square layout; empty cells stay white; `scale` is an
    integer nearest-neighbour enlargement so pixels stay sharp.
    """
    images = to_uint8(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"make_grid needs a non-empty (N, H, W, C) batch, got {images.shape}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + PAD) + PAD, cols * (w + PAD) + PAD, c), PAD_VALUE, np.uint8)
    for i, image in enumerate(images):
        top, left = PAD + (i // cols) * (h + PAD), PAD + (i % cols) * (w + PAD)
        grid[top : top + h, left : left + w] = image
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def save_grid(images: np.ndarray, path: str, cols: int | None = None, scale: int = 1) -> str:
    """Writes `make_grid(images, cols, scale)` as a PNG, whole or not at all; returns the path."""
    return files.write_png(path, make_grid(images, cols, scale))
