"""Convert a run's decoder to a LiteRT (TensorFlow Lite) file for phones and browsers.

    python -m tools.export_tflite --workdir runs/demo
    python -m tools.export_tflite --workdir runs/demo --out decoder-f16.tflite --quantize float16

The file maps latent vectors `z` float32 (N, z_dim) to `images` uint8 (N, H, W, C), as the
SavedModel in <workdir>/export/ does (signature serving_default). With the LiteRT
interpreter installed (pip install -e ".[litert]") the file is run before it is written
and compared with the SavedModel; the line printed says by how much they differ.
"""

from facevae.model.console import quiet_tensorflow, run_app

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

from absl import app, flags

from facevae.model import export
from facevae.model import workdir as wd
from facevae.model.console import fail
from facevae.pipeline import files

flags.DEFINE_string("workdir", None, "Run folder whose decoder is converted (train.py's).")
flags.DEFINE_string(
    "out", None, "The .tflite file (default <workdir>/decoder.tflite, decoder-<quantize>.tflite)."
)
flags.DEFINE_enum(
    "quantize", "none", export.QUANTIZE, "Weights: none (float32), float16, or dynamic (int8)."
)
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        result = export.export_tflite(FLAGS.workdir, FLAGS.out, FLAGS.quantize)
    except (export.ExportError, wd.WorkdirError, files.WriteError) as e:
        fail(e, "export_tflite: ")
    print(result.summary())


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
