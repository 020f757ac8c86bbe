"""The Projector's files of a run (model/dashboards.py): written by the trainer at the end,
and on demand by tools/projector.py; read back as files and through TensorBoard's plugin."""

import json
import math
import os
import shutil
import subprocess
import sys

import cli_driver
import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.projector import ProjectorConfig
from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
from werkzeug.test import Client

from facevae.model import codes, dashboards
from facevae.model import workdir as wd
from facevae.model.config import TrainConfig
from facevae.model.trainer import train_and_evaluate
from facevae.pipeline import dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Z_DIM = 8
SIDE = 32  # of the tiny faces


@pytest.fixture(scope="module")
def run(tiny_data_dir, tmp_path_factory):
    """A finished tiny run: the trainer wrote its projector at the end."""
    workdir = str(tmp_path_factory.mktemp("projector") / "vae")
    config = TrainConfig(
        data_dir=tiny_data_dir, batch_size=8, z_dim=Z_DIM, filters=(8, 16), shuffle_buffer=64,
        cache="none", epochs=1, steps_per_epoch=2,
    )  # fmt: skip
    train_and_evaluate(config, workdir)
    return workdir


def folder(workdir: str) -> str:
    return os.path.join(workdir, "logs", dashboards.PROJECTOR_DIR)


def read_files(workdir: str) -> dict:
    where = folder(workdir)
    config = ProjectorConfig()
    with open(os.path.join(where, "projector_config.pbtxt")) as f:
        text_format.Parse(f.read(), config)
    tensor = np.loadtxt(os.path.join(where, dashboards.TENSOR_FILE), delimiter="\t", ndmin=2)
    with open(os.path.join(where, dashboards.METADATA_FILE)) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    with Image.open(os.path.join(where, dashboards.SPRITE_FILE)) as sprite:
        size = sprite.size
    return {"config": config, "tensor": tensor, "rows": rows, "sprite": size}


def test_the_trainer_writes_the_test_codes_faces_and_labels(run, tiny_manifest):
    found = read_files(run)
    (embedding,) = found["config"].embeddings
    assert embedding.tensor_path == "z_mean.tsv" and embedding.metadata_path == "metadata.tsv"
    assert embedding.sprite.image_path == "sprite.png"
    assert list(embedding.sprite.single_image_dim) == [SIDE, SIDE]  # small faces: as they are
    assert list(embedding.tensor_shape) == [5, Z_DIM]  # the tiny test split's 5 images
    assert found["tensor"].shape == (5, Z_DIM)
    model, _ = wd.restore(run)
    expected = codes.encode_split(model, tiny_manifest, "test").z_mean
    np.testing.assert_allclose(found["tensor"], expected, rtol=1e-4, atol=1e-5)
    header, *rows = found["rows"]
    assert header == ["index", "source_id", *tiny_manifest.attribute_names]
    examples = list(dataset.examples(tiny_manifest, "test"))
    assert [row[1] for row in rows] == [e["source_id"].numpy().decode() for e in examples]
    assert [row[0] for row in rows] == [str(int(e["index"])) for e in examples]
    assert [[int(v) for v in row[2:]] for row in rows] == [
        e["attributes"].numpy().tolist() for e in examples
    ]
    cols = math.ceil(math.sqrt(5))
    assert found["sprite"] == (cols * SIDE, cols * SIDE)
    assert wd.foreign_entries(run) == []  # `overwrite` takes them for the run's own


def test_tensorboard_serves_the_embedding_with_its_faces(run):
    logdir = os.path.dirname(run)
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    context = base_plugin.TBContext(logdir=logdir, data_provider=provider, multiplexer=multiplexer)
    apps = ProjectorPlugin(context).get_plugin_apps()
    runs = json.loads(Client(apps["/runs"]).get("/runs").get_data(as_text=True))
    assert runs == ["vae/logs"]  # the run of the HParams session
    query = {"run": "vae/logs", "name": "z_mean (test)"}
    tensor = Client(apps["/tensor"]).get("/tensor", query_string=query)
    assert tensor.status_code == 200 and len(tensor.get_data()) == 5 * Z_DIM * 4  # float32
    sprite = Client(apps["/sprite_image"]).get("/sprite_image", query_string=query)
    assert sprite.status_code == 200 and sprite.headers["Content-Type"] == "image/png"


@pytest.mark.parametrize(
    "n, height, width, cols, tile",
    [
        (1, 96, 96, 1, (96, 96)),
        (2000, 96, 96, 45, (96, 96)),  # 4,320 px a side
        (7225, 96, 96, 85, (96, 96)),  # 8,160 px: still whole faces
        (7226, 96, 96, 86, (95, 95)),
        (10_000, 96, 96, 100, (81, 81)),
        (10_000, 218, 178, 100, (66, 81)),  # aspect kept
    ],
)
def test_the_sprite_obeys_the_projector_limit(n, height, width, cols, tile):
    assert dashboards.sprite_layout(n, height, width) == (cols, tile)
    assert cols * max(tile) <= dashboards.MAX_SPRITE_SIDE and cols * cols >= n


def test_on_demand_another_split_and_fewer_faces_shrunk_to_fit(run, tmp_path, monkeypatch):
    workdir = str(tmp_path / "vae")
    shutil.copytree(run, workdir)
    os.remove(os.path.join(workdir, "logs", dashboards.HPARAMS_FILE))  # a run of before
    monkeypatch.setattr(dashboards, "MAX_SPRITE_SIDE", 40)  # 2 x 2 faces of 20 px
    result = dashboards.write_workdir_projector(workdir, split="train", max_images=3)
    assert (result.split, result.images, result.tile, result.sprite_size) == (
        "train", 3, (20, 20), (40, 40),
    )  # fmt: skip
    found = read_files(workdir)
    assert found["tensor"].shape == (3, Z_DIM) and len(found["rows"]) == 4
    assert found["sprite"] == (40, 40)
    assert list(found["config"].embeddings[0].sprite.single_image_dim) == [20, 20]
    assert dashboards.read_session(os.path.join(workdir, "logs")) is not None  # a TB run again
    assert not [n for n in os.listdir(os.path.dirname(folder(workdir))) if n.startswith(".")]


def test_the_command_writes_it_and_says_what_is_wrong_in_one_line(run, tmp_path):
    workdir = str(tmp_path / "vae")
    shutil.copytree(run, workdir)
    before = read_files(workdir)["rows"]
    cases = {
        "ok": ["--workdir", workdir, "--split", "validation", "--max_images", "2"],
        "too_many": ["--workdir", workdir, "--max_images", "100000"],
        "no_split": ["--workdir", workdir, "--split", "dev"],
        "no_run": ["--workdir", str(tmp_path / "none")],
    }
    done = subprocess.run(
        [sys.executable, "-c", cli_driver.script("tools.projector"), json.dumps(cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout.strip().splitlines()[-1])
    ok = reports["ok"]
    assert ok["code"] == 0 and ok["stdout"].startswith("projector: 2 validation images' z_mean")
    assert len(read_files(workdir)["rows"]) == 3 != len(before)
    for name, start in [
        ("too_many", "projector: --max_images=100000: give 1..10,000"),
        ("no_split", "projector: split 'dev' is not in the dataset"),
        ("no_run", "projector: "),
    ]:
        report = reports[name]
        assert report["code"] == 1 and "\n" not in report["message"], name
        assert report["message"].startswith(start), report["message"]
    assert "does not exist" in reports["no_run"]["message"]
