"""CelebA (official or Kaggle layout, folder or .zip) or any image folder -> TFRecord shards.

    python -m tools.prepare_celeba --src ~/celeba --out data/celeba96

Every image is cropped (default "auto": the original recipe's box (0, 40, 178, 218) for
CelebA's aligned 178x218 faces, the largest centred square for a plain folder), resized to
--size x --size and encoded; its labels go along: attributes as 0/1, landmarks moved into
output pixel coordinates by the same crop and scale, identities as ints. Decoding and resizing
run in worker processes that use PIL only; the main process writes the shards in source order,
so the output is byte-identical whatever --workers is. The record and the manifest are those
of pipeline/schema.py.

Memory stays bounded whatever the source holds; sizes are checked before reading. Source
images over --max_file_mb or --max_megapixels, archive members that inflate more than 200:1
or whose paths are absolute or contain '..', are skipped unread and listed with the reason
in dataset.json. Label files over 32 MB, 500,000 rows or 10,000-character lines stop
with an error naming the file.
"""

from facevae.model.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import sys
from collections.abc import Sequence

from absl import app, flags

from facevae.model import console
from facevae.pipeline import files, recipe, schema, sources
from facevae.pipeline.prepare import WORKERS_PER_CORE, prepare

flags.DEFINE_string("src", None, "CelebA folder or .zip (official or Kaggle), or any image folder.")
flags.DEFINE_string("out", None, "Output folder for the shards and dataset.json.")
flags.DEFINE_integer(
    "size",
    schema.IMAGE_SIZE,
    f"Output height and width in pixels (at most {recipe.MAX_SIZE}).",
    lower_bound=1,
    upper_bound=recipe.MAX_SIZE,
)
flags.DEFINE_string(
    "crop",
    "auto",
    "Cut before resizing: 'auto' (CelebA: 0,40,178,218; folder: center), a box "
    "left,top,right,bottom, 'center' (largest square) or 'none'.",
)
flags.DEFINE_enum(
    "resample", schema.DEFAULT_RESAMPLE, list(recipe.RESAMPLE_FILTERS), "PIL resize filter."
)
flags.DEFINE_enum(
    "format", schema.DEFAULT_FORMAT, list(schema.FORMATS), "Image encoding in the records."
)
flags.DEFINE_integer(
    "quality", schema.DEFAULT_QUALITY, "JPEG quality.", lower_bound=1, upper_bound=100
)
flags.DEFINE_integer(
    "examples_per_shard",
    0,
    "Examples per shard; 0: ~20 MB shards (4096 at 96x96 JPEG).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "workers",
    None,
    f"Worker processes (default: all cores; at most {WORKERS_PER_CORE} per core are started).",
    lower_bound=1,
)
flags.DEFINE_list(
    "split_fractions",
    [str(f) for f in sources.DEFAULT_SPLIT_FRACTIONS],
    "train,validation,test fractions, used only when there is no official partition.",
)
flags.DEFINE_integer("seed", 0, "Seed of the split by --split_fractions.", 0, 2**32 - 1)
flags.DEFINE_integer(
    "limit", None, "Use only the first N images of the source (quick tries).", lower_bound=1
)
flags.DEFINE_enum("compression", "none", ["none", "gzip"], "Shard compression.")
flags.DEFINE_integer(
    "max_file_mb",
    recipe.MAX_FILE_MB,
    "Source images larger than this (MB) are skipped unread, listed in the manifest "
    f"(at most {recipe.FILE_MB_CEILING}).",
    lower_bound=1,
    upper_bound=recipe.FILE_MB_CEILING,
)
flags.DEFINE_integer(
    "max_megapixels",
    recipe.MAX_MEGAPIXELS,
    "Source images with more pixels (millions) are skipped before decoding; also the "
    f"most all workers decode at once (~12 bytes a pixel; at most {recipe.MEGAPIXELS_CEILING}).",
    lower_bound=1,
    upper_bound=recipe.MEGAPIXELS_CEILING,
)
flags.DEFINE_bool("overwrite", False, "Replace an existing dataset at --out.")
flags.mark_flags_as_required(["src", "out"])
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        crop = recipe.parse_crop(FLAGS.crop)
        fractions = sources.check_fractions(FLAGS.split_fractions)
    except ValueError as e:
        raise app.UsageError(console.one_line(e)) from e
    try:
        prepare(
            FLAGS.src,
            FLAGS.out,
            size=FLAGS.size,
            crop=crop,
            resample=FLAGS.resample,
            fmt=FLAGS.format,
            quality=FLAGS.quality,
            examples_per_shard=FLAGS.examples_per_shard,
            workers=FLAGS.workers,
            split_fractions=fractions,
            seed=FLAGS.seed,
            limit=FLAGS.limit,
            compression=None if FLAGS.compression == "none" else "GZIP",
            max_file_mb=FLAGS.max_file_mb,
            max_megapixels=FLAGS.max_megapixels,
            overwrite=FLAGS.overwrite,
        )
    except (sources.PrepareError, files.WriteError) as e:
        console.fail(e, "prepare_celeba: error: ")
    except KeyboardInterrupt:
        sys.exit(f"prepare_celeba: interrupted; {FLAGS.out} was left as it was")


def run() -> None:
    console.run_app(main)


if __name__ == "__main__":
    run()
