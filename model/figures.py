"""The README's figures and results table, made in one process by the library itself.

    from facevae.model import figures
    print(figures.make_figures(figures.FigureConfig()))   # what tools/make_figures.py calls

Trains or reuses, each in a workdir under `runs_dir`, the demo VAE (TrainConfig.demo: the
demo's settings, DEMO_SETTINGS), the same networks as a plain autoencoder (mode "ae") and
the VAE at each of `kl_weights`, all with trainer.train_and_evaluate; makes sure the
dataset has its offline judge (model/judge.py, trained once per dataset); evaluates every
run twice with model/evaluation.py, its codes drawn from N(0, I) (eval.json) and from the
mixture prior (eval_gmm.json), and draws the pictures with model/sampling.py. Writes under
`out_dir`:

  samples.png          VAE: 16 faces from z ~ N(0, I)
  reconstructions.png  VAE: 8 test images above their reconstructions
  interpolation.png    VAE: spherical paths between two pairs of test images
  eyeglasses.png       VAE: 2 test images, then with the Eyeglasses vector added at strengths
                       -2..2 (left out when the dataset has no Eyeglasses label)
  traversal.png        VAE: the 4 latent dimensions of most KL, each from -3 to 3 in 4 steps
  boundary_ae.png      AE, then VAE: decoded z ~ U[0, b] per row for b = 1, 5, 10, 50, and
  boundary_vae.png     a last row from N(0, I): the AE-vs-VAE experiment
  results.md           the table of every run's test numbers (also printed), with the judge's
                       Fréchet distance of random samples from the test images per prior

A run is reused when its model.keras exists and this module trained it with the same
TrainConfig, the same code (a digest of model/ and pipeline/, the figures' own modules left
out) and the same dataset (schema.Manifest.version), and its config.json is unchanged
(figure_run.json records them and the training's wall time); otherwise it is trained again,
replacing it. The evaluations and pictures are made again on every call.
Every file appears whole: the pictures and the table are made in a stage folder inside
`out_dir` (pipeline.files.stage_dir), checked (at most MAX_PNG_BYTES each) and only then
moved into place together. Every run's numbers also go to TensorBoard (logs/eval/, for the
HParams dashboard: model/dashboards.py).

`jobs` > 1 evaluates and draws the runs in that many worker processes (spawned: each
starts its own TensorFlow, and a script calling this needs the `if __name__ == "__main__":`
guard); 1 does everything in this process. The settings are FigureConfig's
(model/figure_config.py); problems are FigureError, one line naming the setting in
backticks (and, for a dataset, its `data_dir`).

One module, over 500 lines, because its parts share a run's files: figure_run.json,
eval.json and eval_gmm.json are written here and read back here, by the reuse rule (stale)
and by the table.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import tensorflow as tf

from facevae.model import analysis, codes, console, dashboards, evaluation, judge, sampling
from facevae.model import prior as priors
from facevae.model import workdir as wd
from facevae.model.config import TrainConfig, TrainError
from facevae.model.figure_config import KL_WEIGHTS as KL_WEIGHTS  # the notebook's names
from facevae.model.figure_config import FigureConfig as FigureConfig
from facevae.model.figure_config import FigureError as FigureError
from facevae.model.figure_config import parse_train_flags as parse_train_flags
from facevae.model.networks import ConfigError
from facevae.model.sample_config import SampleConfig, SampleError
from facevae.model.trainer import train_and_evaluate
from facevae.pipeline import files, schema, synthetic
from facevae.pipeline.progress import duration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package's root
MAX_PNG_BYTES = 300_000  # the README's figures stay small
MAX_JSON_BYTES = 1 << 20  # config.json, eval.json, figure_run.json: ours are a few KB
RUN_RECORD = "figure_run.json"
GMM_RESULTS = "eval_gmm.json"  # evaluation.RESULTS_FILE's twin for the mixture prior
STAGE = "make_figures"  # out_dir/.make_figures.incomplete while the files are made
# The code a training run depends on: every .py file under these folders, at any depth,
# but the figures' own (their table and pictures are made again on every call anyway).
CODE_DIRS = ("model", "pipeline")
CODE_LEFT_OUT = ("model/figures.py", "model/figure_config.py")
MAX_CODE_BYTES = 1 << 20  # per source file; ours are a few KB


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: its workdir name, its row label and its settings."""

    name: str
    label: str
    config: TrainConfig


@dataclasses.dataclass(frozen=True)
class Figure:
    """One picture: <name>.png from the run `run`, drawn with these SampleConfig settings."""

    name: str
    run: str
    settings: tuple[tuple[str, Any], ...]


def _figure(name: str, run: str, **settings: Any) -> Figure:
    return Figure(name, run, tuple(settings.items()))


# The pictures. A decoded 96x96 face of the demo takes 11-16 KB of PNG (measured: noise and
# checkerboard compress badly), so each grid holds at most 16 of them to stay under
# MAX_PNG_BYTES with some margin (sizes of one demo run noted).
BOUNDARIES = (1, 5, 10, 50)  # boundary rows: z ~ U[0, b] for each b, then a row from N(0, I)
FIGURES = (
    _figure("samples", "vae", mode="random", n=16),  # 4 x 4, 235 KB
    _figure("reconstructions", "vae", mode="reconstruct", n=8),  # 2 x 8, 223 KB
    _figure(  # 2 rows: test image, 6 steps, test image; 239 KB
        "interpolation",
        "vae",
        mode="interpolate",
        method="spherical",
        indices=(0, 1, 2, 3),
        steps=6,
    ),
    _figure("eyeglasses", "vae", mode="attribute", attribute="Eyeglasses", n=2),  # ~180 KB
    _figure("traversal", "vae", mode="traverse", num_dims=4, steps=4),  # 4 x 4; ~225 KB
    _figure("boundary_ae", "ae", mode="boundary", boundaries=BOUNDARIES, n=3),  # 5 x 3; ~245 KB
    _figure("boundary_vae", "vae", mode="boundary", boundaries=BOUNDARIES, n=3),
)


# --------------------------------------------------------------------------- the whole job


def runs_of(config: FigureConfig, data_dir: str) -> list[Run]:
    """The runs of the table: the AE, the demo VAE and one VAE per `kl_weights` value."""
    base = TrainConfig.demo(data_dir=data_dir, **config.train_settings)
    runs = [
        Run("ae", "AE", dataclasses.replace(base, mode="ae")),
        Run("vae", "VAE (demo)", base),
    ]
    runs += [
        Run(f"vae_kl_{w:g}", "VAE", dataclasses.replace(base, kl_weight=w))
        for w in config.kl_weights
    ]
    return runs


def make_figures(config: FigureConfig) -> str:
    """Trains or reuses the runs, evaluates them, writes the PNGs and results.md under
    `out_dir`; prints the table and returns the one summary line. FigureError if it cannot;
    callbacks.Interrupted on SIGINT/SIGTERM during a training (finished runs are reused)."""
    start = time.perf_counter()
    out_dir, runs_dir = os.path.abspath(config.out_dir), os.path.abspath(config.runs_dir)
    data_dir = os.path.abspath(config.data_dir) if config.data_dir else None
    if data_dir:  # a wrong path is one line now, not after the first training
        _read_manifest(data_dir)
    _make_folder("out_dir", out_dir)
    _make_folder("runs_dir", runs_dir)
    made_seconds = 0.0
    if data_dir is None:
        data_dir = synthetic.demo_data_dir()
        if not os.path.isfile(schema.manifest_path(data_dir)):
            begin = time.perf_counter()
            try:
                synthetic.make_demo_dataset(data_dir)
            except (schema.DatasetError, OSError) as e:
                raise FigureError(f"the demo's dataset in {data_dir}: {e}", e) from e
            made_seconds = time.perf_counter() - begin
    manifest = _read_manifest(data_dir)
    code = code_version(ROOT)
    runs = runs_of(config, data_dir)
    workdirs = {run.name: os.path.join(runs_dir, run.name) for run in runs}
    trained = 0
    for run in runs:
        if _train(run, workdirs[run.name], config.overwrite, code, manifest, made_seconds):
            trained, made_seconds = trained + 1, 0.0  # the first run trained made the data
    judge_note = ensure_judge(manifest)
    figures = choose_figures(manifest)

    try:
        stage = files.stage_dir(out_dir, STAGE)
    except OSError as e:
        raise FigureError(f"`out_dir`={out_dir}: cannot write there ({e.strerror})", e) from e
    try:
        tasks = [
            RunTask(
                workdirs[run.name],
                config.seed,
                tuple(
                    (f.name, f.settings, os.path.join(stage, f.name + ".png"))
                    for f in figures
                    if f.run == run.name
                ),
            )
            for run in runs
        ]
        for run, done in zip(runs, run_tasks(tasks, config.jobs), strict=True):
            print(f"{run.name}: evaluated ({done})", flush=True)
        for f in figures:
            check_size(os.path.join(stage, f.name + ".png"), f.name + ".png")
        table = results_table(runs, workdirs, manifest, config.data_dir is None, judge_note)
        files.write_bytes(os.path.join(stage, "results.md"), table.encode())
        files.publish_stage(out_dir, STAGE)  # each file whole, all checked before the first
    except BaseException as e:
        files.discard_stage(out_dir, STAGE)
        if isinstance(e, OSError):  # a full disk: what was in `out_dir` is unchanged
            raise FigureError(f"`out_dir`={out_dir}: {e}", e) from e
        raise
    remove_left_out(figures, out_dir)
    print(table, end="")
    shown = os.path.relpath(out_dir)
    shown = out_dir if shown.startswith("..") else shown
    return (
        f"figures: {len(figures)} PNGs and results.md in {shown}{os.sep} (runs: {trained} "
        f"trained, {len(runs) - trained} reused) in {duration(time.perf_counter() - start)}"
    )


def _make_folder(name: str, path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise FigureError(
            f"`{name}`={path}: cannot write there ({e.strerror}); choose another"
        ) from e


def _read_manifest(data_dir: str) -> schema.Manifest:
    try:
        return schema.Manifest.read(data_dir)
    except schema.DatasetError as e:
        raise FigureError(f"`data_dir`: {e}", e) from None


# --------------------------------------------------------------------------- training


def _train(
    run: Run, workdir: str, overwrite: bool, code: str, manifest: schema.Manifest,
    made_seconds: float,
) -> bool:  # fmt: skip
    """Trains the run unless a finished one matches; True if it trained."""
    reason = "`overwrite`" if overwrite else stale(workdir, run.config, code, manifest.version)
    if reason is None:
        print(f"{run.name}: reused {workdir} (trained with the same settings; `overwrite` "
              "trains it again)")  # fmt: skip
        return False
    print(f"{run.name}: training ({reason}) in {workdir}", flush=True)
    begin = time.perf_counter()
    try:
        train_and_evaluate(run.config, workdir, overwrite=os.path.lexists(wd.config_path(workdir)))
    except (TrainError, ConfigError, wd.WorkdirError, schema.DatasetError, OSError) as e:
        raise FigureError(f"training {run.name} in {workdir}: {e}", e) from e
    seconds = time.perf_counter() - begin + made_seconds
    path = os.path.join(workdir, RUN_RECORD)
    record = {
        "config": run.config.to_dict(),
        "seconds": round(seconds, 1),
        "made_data": made_seconds > 0,  # the first run of an empty demo cache made the data
        "machine": machine(),
        "code_sha256": code,
        "flags": stored_flags(workdir),
        "dataset": manifest.version,
    }
    try:
        files.write_json(path, record)
    except OSError as e:
        raise FigureError(str(e), e) from e
    wd.note_output(workdir, path)
    print(f"{run.name}: trained in {duration(seconds)}")
    return True


def stale(workdir: str, config: TrainConfig, code: str, dataset_version: str) -> str | None:
    """Why the run in workdir cannot be reused for `config`, the code digest `code` and
    the dataset version, or None if it can."""
    if not os.path.isfile(os.path.join(workdir, wd.MODEL_FILE)):
        return "no finished run"
    path = os.path.join(workdir, RUN_RECORD)
    if not os.path.isfile(path):
        return f"no {RUN_RECORD}"
    try:
        record = read_json(path)
        stored = stored_flags(workdir)
    except FigureError as e:
        return str(e)
    if record.get("config") != json.loads(json.dumps(config.to_dict())):
        return "trained with other settings"
    if record.get("code_sha256") != code:
        return "the code changed (model/ or pipeline/)"
    if record.get("flags") != stored:
        return f"{wd.config_path(workdir)} changed since"
    if record.get("dataset") != dataset_version:
        return "its dataset changed"
    return None


def code_version(root: str) -> str:
    """sha256 over the code under `root` that a training run depends on (the .py files of
    CODE_DIRS but CODE_LEFT_OUT): their sorted relative paths and bytes."""
    paths = []
    for folder in CODE_DIRS:
        for parent, dirs, names in os.walk(os.path.join(root, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            relative = os.path.relpath(parent, root)
            paths += [os.path.join(relative, n) for n in names if n.endswith(".py")]
    digest = hashlib.sha256()
    for path in sorted(p.replace(os.sep, "/") for p in paths):
        if path in CODE_LEFT_OUT:
            continue
        try:
            with open(os.path.join(root, path), "rb") as f:
                content = f.read(MAX_CODE_BYTES + 1)
        except OSError as e:
            message = f"cannot read {path} ({e.strerror}): is {root} a whole checkout?"
            raise FigureError(message) from e
        if len(content) > MAX_CODE_BYTES:
            raise FigureError(f"{path} is over {MAX_CODE_BYTES:,} bytes: not a source file")
        # Lengths keep the digest unambiguous: no two trees hash the same stream.
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def machine() -> str:
    """Cores and CPU model of this machine, e.g. "2 cores, Intel(R) Xeon(R) ..."."""
    line = f"{os.cpu_count()} cores"
    try:
        with open("/proc/cpuinfo") as f:
            for text in f:
                if text.startswith("model name"):
                    return f"{line}, {text.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return line


# --------------------------------------------------------------------------- judge


def ensure_judge(manifest: schema.Manifest) -> str | None:
    """Makes sure the dataset has its judge, in its default folder beside the dataset
    (trained now, once, when none there fits it); returns None, or why the judge's numbers
    are left out (a dataset without attribute labels)."""
    directory = judge.default_dir(manifest.data_dir)
    try:
        judge.load(directory, manifest)
        return None
    except judge.JudgeError as e:
        if not manifest.attribute_names:
            return f"{manifest.path} lists no attributes for a judge to learn"
        print(f"judge: training one for {manifest.data_dir} ({e})", flush=True)
    try:
        report = judge.train(manifest, verbose=0)
        judge.load(directory, manifest)
    except (judge.JudgeError, schema.DatasetError, OSError) as e:
        raise FigureError(f"the judge for {manifest.data_dir}: {e}", e) from e
    print(f"judge: held-out accuracy {report.mean_accuracy:.3f} (majority "
          f"{report.mean_baseline:.3f})", flush=True)  # fmt: skip
    return None


# --------------------------------------------------------------------------- evaluate and draw


@dataclasses.dataclass(frozen=True)
class RunTask:
    """What one worker does for one run: evaluate it under both priors, draw its pictures
    (name, SampleConfig settings, PNG path)."""

    workdir: str
    seed: int
    figures: tuple[tuple[str, tuple[tuple[str, Any], ...], str], ...]


PRIOR_RESULTS = (("normal", evaluation.RESULTS_FILE), ("gmm", GMM_RESULTS))


def finish_run(task: RunTask) -> str:
    """Evaluates a run (eval.json, eval_gmm.json, logs/eval/) and draws its pictures, with
    one restored model; returns what it did, in words. FigureError naming the run."""
    name = os.path.basename(task.workdir)
    try:
        model, run_config = wd.restore(task.workdir)
        manifest = schema.Manifest.read(run_config.flags.data_dir)
        numbers: dict[str, float | None] = {}
        for prior, file_name in PRIOR_RESULTS:
            out = os.path.join(task.workdir, file_name)
            settings = evaluation.EvalConfig(workdir=task.workdir, inception_weights="none",
                                             prior=prior, seed=task.seed, out=out)  # fmt: skip
            results = evaluation.evaluate(model, settings, manifest)
            results["json"] = out
            files.write_json(out, results)  # as evaluation.run writes it
            wd.note_output(task.workdir, out)
            numbers[f"judge_fd_{prior}"] = results.get("judge_fd")
            if prior == "normal":
                numbers.update({k: results[k] for k in dashboards.EVAL_METRICS if k in results})
        latest = tf.train.latest_checkpoint(os.path.join(task.workdir, wd.CKPT_DIR))
        step = int(latest.rsplit("-", 1)[1]) if latest else 0
        dashboards.write_eval_metrics(task.workdir, numbers, step)
        for _, settings, out in task.figures:
            picture_config = SampleConfig(workdir=task.workdir, seed=task.seed, out=out,
                                          **dict(settings))  # fmt: skip
            sampling.write(sampling.make(model, manifest, picture_config), picture_config)
    except (
        evaluation.EvaluationError, SampleError, codes.CodesError, wd.WorkdirError,
        schema.DatasetError, judge.JudgeError, OSError,
    ) as e:  # fmt: skip
        raise FigureError(f"{name}: {e}", e) from e
    drawn = ", ".join(f[0] + ".png" for f in task.figures)
    return "N(0, I) and mixture prior" + (f"; drew {drawn}" if drawn else "")


def run_tasks(tasks: list[RunTask], jobs: int) -> list[str]:
    """finish_run of every task, in this process (`jobs` 1) or in `jobs` spawned worker
    processes; the first failure (in order) is raised."""
    if jobs == 1 or len(tasks) == 1:
        return [finish_run(task) for task in tasks]
    context = multiprocessing.get_context("spawn")  # a fork of a TensorFlow process can hang
    with concurrent.futures.ProcessPoolExecutor(
        min(jobs, len(tasks)), mp_context=context, initializer=console.quiet_tensorflow
    ) as pool:
        futures = [pool.submit(finish_run, task) for task in tasks]
        done = []
        for future in futures:
            try:
                done.append(future.result())
            except (FigureError, BrokenProcessPool) as e:
                pool.shutdown(cancel_futures=True)
                if isinstance(e, BrokenProcessPool):
                    raise FigureError(
                        "a worker process ended unexpectedly (out of memory?); `jobs` 1 "
                        "evaluates and draws in this process"
                    ) from e
                raise
    return done


def choose_figures(manifest: schema.Manifest) -> list[Figure]:
    """The pictures this dataset allows: eyeglasses.png only when it has that label."""
    if "Eyeglasses" in manifest.attribute_names:
        return list(FIGURES)
    print("eyeglasses.png left out: the dataset has no Eyeglasses label")
    return [f for f in FIGURES if f.name != "eyeglasses"]


def remove_left_out(figures: list[Figure], out_dir: str) -> None:
    """Removes an earlier picture that this dataset does not allow (an earlier dataset's
    would not match the new table); called once every new file is in place."""
    for figure in FIGURES:
        old = os.path.join(out_dir, figure.name + ".png")
        if figure not in figures and os.path.isfile(old):
            os.remove(old)
            print(f"removed the earlier {os.path.relpath(old)}: made from another dataset")


# --------------------------------------------------------------------------- checks and table


def check_size(path: str, name: str) -> None:
    size = os.path.getsize(path)
    if size > MAX_PNG_BYTES:
        raise FigureError(
            f"{name} is {size:,} bytes, over the limit of {MAX_PNG_BYTES:,}: these figures are "
            "sized for the README's demo; for other data draw with model/sampling.py "
            "directly (nothing in `out_dir` was replaced)"
        )


def read_json(path: str) -> dict[str, Any]:
    """A small JSON object of ours; FigureError naming the file if missing or damaged."""
    try:
        if os.path.getsize(path) > MAX_JSON_BYTES:
            raise FigureError(f"{path} is over {MAX_JSON_BYTES} bytes: not a file of ours")
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError) as e:
        raise FigureError(f"cannot read {path} ({e}); `overwrite` trains the runs afresh") from e
    if not isinstance(content, dict):
        raise FigureError(f"{path} holds no JSON object; `overwrite` trains the runs afresh")
    return content


def stored_flags(workdir: str) -> dict[str, Any]:
    """The flags in the workdir's config.json; FigureError naming the file if it lacks them."""
    path = wd.config_path(workdir)
    found = read_json(path).get("flags")
    if not isinstance(found, dict) or not isinstance(found.get("data_dir"), str):
        raise FigureError(
            f"{path} has no flags.data_dir: not a config.json of ours; `overwrite` trains "
            "the runs afresh"
        )
    return found


HEADER = (
    "| run | kl_weight | β | test ELBO (nats) | bits/dim | PSNR (dB) | KL (nats) "
    "| active units | judge FD, N(0, I) | judge FD, mixture | training time (s) |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
)


def results_table(
    runs: list[Run],
    workdirs: dict[str, str],
    manifest: schema.Manifest,
    demo: bool,
    judge_note: str | None,
) -> str:
    """results.md: one row per run from its eval.json, eval_gmm.json, config.json and
    figure_run.json, then the notes that say how each number was measured."""
    rows, machines, made_data = [], [], False
    for run in runs:
        folder = workdirs[run.name]
        config = read_json(wd.config_path(folder))
        record = read_json(os.path.join(folder, RUN_RECORD))
        results = read_json(os.path.join(folder, evaluation.RESULTS_FILE))
        mixture = read_json(os.path.join(folder, GMM_RESULTS))
        try:
            rows.append(table_row(run, config, record, results, mixture))
        except (KeyError, TypeError, ValueError) as e:
            raise FigureError(
                f"{folder}: config.json, {RUN_RECORD}, eval.json or {GMM_RESULTS} lacks {e}: "
                "`overwrite` trains the runs afresh"
            ) from e
        made_data |= bool(record.get("made_data"))
        if record.get("machine") not in machines:
            machines.append(record.get("machine"))
    splits = {name: split.num_examples for name, split in manifest.splits.items()}
    height, width, _ = manifest.image_shape
    counts = " / ".join(f"{name} {n:,}" for name, n in splits.items())
    source = (
        "the demo's synthetic faces (tools.make_synthetic), not CelebA" if demo
        else manifest.data_dir
    )  # fmt: skip
    generated = results.get("fid_protocol", {}).get("generated")
    if judge_note:
        judge_line = f"Judge FD left out: {judge_note}."
    else:
        judge_line = (
            f"Judge FD: Fréchet distance between {generated:,} images decoded from random "
            f"codes and as many {results['split']} images, in the 128-d feature space of the "
            "dataset's offline attribute judge (model/judge.py); lower is closer to real "
            "faces. The codes come from N(0, I), the prior a VAE's KL term fits its codes to "
            "and which the AE never saw, and from the mixture prior: a "
            f"{priors.DEFAULT_COMPONENTS}-component Gaussian mixture fitted to the training "
            "images' codes."
        )
    notes = [
        f"Data: {source}: {sum(splits.values()):,} images of {width}×{height} ({counts}); "
        f"numbers on the {results['split']} split, evaluated with seed {results['seed']} "
        "(model/evaluation.py).",
        "β = kl_weight × H·W·C / z_dim, the weight on the KL of a proper ELBO; KL in nats per "
        "image (kl_loss × z_dim); active units: latent dims whose mean code varies over the "
        f"test images (variance > {analysis.ACTIVE_UNIT_THRESHOLD:g}).",
        judge_line,
        "† AE: no KL term, so this is minus the reconstruction NLL, not a bound.",
        "Training time: wall time of each run's trainer.train_and_evaluate, one run after "
        "the other in one process, on "
        + "; ".join(str(m) for m in machines)
        + ("; * includes making the synthetic dataset." if made_data else "."),
    ]
    return HEADER + "".join(rows) + "\n" + "\n\n".join(notes) + "\n"


def _fd(results: dict) -> str:
    value = results.get("judge_fd")
    return "—" if value is None else f"{value:.1f}"


def table_row(run: Run, config: dict, record: dict, results: dict, mixture: dict) -> str:
    """One run's line of results.md."""
    network, run_flags = config["model"]["network"], config["flags"]
    z_dim = network["z_dim"]
    vae = run_flags["mode"] == "vae"
    kl_weight = run_flags["kl_weight"]
    beta = kl_weight * math.prod(network["image_shape"]) / z_dim
    mark = "" if vae else "†"
    cells = [
        run.label,
        f"{kl_weight:g}" if vae else "—",
        f"{beta:.3g}" if vae else "—",
        f"{results['elbo_nats']:.1f}{mark}",
        f"{results['bits_per_dim']:.4f}{mark}",
        f"{results['psnr_db']:.2f}",
        f"{results['kl_loss'] * z_dim:.1f}" if vae else "—",
        f"{results['active_units']} / {z_dim}",
        _fd(results),
        _fd(mixture),
        f"{record['seconds']:.0f}{'*' if record.get('made_data') else ''}",
    ]
    return "| " + " | ".join(cells) + " |\n"
