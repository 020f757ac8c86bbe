"""Train the offline judge: an attribute classifier on a dataset's own labels, for evaluate.py.

    python -m tools.train_judge --data_dir data/celeba96

Trains on the train split, stores the classifier and its report in DIR/judge/ (judge.keras,
judge.json) and prints the held-out accuracy of every attribute beside the accuracy of
always answering the training majority, so you can see how far to trust it. Attributes
with a single value in the training labels are reported as constant and left out.
"""

from facevae.model.console import quiet_tensorflow, run_app

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

from absl import app, flags

from facevae.model import judge
from facevae.model.console import fail
from facevae.pipeline import schema

flags.DEFINE_string("data_dir", None, "Prepared dataset with attribute labels.")
flags.DEFINE_string("out", None, "Folder for the judge (default <data_dir>/judge).")
flags.DEFINE_integer("epochs", 10, "Passes over the train split.")
flags.DEFINE_integer("batch_size", 64, "Images per step.")
flags.DEFINE_integer("width", 32, "Filters of the first convolution (doubled per layer).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and the shuffling.")
flags.mark_flag_as_required("data_dir")
for _name in ("epochs", "batch_size", "width"):
    flags.register_validator(_name, lambda v: v >= 1, message=f"--{_name} must be at least 1")
flags.register_validator(
    "learning_rate", lambda v: 0 < v < 1, message="--learning_rate must be in (0, 1)"
)
flags.register_validator(
    "seed", lambda v: 0 <= v < 2**32, message="--seed must be in 0..4294967295"
)
for _name, _most in (("epochs", 10_000), ("batch_size", 4096), ("width", 1024)):
    flags.register_validator(
        _name, lambda v, most=_most: v <= most, message=f"--{_name} must be at most {_most}"
    )
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        report = judge.train(
            schema.Manifest.read(FLAGS.data_dir),
            FLAGS.out,
            epochs=FLAGS.epochs,
            batch_size=FLAGS.batch_size,
            width=FLAGS.width,
            learning_rate=FLAGS.learning_rate,
            seed=FLAGS.seed,
            verbose=2,
        )
    except (judge.JudgeError, schema.DatasetError, OSError) as e:
        fail(e, "train_judge: ")
    print(report.table())


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
