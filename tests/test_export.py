"""The decoder outside the training code: the SavedModel's explicit signature, SavedModels of
the old form, the LiteRT (.tflite) file, and the one-line errors of a bad conversion.

The runs are stand-ins made without training (a fresh VAE saved as train.py saves its final
model): converting and serving depend on the model's shape, not on what it learned.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cli_driver
import numpy as np
import pytest
import tensorflow as tf

from facevae.model import export
from facevae.model import workdir as wd
from facevae.model.config import RunConfig, TrainConfig
from facevae.pipeline import files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_litert = pytest.mark.skipif(
    not export.litert_available(),
    reason=f"the LiteRT interpreter is the optional litert extra: {export.LITERT_INSTALL}",
)
Z_DIM = 8


def make_run(workdir: str, data_dir: str, image_shape: tuple[int, int, int]) -> wd.VAE:
    """A finished run's files (config.json, model.keras, export/) for a fresh VAE."""
    flags = TrainConfig(data_dir=data_dir, z_dim=Z_DIM, filters=(8, 16), batch_size=8, seed=3)
    config = RunConfig(flags, flags.model_config(image_shape))
    model = wd.build_model(config)
    # Not the initial weights alone: BatchNorm's moving statistics of 0 and 1 would hide a
    # converter that drops them.
    for weight in model.decoder.weights:
        shape = tuple(weight.shape)
        noise = np.random.default_rng(len(weight.path)).uniform(0.5, 1.5, shape)
        if "moving_variance" in weight.path or "gamma" in weight.path:
            weight.assign(noise.astype(np.float32))
        elif "moving_mean" in weight.path or "beta" in weight.path:
            weight.assign((noise - 1).astype(np.float32))
    os.makedirs(workdir, exist_ok=True)
    wd.write_config(workdir, config)
    wd.save_final(model, workdir)
    return model


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_data_dir, tiny_manifest) -> str:
    workdir = str(tmp_path_factory.mktemp("export") / "run")
    make_run(workdir, tiny_data_dir, tiny_manifest.image_shape)
    return workdir


def z(n: int = 6, seed: int = 0) -> np.ndarray:
    return export.latents(n, Z_DIM, seed)


def snapshot(folder: str) -> dict[str, tuple[int, int, bytes]]:
    """Every file below `folder`: (size, mtime_ns, content)."""
    result = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            info = os.stat(path)
            with open(path, "rb") as f:
                result[os.path.relpath(path, folder)] = (info.st_size, info.st_mtime_ns, f.read())
    return result


# --------------------------------------------------------------------------- the SavedModel


def test_serving_default_signature_matches_serve(run):
    loaded = tf.saved_model.load(os.path.join(run, wd.EXPORT_DIR))
    signature = loaded.signatures[wd.SERVING_SIGNATURE]
    assert list(signature.structured_input_signature[1]) == ["z"]
    assert list(signature.structured_outputs) == ["images"]
    images = signature(z=tf.constant(z()))["images"].numpy()
    assert images.dtype == np.uint8 and images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(images, loaded.serve(z())["images"].numpy())
    model, _ = wd.restore(run)
    np.testing.assert_array_equal(images, wd.DecoderExport(model).serve(z())["images"].numpy())
    assert len(np.unique(images)) > 16  # faces of a sort, not a constant


def test_an_export_of_the_old_form_still_loads_and_serves(run, tmp_path):
    """Before the signature was named, export/ was saved without `signatures=`."""
    model, _ = wd.restore(run)
    old = str(tmp_path / "old-export")
    tf.saved_model.save(wd.DecoderExport(model), old)
    loaded = tf.saved_model.load(old)
    current = tf.saved_model.load(os.path.join(run, wd.EXPORT_DIR))  # kept while it serves
    expected = current.serve(z())["images"]
    np.testing.assert_array_equal(loaded.serve(z())["images"].numpy(), expected.numpy())
    # TensorFlow made its one input-signed function the default signature then, too.
    signature = loaded.signatures[wd.SERVING_SIGNATURE]
    np.testing.assert_array_equal(signature(z=tf.constant(z()))["images"].numpy(), expected)


# --------------------------------------------------------------------------- LiteRT


@needs_litert
def test_tflite_decodes_as_the_savedmodel(run, tmp_path):
    out = str(tmp_path / "decoder.tflite")
    result = export.export_tflite(run, out)
    assert result.path == out and result.bytes == os.path.getsize(out)
    assert result.max_difference is not None and result.max_difference <= 1
    with open(out, "rb") as f:
        decoder = export.TfliteDecoder(f.read())
    saved = tf.saved_model.load(os.path.join(run, wd.EXPORT_DIR))  # kept while it serves
    signature = saved.signatures[wd.SERVING_SIGNATURE]
    for n, seed in ((1, 1), (16, 2)):  # the batch dimension is free
        vectors = z(n, seed)
        saved = signature(z=tf.constant(vectors))["images"].numpy()
        lite = decoder.decode(vectors)
        assert lite.dtype == np.uint8 and lite.shape == saved.shape == (n, 32, 32, 3)
        assert np.abs(lite.astype(int) - saved.astype(int)).max() <= 1


@needs_litert
@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_quantised_decoders_run_and_are_close(run, quantize):
    result = export.export_tflite(run, quantize=quantize)  # the default path, in the workdir
    assert result.path == os.path.join(run, f"decoder-{quantize}.tflite")
    with open(os.path.join(run, wd.OUTPUTS_FILE)) as f:
        assert os.path.basename(result.path) in json.load(f)
    assert wd.foreign_entries(run) == []  # a later --overwrite takes it for the run's
    with open(result.path, "rb") as f:
        images = export.TfliteDecoder(f.read()).decode(z())
    assert images.dtype == np.uint8 and images.shape == (6, 32, 32, 3)
    assert result.psnr_db is not None and result.psnr_db > 20  # a little off, not noise


def test_without_litert_the_file_is_written_unchecked(run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "litert_available", lambda: False)
    result = export.export_tflite(run, str(tmp_path / "unchecked.tflite"))
    assert result.max_difference is None and "not run" in result.summary()
    assert export.LITERT_INSTALL in result.summary() and os.path.getsize(result.path) > 10_000
    with pytest.raises(export.ExportError, match="LiteRT interpreter"):
        export.TfliteDecoder(b"")


def test_a_converter_that_drops_the_weights_is_caught_before_writing(run, tmp_path, monkeypatch):
    """TF 2.21's converter given the Keras model's own variables writes a file without them;
    the check against the SavedModel refuses such a file."""
    if not export.litert_available():
        pytest.skip(f"the check needs the LiteRT interpreter: {export.LITERT_INSTALL}")

    def keras_variables(model, quantize="none"):
        module = wd.DecoderExport(model)  # tracks the model: its Keras variables
        serving = module.serve.get_concrete_function()
        return tf.lite.TFLiteConverter.from_concrete_functions([serving], module).convert()

    monkeypatch.setattr(export, "tflite_model", keras_variables)
    out = tmp_path / "bad.tflite"
    with pytest.raises(export.ExportError, match=r"differs from the SavedModel's .* not written"):
        export.export_tflite(run, str(out))
    assert not out.exists()


# --------------------------------------------------------------------------- bad input


def _broken_runs(base: str, data_dir: str, shape: tuple[int, int, int]) -> dict[str, str]:
    """Workdirs each broken one way: (name -> workdir)."""
    runs = {"empty": os.path.join(base, "empty"), "missing": os.path.join(base, "missing")}
    os.makedirs(runs["empty"])  # a folder with no run in it
    for name in ("config", "weights", "nonfinite"):
        runs[name] = os.path.join(base, name)
        model = make_run(runs[name], data_dir, shape)
        if name == "config":
            with open(wd.config_path(runs[name]), "r+b") as f:
                f.truncate(40)  # a damaged config.json
        elif name == "weights":
            os.remove(os.path.join(runs[name], wd.MODEL_FILE))  # no checkpoint, no model.keras
        else:
            weight = model.decoder.weights[0]
            weight.assign(np.full(tuple(weight.shape), np.nan, np.float32))
            model.save(os.path.join(runs[name], wd.MODEL_FILE))  # a run that diverged
    return runs


def test_bad_runs_and_outs_give_one_line_and_change_nothing(
    tmp_path, tiny_data_dir, tiny_manifest, run
):
    runs = _broken_runs(str(tmp_path), tiny_data_dir, tiny_manifest.image_shape)
    expected = {
        "missing": r"config\.json does not exist",
        "empty": r"config\.json does not exist",
        "config": r"config\.json is damaged",
        "weights": r"no checkpoint in ckpt/ and no model\.keras",
        "nonfinite": r"non-finite weights",
    }
    for name, pattern in expected.items():
        before = snapshot(runs[name])
        out = os.path.join(runs[name], export.TFLITE_NAME)
        with pytest.raises(wd.WorkdirError, match=pattern) as caught:
            export.export_tflite(runs[name])
        assert "\n" not in str(caught.value)
        assert snapshot(runs[name]) == before and not os.path.exists(out)
    assert not os.path.exists(runs["missing"])

    before = snapshot(run)
    os.makedirs(os.path.join(run, wd.CKPT_DIR), exist_ok=True)  # a run with checkpoints
    bad_outs = {
        os.path.join(run, wd.CKPT_DIR, "decoder.tflite"): r"lies in the run's ckpt/ folder",
        os.path.join(run, wd.CKPT_DIR, "sub", "x.tflite"): r"lies in the run's ckpt/ folder",
        os.path.join(run, wd.EXPORT_DIR, "decoder.tflite"): r"lies in the run's export/ folder",
        os.path.join(run, wd.MODEL_FILE): r"is the run's own model\.keras",
        str(tmp_path): r"is a folder",
    }
    for out, pattern in bad_outs.items():
        with pytest.raises(export.ExportError, match=pattern):
            export.export_tflite(run, out)
    with pytest.raises(export.ExportError, match="`quantize`=int4 is not one of"):
        export.export_tflite(run, str(tmp_path / "q.tflite"), quantize="int4")
    assert snapshot(run) == before and os.listdir(os.path.join(run, wd.CKPT_DIR)) == []
    os.rmdir(os.path.join(run, wd.CKPT_DIR))


def test_a_full_disk_leaves_no_file(run, tmp_path, monkeypatch):
    def full(path, content):
        raise files.WriteError(path, OSError(28, "No space left on device"))

    monkeypatch.setattr(files, "write_bytes", full)
    out = tmp_path / "full" / "decoder.tflite"
    with pytest.raises(files.WriteError, match="no space left"):
        export.export_tflite(run, str(out))
    assert not out.exists()


# --------------------------------------------------------------------------- the command


def test_command_line_converts_and_fails_in_one_line(run, tmp_path):
    """The real command through main() (tests/cli_driver.py): one TF start-up for all."""
    shutil.copytree(run, tmp_path / "run")
    workdir = str(tmp_path / "run")
    cases = {
        "ok": [f"--workdir={workdir}", f"--out={tmp_path / 'cli.tflite'}"],
        "f16": [f"--workdir={workdir}", "--quantize=float16"],
        "ckpt": [f"--workdir={workdir}", f"--out={os.path.join(workdir, 'ckpt', 'x.tflite')}"],
        "norun": [f"--workdir={tmp_path / 'nowhere'}"],
        "quantize": [f"--workdir={workdir}", "--quantize=int4"],
    }
    done = subprocess.run(
        [sys.executable, "-c", cli_driver.script("tools.export_tflite"), json.dumps(cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reports = json.loads(done.stdout.splitlines()[-1])
    ok = reports["ok"]
    assert ok["code"] == 0 and ok["stdout"].startswith(f"wrote {tmp_path / 'cli.tflite'} ")
    assert os.path.getsize(tmp_path / "cli.tflite") > 10_000
    assert reports["f16"]["code"] == 0
    assert os.path.exists(os.path.join(workdir, "decoder-float16.tflite"))
    for name, text in [
        ("ckpt", "export_tflite: --out="),
        ("norun", "export_tflite: "),
    ]:
        report = reports[name]
        assert report["code"] == 1 and report["message"].startswith(text), report
        assert "\n" not in report["message"].strip() and "Traceback" not in report["stderr"]
    assert "lies in the run's ckpt/ folder" in reports["ckpt"]["message"]
    assert "does not exist" in reports["norun"]["message"]
    assert reports["quantize"]["code"] == 1 and "int4" in reports["quantize"]["message"]
    assert not os.path.exists(os.path.join(workdir, "ckpt"))


def test_measure_reports_every_form(run):
    if not export.litert_available():
        pytest.skip(f"measuring runs the .tflite: {export.LITERT_INSTALL}")
    rows = export.measure(run, samples=8, batch_sizes=(1, 4), repeats=1)
    assert [r["form"] for r in rows] == ["savedmodel", "tflite-none", "tflite-float16",
                                          "tflite-dynamic"]  # fmt: skip
    assert rows[0]["max_difference"] == 0 and rows[1]["max_difference"] <= 1
    for row in rows:
        assert row["bytes"] > 0 and row["ms_per_image_batch1"] > 0 and row["ms_per_image_batch4"]
    json.dumps(rows)  # one JSON line each
