"""Fixtures shared by the end-to-end tests: one tiny synthetic dataset per test session."""

import corrupt
import pytest

from facevae.pipeline import prepare, schema, synthetic

TINY_IMAGES = 48
TINY_SIZE = 32


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    """48 synthetic faces through the library: 32x32 JPEG shards of 16, official splits."""
    root = tmp_path_factory.mktemp("tiny")
    source = str(root / "source")
    synthetic.write_source(source, TINY_IMAGES, seed=0, workers=1, verbose=False)
    out = str(root / "data")
    prepare.prepare(source, out, size=TINY_SIZE, examples_per_shard=16, workers=1, verbose=False)
    return out


@pytest.fixture(scope="session")
def tiny_manifest(tiny_data_dir) -> schema.Manifest:
    """The manifest of tiny_data_dir, read once."""
    return schema.Manifest.read(tiny_data_dir)


@pytest.fixture
def kill_after(monkeypatch):
    """kill_after(n): the n+1-th mutating file operation from now on raises corrupt.Killed,
    and every one after it, as after a real kill -9."""
    return corrupt.arm_kill(monkeypatch)
