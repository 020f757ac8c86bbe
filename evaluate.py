"""Numbers for a trained run, one JSON line: ELBO, bits/dim, PSNR, FID/KID, and the judge's.

    python evaluate.py --workdir runs/vae256
    python evaluate.py --workdir runs/vae256 --prior gmm --fid_samples 50000
    python evaluate.py --workdir runs/vae256 --inception_weights ~/classify_image_graph_def.pb

FID/KID use TTUR's Inception graph (inception-2015-12-05, pool_3), the one published CelebA
FIDs use, downloaded once into --cache_dir; each number comes with its protocol (images
generated and real, prior, resize, the dataset's crop). Offline, fid is null with the
reason and everything else is still measured. judge_* numbers come from the dataset's own
attribute classifier: train it once with `python -m tools.train_judge --data_dir DIR`.
The line is also written to --out (default <workdir>/eval.json). Pictures: sample.py.
"""

from facevae.model.console import quiet_tensorflow, run_app

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import json

from absl import app, flags

from facevae.model import codes, evaluation, prior
from facevae.model import workdir as wd
from facevae.model.console import fail, one_line
from facevae.pipeline.schema import DatasetError

flags.DEFINE_string("workdir", None, "Run directory written by train.py.")
flags.DEFINE_string("data_dir", None, "Dataset (default: the one the run was trained on).")
flags.DEFINE_string("split", "test", "Split the model is measured on.")
flags.DEFINE_integer("max_examples", 0, "Images of --split for ELBO, PSNR and judge (0: all).")
flags.DEFINE_integer("fid_samples", 10_000, "Generated and real images each for FID/KID.")
flags.DEFINE_integer("kid_subsets", 100, "Random subsets averaged for KID.")
flags.DEFINE_integer("kid_subset_size", 1000, "Images per KID subset (capped to the sets).")
flags.DEFINE_string("inception_weights", "ttur", "ttur, keras (not comparable), none, or a file.")
flags.DEFINE_string("cache_dir", None, "Inception graph and real statistics (~/.cache/facevae).")
flags.DEFINE_enum("prior", "normal", prior.PRIORS, "Sample z from N(0, T^2 I) or a GMM on codes.")
flags.DEFINE_float("temperature", 1.0, "Std multiplier T of the sampled latents.")
flags.DEFINE_integer("gmm_components", prior.DEFAULT_COMPONENTS, "Components of --prior gmm.")
flags.DEFINE_string("judge_dir", None, "Attribute judge (default <data_dir>/judge).")
flags.DEFINE_integer("edit_images", 256, "Test images edited per attribute for judge_edit_*.")
flags.DEFINE_integer("batch_size", 64, "Images per model call.")
flags.DEFINE_integer("seed", 0, "Seed of the sampled latents: the same seed, the same numbers.")
flags.DEFINE_string("out", None, "JSON file for the results (default <workdir>/eval.json).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        config = evaluation.EvalConfig(
            workdir=FLAGS.workdir,
            data_dir=FLAGS.data_dir,
            split=FLAGS.split,
            batch_size=FLAGS.batch_size,
            max_examples=FLAGS.max_examples,
            fid_samples=FLAGS.fid_samples,
            kid_subsets=FLAGS.kid_subsets,
            kid_subset_size=FLAGS.kid_subset_size,
            inception_weights=FLAGS.inception_weights,
            cache_dir=FLAGS.cache_dir,
            prior=FLAGS.prior,
            temperature=FLAGS.temperature,
            gmm_components=FLAGS.gmm_components,
            judge_dir=FLAGS.judge_dir,
            edit_images=FLAGS.edit_images,
            seed=FLAGS.seed,
            out=FLAGS.out,
        )
        results = evaluation.run(config, explain=one_line)
    except DatasetError as e:
        fail(e, "evaluate.py: --data_dir: ")
    except (evaluation.EvaluationError, wd.WorkdirError, codes.CodesError, OSError) as e:
        fail(e, "evaluate.py: ")
    print(json.dumps(results))


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
