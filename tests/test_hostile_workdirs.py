"""A damaged or hostile workdir (config.json, model.keras, caches, the judge) is data: it is
checked, never run. sample.py and evaluate.py on each variant: one line and a non-zero exit
(or the documented success where only a cache is bad), never a traceback, and the marker
file that any executed payload would create never appears.
"""

import base64
import json
import marshal
import os
import shutil
import zipfile

import cli_driver
import keras
import numpy as np
import pytest

from facevae.model import judge
from facevae.model.config import TrainConfig
from facevae.model.trainer import train_and_evaluate
from facevae.pipeline import schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Payload:
    """Unpickled, it would create the marker file: np.load must never unpickle it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def marshalled_lambda(marker: str) -> str:
    """Base64 of marshalled code that creates the marker, as Keras stores a Lambda."""
    source = f"lambda x: (open({marker!r}, 'w'), x)[1]"
    return base64.b64encode(marshal.dumps(compile(source, "<hostile>", "eval"))).decode()


def edit_config(workdir: str, change) -> None:
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        config = json.load(f)
    change(config)
    with open(path, "w") as f:
        json.dump(config, f)


def hostile_model_keras(path: str, marker: str) -> None:
    """A model.keras whose config holds a Lambda with marshalled code and a dtype naming a
    function, and no weights: loading it as a model would run the code."""
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "hostile",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "Lambda",
                    "config": {
                        "name": "run_me",
                        "function": {
                            "class_name": "__lambda__",
                            "config": {
                                "code": marshalled_lambda(marker),
                                "defaults": None,
                                "closure": None,
                            },
                        },
                        "dtype": "os.system",
                    },
                }
            ],
        },
    }
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))


def write(path: str, content: bytes) -> None:
    with open(path, "wb") as f:
        f.write(content)


def pickled_npz(path: str, marker: str) -> None:
    with open(path, "wb") as f:
        np.savez(f, key=np.array([Payload(marker)], dtype=object), vectors=np.zeros(3))


VARIANTS = {
    # config.json that no run of ours writes: each is one line naming the file and the key.
    "activation": lambda w, m: edit_config(
        w, lambda c: c["model"]["network"].update(activation="os.system")
    ),
    "huge_shape": lambda w, m: edit_config(
        w, lambda c: c["model"]["network"].update(image_shape=[10**9, 10**9, 3])
    ),
    "z_dim_text": lambda w, m: edit_config(w, lambda c: c["model"]["network"].update(z_dim="8")),
    "kl_weight_nan": lambda w, m: edit_config(w, lambda c: c["model"].update(kl_weight="NaN")),
    "mode_object": lambda w, m: edit_config(w, lambda c: c["model"].update(mode={"x": 1})),
    "unknown_key": lambda w, m: edit_config(w, lambda c: c["model"].update(__class__="VAE")),
    "flags_not_a_run": lambda w, m: edit_config(w, lambda c: c["flags"].update(batch_size=-4)),
    "deep_json": lambda w, m: write(os.path.join(w, "config.json"), b"[" * 100_000),
    "config_huge": lambda w, m: os.truncate(os.path.join(w, "config.json"), 5 << 20),
    # The weights: a model.keras with code in it, read as weights only; weights that are NaN.
    "model_keras_code": lambda w, m: (
        shutil.rmtree(os.path.join(w, "ckpt")),
        hostile_model_keras(os.path.join(w, "model.keras"), m),
    ),
    "not_a_zip": lambda w, m: (
        shutil.rmtree(os.path.join(w, "ckpt")),
        write(os.path.join(w, "model.keras"), b"PK\x03\x04 not a zip"),
    ),
}
# Caches with a pickled payload: refused unread and recomputed, so the command succeeds.
CACHE_VARIANTS = {
    "gmm_pickle": lambda w, m: pickled_npz(os.path.join(w, "prior_gmm.npz"), m),
    "vectors_pickle": lambda w, m: pickled_npz(os.path.join(w, "attribute_vectors_train.npz"), m),
}


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    data = str(root / "data")
    shutil.copytree(tiny_data_dir, data)
    clean = str(root / "clean")
    config = TrainConfig(
        data_dir=data, batch_size=8, z_dim=8, filters=(8, 16), epochs=1, steps_per_epoch=2
    )
    train_and_evaluate(config, clean)
    marker = str(root / "MARKER")
    workdirs = {}
    for name, damage in {**VARIANTS, **CACHE_VARIANTS}.items():
        workdirs[name] = str(root / name)
        shutil.copytree(clean, workdirs[name])
        damage(workdirs[name], marker)
    # The judge: a judge.keras with code in it (safe mode refuses it; judge_* are left out).
    judge_dir = os.path.join(data, schema.JUDGE_DIR)
    os.makedirs(judge_dir)
    hostile_model_keras(os.path.join(judge_dir, judge.MODEL_FILE), marker)
    with open(os.path.join(judge_dir, judge.REPORT_FILE), "w") as f:
        json.dump({"attribute_names": ["x"], "image_shape": [32, 32, 3]}, f)
    return {"workdirs": workdirs, "marker": marker, "clean": clean}


@pytest.fixture(scope="module")
def reports(runs) -> dict:
    fast = ["--inception_weights=none", "--fid_samples=2", "--edit_images=2", "--batch_size=8"]
    cases = {
        "facevae.sample": {
            "lines": {
                name: [f"--workdir={w}", "--mode=attribute", "--attribute=Smiling", "--n=1"]
                if name == "vectors_pickle"
                else [f"--workdir={w}", "--mode=random", "--n=2"]
                for name, w in runs["workdirs"].items()
                if name != "gmm_pickle"
            }
        },
        "facevae.evaluate": {
            "lines": {
                **{
                    name: [f"--workdir={w}", *fast]
                    for name, w in runs["workdirs"].items()
                    if name not in CACHE_VARIANTS
                },
                "gmm_pickle": [
                    f"--workdir={runs['workdirs']['gmm_pickle']}",
                    *fast,
                    "--prior=gmm",
                    "--gmm_components=2",
                ],
                "hostile_judge": [f"--workdir={runs['clean']}", *fast],
            }
        },
    }
    return cli_driver.run_many(cases, timeout=600)


def test_no_code_from_a_workdir_ever_runs(runs, reports):
    assert len(reports) == 2 * len(VARIANTS) + len(CACHE_VARIANTS) + 1
    assert not os.path.exists(runs["marker"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("command", ["facevae.sample", "facevae.evaluate"])
def test_a_damaged_workdir_is_one_line_naming_the_file(reports, command, variant):
    report = reports[f"{command} {variant}"]
    message = report["message"]
    assert report["code"] == 1 and "Traceback" not in report["stderr"], report
    assert "\n" not in message.strip() and len(message) < 600, message
    named = "model.keras" if variant in ("model_keras_code", "not_a_zip") else "config.json"
    assert named in message, message


def test_a_poisoned_cache_is_refused_unread_and_recomputed(reports):
    for name in ("facevae.sample vectors_pickle", "facevae.evaluate gmm_pickle"):
        report = reports[name]
        assert report["code"] == 0, report
        assert "ignoring" in report["stderr"] or "unreadable" in report["stderr"], report


def test_a_hostile_judge_is_left_out_with_the_reason(reports):
    report = reports["facevae.evaluate hostile_judge"]
    assert report["code"] == 0, report
    results = json.loads(report["stdout"].strip().splitlines()[-1])
    assert results["judge_fd"] is None and "cannot be read" in results["judge_error"]
    assert "python -m tools.train_judge" in results["judge_error"]  # and how to make one


def test_keras_safe_mode_would_also_refuse_the_hostile_model(runs, tmp_path):
    path = str(tmp_path / "m.keras")
    hostile_model_keras(path, runs["marker"])
    with pytest.raises(Exception, match=r"(?i)lambda|safe"):
        keras.models.load_model(path, safe_mode=True)
    assert not os.path.exists(runs["marker"])
