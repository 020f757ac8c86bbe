"""Damage the tests inflict: on prepared datasets, and kills in the middle of file writes."""

import os


def flip_a_byte(path: str) -> None:
    """Same size, one byte flipped mid-file: only TFRecord's CRC check (or a sha256) notices."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


class Killed(BaseException):
    """A stand-in for kill -9: once raised, every later file operation fails too."""


def arm_kill(monkeypatch):
    """Returns arm(n): from then on the n+1-th mutating file operation raises Killed, and so
    does every one after it, so no cleanup code can run, as after a real kill (the
    `kill_after` fixture of conftest.py)."""
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
