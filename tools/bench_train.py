"""Training throughput, like with like: the seed-style baseline, our VAE under fit, train.py.

    python -m tools.bench_train [--data_dir data/celeba96] [--batch_size 128] [--steps 20]
        [--rounds 3] [--variants seed_keras_bn,seed,fit,train_py]
        [--mixed_precision mixed_float16] [--jit_compile true] [--steps_per_execution 4]

Prints one JSON line per variant: images/s, ms/step, peak RSS, training FLOPs per image
(counted from the layer shapes) and the share of an fp32 matmul peak that this tool measures
itself on the same machine. Variants, each in a fresh process (so peak RSS is its own):

- seed_keras_bn: the original recipe's setup: a Functional keras model (the same encoder
  and decoder, BCE on the logits plus the weighted KL as a second output's loss) trained by
  model.fit on float32 images held in RAM, with Keras' own (unfused) BatchNormalization.
- seed: the same with our networks (fused BatchNormalization).
- fit: our VAE (VAE.train_step) under model.fit on the training tf.data pipeline
  (pipeline.dataset.load), as train.py feeds it.
- train_py: `python train.py --benchmark_steps N`, its one JSON line re-read.

Each variant line carries speed-ups over both seed-style baselines measured in the same
run, and cpu_ms_per_step: CPU seconds of the whole process (every thread) per timed step,
the steadier figure on a shared machine (busy neighbours stretch wall time, not the work);
train.py reports none. On a shared machine, give --rounds > 1: the variants then run
interleaved (all of round 1, then all of round 2, ...) and each reports its best round, so a
busy spell slows every variant alike. Without --data_dir a small synthetic dataset is made
in a temp folder.
"""

from facevae.model.console import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow is imported: hides its C++ start-up log lines

import json
import sys

from absl import app, flags

from facevae.model import bench
from facevae.model.config import JIT_COMPILE, MIXED_PRECISION
from facevae.model.console import fail, run_app
from facevae.model.networks import NetworkConfig
from facevae.pipeline import schema

VARIANTS = bench.VARIANTS
flags.DEFINE_string("data_dir", None, "Prepared dataset; default: synthetic faces in a temp dir.")
flags.DEFINE_integer(
    "synthetic_images", 1024, "Images of the synthetic dataset (no --data_dir).", 1, 1_000_000
)
flags.DEFINE_integer("batch_size", 128, "Images per training step.", 1, 4096)
flags.DEFINE_integer("steps", 20, "Timed training steps per variant, after the warm-up.", 1, 10**6)
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps first (tracing).", 1, 10**6)
flags.DEFINE_integer(
    "rounds", 1, "Interleaved rounds of all variants; each reports its best.", 1, 100
)
flags.DEFINE_integer("z_dim", 256, "Latent dimensions.", 1, 1 << 16)
flags.DEFINE_list("filters", ["32", "64", "128", "256"], "Encoder conv filters (stride 2 each).")
flags.DEFINE_integer(
    "num_images", 1024, "Float32 images the seed-style variants hold in RAM.", 1, 1 << 20
)
flags.DEFINE_enum(
    "mixed_precision",
    "none",
    list(MIXED_PRECISION),
    "Keras dtype policy of the fit and train_py variants (the baselines stay float32).",
)
flags.DEFINE_integer("steps_per_execution", 1, "Of the fit and train_py variants.", 1, 10**4)
flags.DEFINE_enum(
    "jit_compile",
    "auto",
    list(JIT_COMPILE),
    "XLA for the fit and train_py variants, as train.py's flag (auto: on GPU/TPU only).",
)
flags.DEFINE_list("variants", list(VARIANTS), f"Variants to run, any of {', '.join(VARIANTS)}.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.variants) - set(bench.VARIANTS))
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; choose from {list(bench.VARIANTS)}.")
    if FLAGS.num_images < FLAGS.batch_size:
        raise app.UsageError(
            f"--num_images={FLAGS.num_images} is below --batch_size={FLAGS.batch_size}; raise it."
        )
    try:
        filters = tuple(int(f) for f in FLAGS.filters)
    except ValueError:
        raise app.UsageError(
            f"--filters={','.join(FLAGS.filters)}: give integers, e.g. 32,64,128,256"
        ) from None
    if not FLAGS.data_dir and FLAGS.synthetic_images < FLAGS.batch_size:
        raise app.UsageError(
            f"--synthetic_images={FLAGS.synthetic_images} is below --batch_size="
            f"{FLAGS.batch_size}; raise it or give --data_dir."
        )
    try:
        with bench.dataset_dir(FLAGS.data_dir, FLAGS.synthetic_images, 96) as data_dir:
            manifest = schema.Manifest.read(data_dir)
            shape, num_train = manifest.image_shape, manifest.num_examples("train")
            if num_train < FLAGS.batch_size:
                raise app.UsageError(
                    f"--data_dir {data_dir}: its train split has {num_train} images, fewer than "
                    f"--batch_size={FLAGS.batch_size}; lower it."
                )
            network = NetworkConfig(image_shape=shape, filters=filters, z_dim=FLAGS.z_dim)
            reports = bench.benchmark(
                FLAGS.variants,
                FLAGS.rounds,
                network=network,
                data_dir=data_dir,
                batch_size=FLAGS.batch_size,
                steps=FLAGS.steps,
                warmup_steps=FLAGS.warmup_steps,
                num_images=min(FLAGS.num_images, num_train),
                mixed_precision=FLAGS.mixed_precision,
                steps_per_execution=FLAGS.steps_per_execution,
                jit_compile=FLAGS.jit_compile,
            )
    except (schema.DatasetError, ValueError, RuntimeError, OSError) as e:
        fail(e, "bench_train: ")
    for report in reports:
        print(json.dumps(report))
    summary = ", ".join(f"{r['variant']} {r['images_per_s']:.1f} img/s" for r in reports)
    print(f"bench_train: {summary}", file=sys.stderr)


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
