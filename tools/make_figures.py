"""The README's figures and results table, made by the library in one process.

    python -m tools.make_figures                 # trains 4 demo runs once (minutes), then draws
    python -m tools.make_figures --overwrite     # trains and draws them all again

Trains or reuses, each in a workdir under --runs_dir, the demo VAE (`train.py --demo`'s
settings), the same networks as a plain autoencoder and the VAE at the --kl_weights;
trains the dataset's offline judge once if it has none; evaluates each run with the prior
N(0, I) and with the mixture prior, and draws the pictures: samples, reconstructions,
interpolation, eyeglasses (when the dataset has that label), traversal, boundary_ae and
boundary_vae (PNGs of at most 300 KB) and results.md (also printed) in --out_dir, each
whole. The work is facevae.model.figures.make_figures (its docstring lists the files).
"""

from facevae.model.console import quiet_tensorflow, run_app

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import os
import sys

from absl import app, flags

from facevae.model import figures
from facevae.model.callbacks import Interrupted
from facevae.model.console import fail

flags.DEFINE_string("out_dir", "docs", "Folder for the PNGs and results.md.")
flags.DEFINE_string("runs_dir", os.path.join("runs", "figures"), "Folder of the runs' workdirs.")
flags.DEFINE_string("data_dir", None, "Dataset (default: the demo's synthetic faces).")
flags.DEFINE_string(
    "train_flags", "", "Extra train.py settings for every run, one string: '--epochs=2 --z_dim=32'."
)
flags.DEFINE_list(
    "kl_weights",
    [f"{w:g}" for w in figures.KL_WEIGHTS],
    "KL weights of the extra VAE runs; the defaults bracket the demo's kl_weight.",
)
flags.DEFINE_integer("seed", 0, "Seed of the evaluations and pictures: the same seed, same files.")
flags.DEFINE_integer(
    "jobs", 2, "Worker processes that evaluate and draw the runs (1: this one); training: one."
)
flags.DEFINE_bool("overwrite", False, "Train every run again, even if a finished one matches.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        summary = figures.make_figures(
            figures.FigureConfig(
                out_dir=FLAGS.out_dir,
                runs_dir=FLAGS.runs_dir,
                data_dir=FLAGS.data_dir,
                train_flags=FLAGS.train_flags,
                kl_weights=tuple(FLAGS.kl_weights),
                seed=FLAGS.seed,
                jobs=FLAGS.jobs,
                overwrite=FLAGS.overwrite,
            )
        )
    except (figures.FigureError, OSError) as e:
        fail(e, "make_figures: ")
    except (Interrupted, KeyboardInterrupt):
        sys.exit("make_figures: interrupted; finished runs are reused next time")
    print(summary)


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
