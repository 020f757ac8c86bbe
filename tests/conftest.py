"""Fixtures shared by the end-to-end tests: one tiny synthetic dataset per test session."""

import pytest

from facevae.tools import make_synthetic, prepare_celeba

TINY_IMAGES = 48
TINY_SIZE = 32


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    """48 synthetic faces through the real tools: 32x32 JPEG shards of 16, official splits."""
    root = tmp_path_factory.mktemp("tiny")
    source = str(root / "source")
    make_synthetic.write_source(source, TINY_IMAGES, seed=0, workers=1, verbose=False)
    out = str(root / "data")
    prepare_celeba.prepare(
        source, out, size=TINY_SIZE, examples_per_shard=16, workers=1, verbose=False
    )
    return out
