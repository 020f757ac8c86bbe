"""TensorBoard's Projector for a trained run: its test images' latent means, with faces and labels.

    python -m tools.projector --workdir runs/vae256
    tensorboard --logdir runs    # PROJECTOR tab: colour by any attribute, label by source_id

Encodes the first --max_images images of --split (default: test, else validation, else
train) and writes <workdir>/logs/plugins/org_tensorflow_tensorboard_projector/ whole: the
projector config, z_mean.tsv, metadata.tsv (index, source_id and every attribute, with a
header row) and sprite.png (the faces, shrunk to fit 8192x8192 pixels). Training writes the
same at the end of a run; this rewrites it, e.g. for more images or another split. The work
is facevae.model.dashboards.write_workdir_projector.
"""

from facevae.model.console import quiet_tensorflow, run_app

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

from absl import app, flags

from facevae.model import dashboards
from facevae.model import workdir as wd
from facevae.model.console import fail
from facevae.pipeline.schema import DatasetError

flags.DEFINE_string("workdir", None, "Run directory written by train.py.")
flags.DEFINE_string("split", None, "Split to show (default: test, else validation, else train).")
flags.DEFINE_integer(
    "max_images",
    dashboards.DEFAULT_PROJECTOR_IMAGES,
    f"Images shown, the split's first (at most {dashboards.MAX_PROJECTOR_IMAGES:,}).",
)
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        result = dashboards.write_workdir_projector(
            FLAGS.workdir, split=FLAGS.split, max_images=FLAGS.max_images
        )
    except (dashboards.ProjectorError, wd.WorkdirError, DatasetError, OSError) as e:
        fail(e, "projector: ")
    width, height = result.sprite_size
    print(
        f"projector: {result.images} {result.split} images' z_mean ({result.z_dim}-d), faces of "
        f"{result.tile[0]}x{result.tile[1]} in a {width}x{height} sprite, in {result.folder}"
    )


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
