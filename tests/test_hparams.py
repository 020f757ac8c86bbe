"""The HParams session a training run writes (model/dashboards.py, called by the trainer),
read back from the event files by TensorBoard's own readers; and its resume rule."""

import dataclasses
import json
import os
import shutil

import pytest
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups
from tensorboard.plugins.hparams import metadata as hp_metadata

from facevae.model import dashboards
from facevae.model.config import TrainConfig
from facevae.model.networks import NetworkConfig
from facevae.model.trainer import train_and_evaluate
from facevae.model.vae import ModelConfig


def tiny(data_dir: str, **changes) -> TrainConfig:
    config = TrainConfig(
        data_dir=data_dir, batch_size=8, z_dim=8, filters=(8, 16), shuffle_buffer=64,
        cache="none", epochs=1, steps_per_epoch=2,
    )  # fmt: skip
    return dataclasses.replace(config, **changes)


def plugin_data(logs: str) -> dict[str, dict[str, bytes]]:
    """run -> tag -> the hparams plugin's content, as TensorBoard reads the folder."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logs)
    multiplexer.Reload()
    return multiplexer.PluginRunToTagToContent(hp_metadata.PLUGIN_NAME)


def session_values(content: bytes) -> tuple[dict, float]:
    info = hp_metadata.parse_session_start_info_plugin_data(content)
    values = {name: getattr(v, v.WhichOneof("kind")) for name, v in info.hparams.items()}
    return values, info.start_time_secs


def session_groups(logdir: str) -> list[api_pb2.SessionGroup]:
    """What the HParams dashboard lists: its session groups, with their metric values."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    context = base_plugin.TBContext(logdir=logdir, data_provider=provider, multiplexer=multiplexer)
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_RUNNING]
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, allowed_statuses=statuses
    )
    handler = list_session_groups.Handler(
        tb_context.RequestContext(), backend_context.Context(context), "", request
    )
    return list(handler.run().session_groups)


@pytest.fixture(scope="module")
def run(tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hparams")
    workdir = str(root / "vae")
    train_and_evaluate(tiny(tiny_data_dir), workdir)
    return str(root), workdir


def test_a_run_writes_one_session_with_its_settings_and_the_metrics_it_is_compared_by(run):
    root, workdir = run
    logs = os.path.join(workdir, "logs")
    content = plugin_data(root)
    assert list(content) == ["vae/logs"]  # one session: train/ and validation/ hold scalars
    tags = content["vae/logs"]
    assert set(tags) == {hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG}
    values, _ = session_values(tags[hp_metadata.SESSION_START_INFO_TAG])
    assert set(values) == {h.name for h in dashboards.HPARAMS}
    beta = 1.3e-3 * 32 * 32 * 3 / 8
    expected = {
        "mode": "vae", "kl_weight": 1.3e-3, "z_dim": 8, "filters": "8,16", "batch_size": 8,
        "learning_rate": 1e-3, "epochs": 1, "steps_per_epoch": 2, "mixed_precision": "none",
        "image_size": "32x32x3", "train_images": 38, "flip": False, "lr_schedule": "constant",
    }  # fmt: skip
    for name, value in expected.items():
        assert values[name] == pytest.approx(value), name
    assert values["beta"] == pytest.approx(beta)
    experiment = hp_metadata.parse_experiment_plugin_data(tags[hp_metadata.EXPERIMENT_TAG])
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    assert {
        ("validation", "loss"),
        ("validation", "elbo"),
        ("validation", "bits_per_dim"),
    } <= metrics
    assert {("eval", "judge_fd_normal"), ("eval", "judge_fd_gmm")} <= metrics
    assert sorted(n for n in os.listdir(logs) if "tfevents" in n) == [dashboards.HPARAMS_FILE]


def test_the_dashboard_lists_the_session_with_its_last_validation_numbers(run):
    root, _ = run
    groups = session_groups(root)
    assert len(groups) == 1 and [s.name for s in groups[0].sessions] == ["vae/logs"]
    found = {(m.name.group, m.name.tag): m.value for m in groups[0].metric_values}
    assert {("validation", "loss"), ("validation", "elbo"), ("train", "loss")} <= set(found)
    assert found[("validation", "bits_per_dim")] > 0


def test_a_resumed_run_keeps_one_session_with_the_settings_now_in_force(run, tmp_path):
    _, finished = run
    workdir = str(tmp_path / "vae")
    shutil.copytree(finished, workdir)
    path = os.path.join(workdir, "logs", dashboards.HPARAMS_FILE)
    with open(path, "rb") as f:
        before = f.read()
    _, started = session_values(
        plugin_data(str(tmp_path))["vae/logs"][hp_metadata.SESSION_START_INFO_TAG]
    )
    session = dashboards.read_session(os.path.join(workdir, "logs"))
    assert session is not None and session.start_time_secs == started
    with open(os.path.join(workdir, "config.json")) as f:
        stored = TrainConfig.from_dict(json.load(f)["flags"])
    train_and_evaluate(stored, workdir)  # nothing to train, the same settings
    with open(path, "rb") as f:
        assert f.read() == before  # untouched
    train_and_evaluate(dataclasses.replace(stored, epochs=2, learning_rate=5e-4), workdir)
    tags = plugin_data(str(tmp_path))["vae/logs"]
    values, start = session_values(tags[hp_metadata.SESSION_START_INFO_TAG])
    assert values["epochs"] == 2 and values["learning_rate"] == pytest.approx(5e-4)
    assert start == started  # the session of the run, not of this call
    logs = os.path.join(workdir, "logs")
    assert sorted(n for n in os.listdir(logs) if "tfevents" in n) == [dashboards.HPARAMS_FILE]
    sessions = [
        value.tag
        for event in dashboards._read_events(path)
        for value in event.summary.value
        if value.tag == hp_metadata.SESSION_START_INFO_TAG
    ]
    assert sessions == [hp_metadata.SESSION_START_INFO_TAG]  # one, not one per start
    assert len(session_groups(str(tmp_path))) == 1


def test_the_autoencoder_has_no_kl_weight(tiny_manifest):
    config = tiny(tiny_manifest.data_dir, mode="ae")
    model = ModelConfig(NetworkConfig(image_shape=(32, 32, 3), filters=(8, 16), z_dim=8), "ae")
    values = dashboards.hparams_values(config, model, tiny_manifest)
    assert values["mode"] == "ae" and values["kl_weight"] == values["beta"] == 0.0
    assert values["dataset_version"] == tiny_manifest.version


def test_evaluation_numbers_are_scalars_of_the_eval_group(tmp_path):
    path = dashboards.write_eval_metrics(
        str(tmp_path), {"psnr_db": 20.5, "judge_fd_normal": 12.0, "judge_fd_gmm": None}, 7
    )
    assert path == os.path.join(str(tmp_path), "logs", "eval", dashboards.EVAL_FILE)
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path / "logs"))
    multiplexer.Reload()
    tensors = {tag: multiplexer.Tensors("eval", tag) for tag in ("psnr_db", "judge_fd_normal")}
    assert {
        tag: (t[0].step, float(t[0].tensor_proto.float_val[0])) for tag, t in tensors.items()
    } == {
        "psnr_db": (7, 20.5),
        "judge_fd_normal": (7, 12.0),
    }
    assert "judge_fd_gmm" not in multiplexer.Runs()["eval"]["tensors"]
    # Written again: replaced, not appended.
    dashboards.write_eval_metrics(str(tmp_path), {"psnr_db": 21.0}, 8)
    assert os.listdir(tmp_path / "logs" / "eval") == [dashboards.EVAL_FILE]
