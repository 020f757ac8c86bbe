"""Damage the tests inflict on prepared datasets."""

import os


def flip_a_byte(path: str) -> None:
    """Same size, one byte flipped mid-file: only TFRecord's CRC check (or a sha256) notices."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
