import os

import numpy as np
import pytest

from model import workdir as wd

MODEL = {
    "network": {"image_shape": [16, 16, 3], "filters": [4, 8], "z_dim": 4, "norm": "none"},
    "mode": "vae", "kl_weight": 1e-3, "kl_warmup_steps": 0, "reconstruction_loss": "bce",
    "seed": 0,
}  # fmt: skip


def test_missing_config_says_how_to_train(tmp_path):
    with pytest.raises(wd.WorkdirError, match=r"python train\.py .*--workdir"):
        wd.read_config(str(tmp_path))


def test_config_round_trip_and_model_differences(tmp_path):
    wd.write_config(str(tmp_path / "run"), {"flags": {"z_dim": 4}, "model": MODEL})
    assert wd.read_config(str(tmp_path / "run"))["model"] == MODEL
    other = {**MODEL, "mode": "ae", "seed": 1}  # the seed does not shape the model
    assert wd.model_differences(MODEL, other) == ["mode: stored 'vae', now 'ae'"]


def test_restore_needs_a_checkpoint_or_model(tmp_path):
    wd.write_config(str(tmp_path), {"flags": {}, "model": MODEL})
    with pytest.raises(wd.WorkdirError, match="no checkpoint"):
        wd.restore(str(tmp_path))


def test_restore_from_the_final_model(tmp_path):
    wd.write_config(str(tmp_path), {"flags": {}, "model": MODEL})
    trained = wd.build_model(wd.read_config(str(tmp_path)))
    trained.set_weights([w + 0.5 for w in trained.get_weights()])  # unlike any fresh model
    trained.save(os.path.join(tmp_path, wd.MODEL_FILE))
    restored, _ = wd.restore(str(tmp_path))
    z = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(restored.decode(z), trained.decode(z), rtol=1e-6)
