"""Train a VAE (or, with --mode ae, a plain autoencoder) on a prepared face dataset.

    python train.py --data_dir data/celeba96 --workdir runs/vae256
    python train.py --demo          # synthetic faces, no download: ~1.5 min on a 2-core EPYC

Running the same command again resumes from the last checkpoint in --workdir; flags
not given on the command line take the values stored in its config.json. The training
itself is facevae.model.trainer.train_and_evaluate, which a notebook can call too.
"""

from facevae.model.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import json
import os
import sys

from absl import app, flags

from facevae.model import bench, console, trainer
from facevae.model import config as cfg
from facevae.model import workdir as wd
from facevae.model.callbacks import Interrupted
from facevae.model.networks import NORMS, ConfigError
from facevae.model.vae import MODES, RECONSTRUCTION_LOSSES
from facevae.pipeline import synthetic
from facevae.pipeline.schema import DatasetError

DEFAULTS = cfg.TrainConfig()

# Data.
flags.DEFINE_string("data_dir", None, "Prepared dataset (python -m tools.prepare_celeba).")
flags.DEFINE_string(
    "cache", DEFAULTS.cache, "Decoded-image cache: auto, memory, none or disk:<path>."
)
flags.DEFINE_integer("shuffle_buffer", DEFAULTS.shuffle_buffer, "Examples in the shuffle buffer.")
flags.DEFINE_bool("flip", DEFAULTS.flip, "Random horizontal flips of training images.")
# Model.
flags.DEFINE_integer("z_dim", DEFAULTS.z_dim, "Latent dimensions.")
flags.DEFINE_list(
    "filters", list(map(str, DEFAULTS.filters)), "Encoder conv filters (stride 2 each)."
)
flags.DEFINE_enum("norm", DEFAULTS.norm, list(NORMS), "Normalisation after each convolution.")
flags.DEFINE_integer(
    "dense_units", DEFAULTS.dense_units, "Dense layer before the latent heads (0: none)."
)
flags.DEFINE_enum(
    "mode", DEFAULTS.mode, list(MODES), "vae, or ae: the same networks, no sampling/KL."
)
flags.DEFINE_float(
    "kl_weight", DEFAULTS.kl_weight, "Weight of mean KL per latent dim vs mean BCE/pixel."
)
flags.DEFINE_integer(
    "kl_warmup_steps", DEFAULTS.kl_warmup_steps, "Steps of linear KL warm-up (0: none)."
)
flags.DEFINE_enum(
    "reconstruction_loss",
    DEFAULTS.reconstruction_loss,
    list(RECONSTRUCTION_LOSSES),
    "Loss per pixel.",
)
# Optimisation.
flags.DEFINE_integer("batch_size", DEFAULTS.batch_size, "Global batch size, split across replicas.")
flags.DEFINE_float("learning_rate", DEFAULTS.learning_rate, "Adam learning rate.")
flags.DEFINE_enum(
    "lr_schedule",
    DEFAULTS.lr_schedule,
    list(cfg.LR_SCHEDULES),
    "constant, or cosine decay to 0 at the last step of the current --epochs.",
)
flags.DEFINE_integer("epochs", DEFAULTS.epochs, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", DEFAULTS.steps_per_epoch, "Steps per epoch (0: one pass).")
flags.DEFINE_integer(
    "seed", DEFAULTS.seed, "Seed of weights, shuffling and the fixed sample vectors."
)
# Devices and speed.
flags.DEFINE_enum(
    "strategy",
    DEFAULTS.strategy,
    list(cfg.STRATEGIES),
    "tf.distribute strategy; auto: mirrored on several GPUs, else default.",
)
flags.DEFINE_integer("logical_cpus", DEFAULTS.logical_cpus, "Split the CPU into N devices (tests).")
flags.DEFINE_enum(
    "mixed_precision",
    DEFAULTS.mixed_precision,
    list(cfg.MIXED_PRECISION),
    "Keras dtype policy.",
)
flags.DEFINE_enum(
    "jit_compile",
    DEFAULTS.jit_compile,
    list(cfg.JIT_COMPILE),
    "XLA for the train step; auto: on a GPU or TPU, not on a CPU.",
)
flags.DEFINE_integer(
    "steps_per_execution", DEFAULTS.steps_per_execution, "Steps per compiled call."
)
# Outputs.
flags.DEFINE_integer(
    "checkpoint_every_steps",
    DEFAULTS.checkpoint_every_steps,
    "Checkpoint every N steps (and at each epoch end).",
)
flags.DEFINE_integer("keep_checkpoints", DEFAULTS.keep_checkpoints, "Checkpoints to keep.")
flags.DEFINE_integer(
    "sample_every_epochs", DEFAULTS.sample_every_epochs, "Sample grid every N epochs."
)
flags.DEFINE_integer("eval_every_epochs", DEFAULTS.eval_every_epochs, "Validation every N epochs.")
flags.DEFINE_integer(
    "log_every_steps", DEFAULTS.log_every_steps, "Scalars and a log line every N steps."
)
# This invocation.
flags.DEFINE_string("workdir", None, "Run folder: config, checkpoints, logs, samples, model.")
flags.DEFINE_bool("overwrite", False, "Replace the run in --workdir (kept until a checkpoint).")
flags.DEFINE_integer(
    "resume_step", None, "Resume from the kept checkpoint of this step; later ones are deleted."
)
flags.DEFINE_bool("demo", False, "Train a small model on synthetic faces made on the spot.")
flags.DEFINE_integer("benchmark_steps", 0, "Time N train steps, print one JSON line and exit.")
flags.register_validator(
    "benchmark_steps", lambda v: 0 <= v <= cfg.MAX_STEPS, "--benchmark_steps: give 0 or more"
)
flags.register_validator(
    "resume_step", lambda v: v is None or v >= 0, "--resume_step: give a step of a checkpoint"
)

FLAGS = flags.FLAGS

# Flags that steer this invocation only: never stored in or restored from config.json.
INVOCATION_FLAGS = ("workdir", "overwrite", "resume_step", "demo", "benchmark_steps")
DEMO_WORKDIR = "runs/demo"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        settings = resolve_settings()
        if not settings["data_dir"]:
            sys.exit(
                "--data_dir is required: prepare a dataset with `python -m tools.prepare_celeba "
                "--src SRC --out DIR`, or run `python train.py --demo`"
            )
        # Only the demo's own cache is filled: a --data_dir given by the user is never written.
        if settings["data_dir"] == synthetic.demo_data_dir() and not os.path.isfile(
            os.path.join(settings["data_dir"], "dataset.json")
        ):
            synthetic.make_demo_dataset(settings["data_dir"])
        config = cfg.TrainConfig.from_dict(settings)
        if settings["benchmark_steps"]:
            print(json.dumps(bench.train_steps(config, settings["benchmark_steps"])))
            return
        if not settings["workdir"]:
            sys.exit("--workdir is required: the run's checkpoints, logs and samples go there")
        result = trainer.train_and_evaluate(
            config,
            settings["workdir"],
            overwrite=settings["overwrite"],
            resume_step=settings["resume_step"],
        )
    except (cfg.TrainError, ConfigError, wd.WorkdirError, DatasetError, OSError) as e:
        console.fail(e)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit("interrupted before training started: nothing was saved")
    if settings["demo"] and result.sample_grid:
        print(result.sample_grid)  # the last line: the picture to open


def resolve_settings() -> dict:
    """Every flag's value: given on the command line > stored in the workdir > demo > default."""
    names = [f.name for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])]
    settings = {name: FLAGS[name].value for name in names}
    given = {name for name in names if FLAGS[name].present}
    if settings["demo"]:
        demo = {**cfg.DEMO_SETTINGS, "workdir": DEMO_WORKDIR}
        settings.update({k: v for k, v in demo.items() if k not in given})
    # --overwrite starts afresh: a stored config, even a damaged one, is not read.
    workdir = settings["workdir"]
    if workdir and not settings["overwrite"] and os.path.lexists(wd.config_path(workdir)):
        stored = wd.read_config(workdir).flags.to_dict()
        settings.update(
            {
                k: v
                for k, v in stored.items()
                if k in settings and k not in given and k not in INVOCATION_FLAGS
            }
        )
    if settings["demo"] and "data_dir" not in given and not settings["data_dir"]:
        settings["data_dir"] = synthetic.demo_data_dir()
    settings["data_dir"] = settings["data_dir"] or ""
    settings["filters"] = parse_filters(settings["filters"])
    return settings


def parse_filters(values: list) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise cfg.TrainError(
            f"`filters`={console.short(','.join(map(str, values)))}: give comma-separated "
            "integers, e.g. 32,64,128"
        ) from None


def run() -> None:
    console.run_app(main)


if __name__ == "__main__":
    run()
