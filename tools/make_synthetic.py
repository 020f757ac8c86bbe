"""Procedural cartoon faces written as a CelebA source, for demos and tests without a download.

`python -m tools.make_synthetic --out SRC --n 2000` writes SRC in the official CelebA layout
(or `--layout kaggle`), which `tools.prepare_celeba` then turns into TFRecords exactly as it
does real CelebA:

    official: SRC/img_align_celeba/000001.jpg ...   178x218 RGB JPEG, quality 95
              SRC/list_eval_partition.txt           "000001.jpg 0" (0 train, 1 valid., 2 test)
              SRC/list_attr_celeba.txt              count, 40 names, "000001.jpg  1 -1 ..."
              SRC/list_landmarks_align_celeba.txt   count, 10 names, whitespace-padded ints
              SRC/identity_CelebA.txt               "000001.jpg 7"
    kaggle:   SRC/img_align_celeba/img_align_celeba/*.jpg and the first three as .csv files
              ("image_id,..." headers, comma separated); Kaggle has no identity file.

Every face is drawn from its own RNG, derived from (seed, index), so the output is
byte-identical whatever the number of workers. About n // 20 + 1 people share fixed face
geometry, skin tone, hair and beard; expression, accessories, background, clothes and a
small alignment jitter vary per image. The split is a seeded 80/10/10 shuffle.

Attributes drawn and recorded truthfully (1 when visible in the picture, else -1):
    Male, Smiling, Mouth_Slightly_Open, Eyeglasses, Wearing_Hat, Bangs, Bald,
    Black_Hair, Blond_Hair, Brown_Hair, Gray_Hair (at most one; red hair sets none),
    Wavy_Hair, Straight_Hair, Mustache, Goatee, No_Beard, 5_o_Clock_Shadow, Pale_Skin,
    Rosy_Cheeks, Wearing_Lipstick, Wearing_Earrings, Wearing_Necklace, Wearing_Necktie,
    Narrow_Eyes, Bushy_Eyebrows.
Every other CelebA attribute (Attractive, Young, Big_Nose, ...) is not drawn and is -1 in
every row. Landmarks are the pupil centres, the nose tip and the mouth corners as drawn
("left" is the image's left, as in CelebA).
"""

from collections.abc import Sequence

from absl import app, flags

from facevae.model import console
from facevae.pipeline import files, synthetic

flags.DEFINE_string("out", None, "Folder to create with the synthetic CelebA source.")
flags.DEFINE_integer(
    "n",
    2000,
    f"Number of faces to draw, at most {synthetic.MAX_IMAGES:,}.",
    lower_bound=1,
    upper_bound=synthetic.MAX_IMAGES,
)
flags.DEFINE_integer(
    "seed", 0, "Random seed; the same seed gives byte-identical files.", 0, 2**32 - 1
)
flags.DEFINE_integer(
    "workers",
    None,
    "Processes drawing faces (default: all cores; at most 4 per core are started).",
    lower_bound=1,
)
flags.DEFINE_enum(
    "layout", "official", list(synthetic.LAYOUTS), "CelebA layout: txt or Kaggle csv."
)
flags.DEFINE_bool("overwrite", False, "Replace an existing --out folder.")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {list(argv[1:])}: all options are flags")
    try:
        synthetic.write_source(
            FLAGS.out,
            FLAGS.n,
            seed=FLAGS.seed,
            layout=FLAGS.layout,
            workers=FLAGS.workers,
            overwrite=FLAGS.overwrite,
        )
    except (FileExistsError, ValueError, files.WriteError) as e:
        console.fail(e, "make_synthetic: error: ")


def run() -> None:
    console.run_app(main)


if __name__ == "__main__":
    run()
