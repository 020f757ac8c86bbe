"""Size, decode time per image and fidelity of a run's decoder, SavedModel against LiteRT.

    python -m tools.bench_export --workdir runs/demo

Prints one JSON line per form: the SavedModel in <workdir>/export/ (TensorFlow), then a
.tflite per --quantize (converted in memory, run by the LiteRT interpreter; nothing is
written). Each line has the size in bytes, milliseconds per image at each --batch_sizes
(best of --repeats calls, all cores), and the largest difference in grey levels and the
PSNR against the SavedModel on --samples latent vectors. Needs the litert extra.
"""

from facevae.model.console import quiet_tensorflow, run_app

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import json

from absl import app, flags

from facevae.model import export
from facevae.model import workdir as wd
from facevae.model.console import fail

flags.DEFINE_string("workdir", None, "Run folder whose decoder is measured (train.py's).")
flags.DEFINE_integer("samples", 256, "Latent vectors compared.", lower_bound=1, upper_bound=65536)
flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes timed, e.g. 1,32.")
flags.DEFINE_integer("repeats", 20, "Timed calls per batch size.", lower_bound=1, upper_bound=10000)
flags.DEFINE_list("quantize", list(export.QUANTIZE), "The .tflite forms measured.")
flags.mark_flag_as_required("workdir")
flags.register_validator(
    "batch_sizes",
    lambda v: all(s.isdigit() and 1 <= int(s) <= 4096 for s in v),
    message="--batch_sizes must be whole numbers in 1..4096",
)
flags.register_validator(
    "quantize",
    lambda v: set(v) <= set(export.QUANTIZE),
    message=f"--quantize must be some of {','.join(export.QUANTIZE)}",
)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        rows = export.measure(
            FLAGS.workdir,
            samples=FLAGS.samples,
            batch_sizes=tuple(int(s) for s in FLAGS.batch_sizes),
            repeats=FLAGS.repeats,
            quantizations=tuple(FLAGS.quantize),
        )
    except (export.ExportError, wd.WorkdirError) as e:
        fail(e, "bench_export: ")
    for row in rows:
        print(json.dumps(row))


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
