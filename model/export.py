"""The decoder outside Python: a run's decoder as a LiteRT (TensorFlow Lite) flatbuffer.

    python -m tools.export_tflite --workdir runs/demo [--out decoder.tflite]
        [--quantize none|float16|dynamic]

`export_tflite` restores the run (workdir.restore), converts the same function the
SavedModel in `export/` serves (workdir.DecoderExport: `z` float32 (N, z_dim) -> `images`
uint8 (N, H, W, C), signature `serving_default`) with `tf.lite.TFLiteConverter`, checks the
result against it on CHECK_SAMPLES latent vectors where the LiteRT interpreter is installed,
and writes the file (default `<workdir>/decoder.tflite`, recorded as one of the run's
outputs). `--quantize float16` stores the weights as float16 (half the size), `dynamic`
as int8 with float activations (a quarter); both change the images a little (their PSNR
against the float32 decoder is reported).

Running a .tflite needs the LiteRT interpreter: TensorFlow 2.21's own tf.lite.Interpreter
is deprecated in favour of the `ai-edge-litert` package, an optional dependency here (the
`litert` extra). Converting needs TensorFlow only.

Why the converter gets the decoder's TensorFlow variables: TF 2.21's converter leaves the
Keras 3 variables it reaches through the model as resource variables (VAR_HANDLE ops with
no values) instead of freezing them: the file is a few KB, and the interpreter decodes
noise. Tracking their underlying tf.Variables lets it fold them into constants. The check
after conversion is what would catch such a file before it is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from facevae.model import workdir as wd
from facevae.model.console import short
from facevae.pipeline import files

QUANTIZE = ("none", "float16", "dynamic")
TFLITE_NAME = "decoder.tflite"  # the default `out`; decoder-<quantize>.tflite when quantised
LITERT_INSTALL = 'pip install -e ".[litert]"'
CHECK_SAMPLES = 8  # latent vectors the converted decoder is checked on before it is written
MAX_DIFFERENCE = 1  # grey levels a float32 .tflite may differ from the SavedModel (rounding)
CHECK_SEED = 0
# Folders of a workdir that the library manages: a file of ours there would be a foreign
# entry (and `--out` in ckpt/ could be taken for, or clobber, a checkpoint).
_MANAGED_DIRS = (wd.CKPT_DIR, wd.LOGS_DIR, wd.SAMPLES_DIR, wd.EXPORT_DIR)
_OWN_FILES = (wd.CONFIG_NAME, wd.MODEL_FILE, wd.LOCK_FILE, wd.OUTPUTS_FILE)


class ExportError(ValueError):
    """The decoder cannot be converted or written as asked; one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class TfliteExport:
    """What export_tflite wrote and how it compares with the SavedModel's decoder.

    max_difference (grey levels) and psnr_db are over CHECK_SAMPLES images; None when the
    LiteRT interpreter is not installed, so the file was not run.
    """

    path: str
    bytes: int
    quantize: str
    max_difference: int | None
    psnr_db: float | None

    def summary(self) -> str:
        """One line for a command line."""
        if self.max_difference is None:
            check = f"not run (the LiteRT interpreter is not installed: {LITERT_INSTALL})"
        else:
            check = (
                f"on {CHECK_SAMPLES} latent vectors it differs from the SavedModel by at most "
                f"{self.max_difference} grey level(s), PSNR {format_psnr(self.psnr_db)}"
            )
        return f"wrote {self.path} ({self.bytes:,} bytes, quantize {self.quantize}); {check}"


def format_psnr(psnr: float | None) -> str:
    if psnr is None:
        return "n/a"
    return "inf dB (identical)" if math.isinf(psnr) else f"{psnr:.2f} dB"


# --------------------------------------------------------------------------- conversion


def tflite_model(model: Any, quantize: str = "none") -> bytes:
    """The decoder of a VAE as a .tflite flatbuffer, its signature `serving_default`
    (`z` -> `images`, as the SavedModel's); `quantize` one of QUANTIZE."""
    if quantize not in QUANTIZE:
        raise ExportError(f"`quantize`={short(quantize)} is not one of {', '.join(QUANTIZE)}")
    serving = wd.DecoderExport(model).serve.get_concrete_function()
    variables = tf.Module()  # see the module docstring: the tf.Variables, not Keras' wrappers
    variables.decoder = [getattr(w, "value", w) for w in model.decoder.weights]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving], variables)
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as e:  # the converter raises its own ConverterError and others
        raise ExportError(
            f"TensorFlow could not convert the decoder ({short(' '.join(str(e).split()), 200)})"
        ) from None


def litert_available() -> bool:
    """Whether the LiteRT interpreter (ai-edge-litert, the litert extra) can be imported."""
    return importlib.util.find_spec("ai_edge_litert") is not None


@contextlib.contextmanager
def _without_native_stderr() -> Iterator[None]:
    """Sends what native code writes to stderr (fd 2) to /dev/null inside the block.

    LiteRT prints an INFO line when it applies its CPU delegate, whatever the log level; its
    errors reach Python as exceptions with their messages, so nothing needed is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class TfliteDecoder:
    """A .tflite decoder run by the LiteRT interpreter: `decode(z)` -> uint8 images."""

    def __init__(self, content: bytes, num_threads: int | None = None) -> None:
        if not litert_available():
            raise ExportError(
                f"running a .tflite needs the LiteRT interpreter, not installed: {LITERT_INSTALL}"
            )
        from ai_edge_litert.interpreter import Interpreter

        with _without_native_stderr():  # LiteRT's "INFO: Created ... XNNPACK delegate" line
            self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
            self.interpreter.allocate_tensors()  # applies the delegate: prints the line
            self.runner = self.interpreter.get_signature_runner(wd.SERVING_SIGNATURE)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(N, z_dim) float32 -> (N, H, W, C) uint8."""
        return self.runner(z=np.asarray(z, np.float32))["images"]


def compare(reference: np.ndarray, images: np.ndarray) -> tuple[int, float]:
    """(max absolute difference in grey levels, PSNR in dB) of two uint8 image arrays."""
    difference = reference.astype(np.int32) - images.astype(np.int32)
    mse = float(np.mean(difference.astype(np.float64) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return int(np.abs(difference).max(initial=0)), psnr


def latents(n: int, z_dim: int, seed: int = CHECK_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)


# --------------------------------------------------------------------------- the file


def default_out(workdir: str, quantize: str = "none") -> str:
    name = TFLITE_NAME if quantize == "none" else f"decoder-{quantize}.tflite"
    return os.path.join(workdir, name)


def _listed(folders: tuple[str, ...]) -> str:
    names = [f"{name}/" for name in folders]
    return ", ".join(names[:-1]) + " and " + names[-1]


def check_out(workdir: str, out: str) -> None:
    """ExportError before any work if `out` is a folder, a file of the run's own (its
    config, model, lock), or lies in one of the folders the run's library manages (ckpt/,
    logs/, samples/, export/)."""
    if os.path.isdir(out):
        raise ExportError(
            f"`out`={short(out)} is a folder: give the path of a file, e.g. "
            f"{short(os.path.join(out, TFLITE_NAME))}"
        )
    run = os.path.realpath(workdir)
    target = os.path.realpath(out)
    for name in _MANAGED_DIRS:
        folder = os.path.join(run, name)
        if target == folder or target.startswith(folder + os.sep):
            raise ExportError(
                f"`out`={short(out)} lies in the run's {name}/ folder, which its training "
                f"writes and manages: choose a path outside {_listed(_MANAGED_DIRS)} "
                f"(the default is {short(default_out(workdir))})"
            )
    if os.path.dirname(target) == run and os.path.basename(target) in _OWN_FILES:
        raise ExportError(
            f"`out`={short(out)} is the run's own {os.path.basename(target)}: choose another "
            f"file name (the default is {short(default_out(workdir))})"
        )


def export_tflite(workdir: str, out: str | None = None, quantize: str = "none") -> TfliteExport:
    """Converts the run's decoder to a .tflite file at `out` (default_out when None).

    Raises workdir.WorkdirError when the run has no usable model (no config, no checkpoint
    and no model.keras, damaged or non-finite weights), ExportError for a bad `out` or
    `quantize`, a failed conversion, or a float32 file that decodes differently from the
    SavedModel, files.WriteError when the file cannot be written. In every such case nothing
    is written, and the workdir is as it was.
    """
    if quantize not in QUANTIZE:
        raise ExportError(f"`quantize`={short(quantize)} is not one of {', '.join(QUANTIZE)}")
    out = out or default_out(workdir, quantize)
    check_out(workdir, out)
    model, _ = wd.restore(workdir)
    content = tflite_model(model, quantize)
    max_difference = psnr = None
    if litert_available():
        z = latents(CHECK_SAMPLES, model.network.z_dim)
        reference = wd.DecoderExport(model).serve(tf.constant(z))["images"].numpy()
        max_difference, psnr = compare(reference, TfliteDecoder(content).decode(z))
        if quantize == "none" and max_difference > MAX_DIFFERENCE:
            raise ExportError(
                f"the converted decoder differs from the SavedModel's by up to {max_difference} "
                f"grey levels (PSNR {format_psnr(psnr)}) on {CHECK_SAMPLES} latent vectors, "
                f"more than {MAX_DIFFERENCE}: it was not written; this TensorFlow's converter "
                "does not handle this model"
            )
    files.write_bytes(out, content)
    wd.note_output(workdir, out)
    return TfliteExport(out, len(content), quantize, max_difference, psnr)


# --------------------------------------------------------------------------- measurements


def _folder_bytes(folder: str) -> int:
    return sum(
        os.path.getsize(os.path.join(parent, name))
        for parent, _, names in os.walk(folder)
        for name in names
    )


def _seconds_per_call(call: Any, repeats: int) -> float:
    call()  # warm-up: the first call builds and allocates
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    workdir: str,
    *,
    samples: int = 256,
    batch_sizes: tuple[int, ...] = (1, 32),
    repeats: int = 20,
    quantizations: tuple[str, ...] = QUANTIZE,
) -> list[dict[str, Any]]:
    """Size, decode time per image and fidelity of the run's decoder, one dict per form.

    Forms: the SavedModel in `export/` (TensorFlow) and a .tflite per quantisation (LiteRT,
    converted in memory, nothing written). Time per image is the best of `repeats` calls
    of each batch size, divided by it; PSNR and the largest difference are against the
    SavedModel on `samples` latent vectors. Threads: every core, for both runtimes.
    """
    model, _ = wd.restore(workdir)
    z_dim = model.network.z_dim
    z = latents(samples, z_dim)
    threads = os.cpu_count() or 1
    export_dir = os.path.join(workdir, wd.EXPORT_DIR)
    if not os.path.isdir(export_dir):
        raise ExportError(f"{workdir} has no {wd.EXPORT_DIR}/: train the run to the end first")
    saved = tf.saved_model.load(export_dir)
    serve = saved.signatures[wd.SERVING_SIGNATURE]

    def saved_decode(batch: np.ndarray) -> np.ndarray:
        return serve(z=tf.constant(batch))["images"].numpy()

    reference = np.concatenate([saved_decode(z[i : i + 64]) for i in range(0, samples, 64)])
    common = {
        "workdir": workdir,
        "image_shape": list(model.network.image_shape),
        "z_dim": z_dim,
        "threads": threads,
        "samples": samples,
    }
    forms: list[tuple[str, Any, int]] = [("savedmodel", saved_decode, _folder_bytes(export_dir))]
    for quantize in quantizations:
        content = tflite_model(model, quantize)
        forms.append((f"tflite-{quantize}", TfliteDecoder(content, threads).decode, len(content)))
    results = []
    for form, decode, size in forms:
        images = np.concatenate([decode(z[i : i + 64]) for i in range(0, samples, 64)])
        max_difference, psnr = compare(reference, images)
        timing = {
            f"ms_per_image_batch{b}": round(
                1000 * _seconds_per_call(lambda b=b, d=decode: d(z[:b]), repeats) / b, 3
            )
            for b in batch_sizes
        }
        results.append(
            {
                "form": form,
                **common,
                "bytes": size,
                **timing,
                "max_difference": max_difference,
                "psnr_db": None if math.isinf(psnr) else round(psnr, 2),
            }
        )
    return results
