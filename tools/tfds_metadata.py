"""Write TensorFlow Datasets' metadata beside a prepared dataset, so that TFDS loads it.

    python -m tools.tfds_metadata --data_dir data/celeba96

Preparation does this itself where tensorflow-datasets is installed (pip install -e
".[tfds]"); this adds it to a dataset prepared without it. It writes dataset_info.json,
features.json and metadata.json into the dataset folder and changes nothing else; then
`tfds.builder_from_directory("data/celeba96").as_dataset(split="train")` reads the shards.
"""

from facevae.model.console import quiet_tensorflow, run_app

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

from absl import app, flags

from facevae.model.console import fail
from facevae.pipeline import files, schema, tfds_metadata

flags.DEFINE_string("data_dir", None, "Prepared dataset to write TFDS's metadata into.")
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        paths = tfds_metadata.write(schema.Manifest.read(FLAGS.data_dir))
    except (tfds_metadata.TfdsMetadataError, schema.DatasetError, files.WriteError) as e:
        fail(e, "tfds_metadata: ")
    print(f"wrote {', '.join(paths)}")


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
