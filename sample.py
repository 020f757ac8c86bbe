"""New faces and latent-space experiments from a trained run, restored from its workdir alone.

    python sample.py --workdir runs/vae256 --mode random --out faces.png
    python sample.py --workdir runs/vae256 --mode random --prior gmm --out faces_gmm.png
    python sample.py --workdir runs/vae256 --mode attribute --attribute Smiling

Every mode writes one PNG grid (default <workdir>/<mode>.png) and prints its path;
stats and denoise also write a JSON file beside it; explore serves a page instead (--host,
--port; the `explore` extra), prints its URL and serves until Ctrl-C. The same workdir, mode
and --seed give identical files. Numbers (ELBO, FID, the judge's): evaluate.py. From Python:
model/sampling.py, which this calls (and model/explorer.py). Grid layouts, rows x columns:

"""

from facevae.model.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import re
import sys
from typing import Any

from absl import app, flags

from facevae.model import codes, console, explorer, sampling
from facevae.model import prior as priors  # `prior` is also a setting's name
from facevae.model import sample_config as sc
from facevae.model import workdir as wd
from facevae.pipeline import files
from facevae.pipeline.schema import DatasetError

# --help shows the grid layouts the library documents, its `settings` as --flags.
__doc__ += re.sub(r"`(\w+)`", r"--\1", sampling.LAYOUTS)


class _Number(flags.ArgumentParser):
    """An int or float flag's parser: its error states the range and quotes no value
    (console.parse_flags cuts absl's own quote of it short)."""

    def __init__(self, kind: type, rule: str) -> None:
        self.kind, self.syntactic_help = kind, rule  # --help shows the rule after the default

    def parse(self, argument: Any) -> Any:
        if isinstance(argument, self.kind) and not isinstance(argument, bool):
            return argument  # a default
        try:
            return self.kind(argument)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"give {self.syntactic_help}") from None

    def flag_type(self) -> str:
        return self.kind.__name__


def define_int(name: str, default: int, help_text: str) -> None:
    """An integer flag; its range (INT_RANGES) is SampleConfig's to check."""
    low, high = sc.INT_RANGES[name]
    parser = _Number(int, f"a whole number in {low}..{high}")
    flags.DEFINE(parser, name, default, help_text, serializer=flags.ArgumentSerializer())


def define_float(name: str, default: float, help_text: str) -> None:
    """A float flag in (0, FLOAT_BOUNDS[name]]; its range is SampleConfig's to check."""
    parser = _Number(float, f"a number in (0, {sc.FLOAT_BOUNDS[name]:g}]")
    flags.DEFINE(parser, name, default, help_text, serializer=flags.ArgumentSerializer())


MOST = {name: high for name, (_, high) in sc.INT_RANGES.items()}  # for the help texts
STRENGTH, BOUNDARY = f"{sc.MAX_STRENGTH:g}", f"{sc.MAX_BOUNDARY:g}"

# What and where.
flags.DEFINE_string("workdir", None, "Run directory written by train.py (config + checkpoint).")
flags.DEFINE_enum(
    "mode", "random", (*sc.MODES, explorer.MODE), "What to make; grid layouts are listed above."
)
flags.DEFINE_string(
    "out",
    None,
    f"PNG to write (default <workdir>/<mode>.png); a grid holds at most {sc.MAX_GRID_IMAGES} "
    f"images of {sc.MAX_DECODED_MEGAPIXELS} megapixels in all, {sc.MAX_GRID_MEGAPIXELS} after "
    "--scale.",
)
define_int("scale", 1, f"Integer enlargement of the grid (nearest neighbour), 1..{MOST['scale']}.")
define_int("seed", 0, "Seed of every random draw: the same seed, the same files.")
define_int(
    "n", 0, f"Faces, images, rows or columns by mode (0: the mode's default), at most {MOST['n']}."
)
define_int("batch_size", 64, f"Images per encoder/decoder call, at most {MOST['batch_size']}.")
# Data.
flags.DEFINE_string("data_dir", None, "Dataset (default: the one the run was trained on).")
flags.DEFINE_string("split", "test", "Split to take images from (falls back if absent).")
flags.DEFINE_list(
    "indices", [], f"Positions of images in --split (0-based), e.g. 3,17 (<= {sc.MAX_N})."
)
flags.DEFINE_list(
    "source_ids", [], f"Source file names of images in --split, e.g. 000001.jpg (<= {sc.MAX_N})."
)
define_int(
    "max_examples",
    5000,
    f"Images encoded by stats/traverse only (0: all, up to {sc.MAX_CODE_VALUES:,} / z_dim); "
    f"attribute vectors always come from the first {codes.TRAIN_CODES:,} labelled images.",
)
# Sampling and latent paths.
define_float("temperature", 1.0, "Std T of the prior samples z ~ N(0, T^2 I).")
flags.DEFINE_enum("prior", "normal", priors.PRIORS, "random: N(0, T^2 I), or gmm on train codes.")
define_int("steps", 8, f"Points along an interpolation or traversal, 2..{MOST['steps']}.")
flags.DEFINE_enum("method", "spherical", sc.METHODS, "Interpolation path.")
flags.DEFINE_string("save_individual", None, "random: also write each face as a PNG here.")
# Attributes and traversals.
flags.DEFINE_string("attribute", "Smiling", "Attribute name from the dataset's manifest.")
flags.DEFINE_string("attribute_split", "train", "Labelled split the attribute vectors come from.")
flags.DEFINE_list(
    "strengths",
    ["-2", "-1", "0", "1", "2"],
    f"Multiples of the attribute vector, each in -{STRENGTH}..{STRENGTH} (<= {sc.MAX_VALUES}).",
)
define_int("num_dims", 8, f"traverse/explore: latent dimensions shown, at most {MOST['num_dims']}.")
define_float("traverse_range", 3.0, "traverse: each dimension goes from -this to +this.")
# Boundary and denoise.
flags.DEFINE_list(
    "boundaries",
    ["0.5", "1", "2", "5", "10", "50"],
    f"boundary: values of b, each in (0, {BOUNDARY}] (<= {sc.MAX_VALUES}).",
)
flags.DEFINE_enum("corruption", "gaussian", sc.CORRUPTIONS, "denoise: noise or a square.")
define_float("noise", 0.2, "denoise: Gaussian std, or the mask's side as image fraction.")

# The explorer's page.
flags.DEFINE_string("host", "127.0.0.1", "explore: address to serve on (0.0.0.0: every network).")
flags.DEFINE_integer("port", 7860, "explore: port to serve the page on, 1..65535.")

flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    if FLAGS.mode == explorer.MODE:
        explore()
        return
    try:
        config = sampling.SampleConfig(
            workdir=FLAGS.workdir,
            mode=FLAGS.mode,
            out=FLAGS.out,
            scale=FLAGS.scale,
            seed=FLAGS.seed,
            n=FLAGS.n,
            batch_size=FLAGS.batch_size,
            data_dir=FLAGS.data_dir,
            split=FLAGS.split if FLAGS["split"].present else None,  # None: falls back
            indices=FLAGS.indices,
            source_ids=FLAGS.source_ids,
            max_examples=FLAGS.max_examples,
            temperature=FLAGS.temperature,
            prior=FLAGS.prior,
            steps=FLAGS.steps,
            method=FLAGS.method,
            save_individual=FLAGS.save_individual,
            attribute=FLAGS.attribute,
            attribute_split=FLAGS.attribute_split,
            strengths=FLAGS.strengths,
            num_dims=FLAGS.num_dims,
            traverse_range=FLAGS.traverse_range,
            boundaries=FLAGS.boundaries,
            corruption=FLAGS.corruption,
            noise=FLAGS.noise,
        )
        paths = sampling.run(config)
    except (
        sampling.SampleError,
        DatasetError,
        wd.WorkdirError,
        codes.CodesError,
        files.WriteError,
    ) as e:
        console.fail(e, "sample.py: ")
    for path in paths:
        print(path)


def explore() -> None:
    try:
        explorer.serve(
            explorer.ExploreConfig(
                workdir=FLAGS.workdir,
                data_dir=FLAGS.data_dir,
                split=FLAGS.split if FLAGS["split"].present else None,
                seed=FLAGS.seed,
                temperature=FLAGS.temperature,
                num_dims=FLAGS.num_dims,
                batch_size=FLAGS.batch_size,
                host=FLAGS.host,
                port=FLAGS.port,
            )
        )
    except (explorer.ExplorerError, DatasetError, wd.WorkdirError, codes.CodesError) as e:
        console.fail(e, "sample.py: ")
    except KeyboardInterrupt:
        print("sample.py: explorer stopped (Ctrl-C)", file=sys.stderr)
        sys.exit(130)


def run() -> None:
    console.run_app(main)


if __name__ == "__main__":
    run()
