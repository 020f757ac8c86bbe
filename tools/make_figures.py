"""The README's figures and results table, made by the documented commands themselves.

    python -m tools.make_figures                 # trains 4 demo runs once (minutes), then draws
    python -m tools.make_figures --overwrite     # trains and draws them all again

Trains or reuses, each in a workdir under --runs_dir, the demo VAE (`train.py --demo`,
exactly), the same networks as a plain autoencoder (`--mode ae`) and the VAE at the
--kl_weights; evaluates each (`evaluate.py --inception_weights none`) and draws with
`sample.py --seed`, so every picture is what a user's command gives. Writes under --out_dir:

  samples.png          VAE: 16 faces from z ~ N(0, I)
  reconstructions.png  VAE: 8 test images above their reconstructions
  interpolation.png    VAE: spherical paths between two pairs of test images
  eyeglasses.png       VAE: 2 test images, then with the Eyeglasses vector added at strengths
                       -2..2 (left out when the dataset has no Eyeglasses label)
  traversal.png        VAE: the 4 latent dimensions of most KL, each from -3 to 3 in 4 steps
  boundary_ae.png      AE, then VAE: decoded z ~ U[0, b] per row for b = 1, 5, 10, 50, and
  boundary_vae.png     a last row from N(0, I): the AE-vs-VAE experiment
  results.md           the table of every run's test numbers (also printed)

A run is reused when its model.keras exists and this tool trained it with the same command,
the same code (a digest of train.py, model/, pipeline/ and the dataset tools), the same
dataset and an unchanged config.json (its figure_run.json records them and the training's
wall time); otherwise it is trained again with --overwrite. Every file appears whole: the
pictures are made in a temporary folder inside --out_dir, checked (at most 300 KB each) and
only then moved into place.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any

from absl import app, flags

from facevae.model import analysis
from facevae.model.console import duration, run_app
from facevae.pipeline.schema import (
    DatasetError,
    manifest_path,
    read_manifest,
    write_bytes_atomic,
    write_json_atomic,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The extra KL weights of the table: x0.25 and x4 the demo's kl_weight (1.3e-3, train.py's
# default); keep them around it when the demo changes.
KL_WEIGHTS = ("3.25e-4", "5.2e-3")
MAX_KL_WEIGHTS = 8
MAX_PNG_BYTES = 300_000  # the README's figures stay small
MAX_JSON_BYTES = 1 << 20  # config.json, eval.json, figure_run.json: ours are a few KB
RUN_RECORD = "figure_run.json"
# train.py flags this tool sets itself: --train_flags may not give them.
OWN_TRAIN_FLAGS = ("demo", "workdir", "data_dir", "mode", "kl_weight", "overwrite")
# The code a training run depends on (train.py's defaults and --demo settings included): a
# run trained by other code is stale. Folders: every .py file in them, at any depth.
CODE_FILES = ("train.py", "tools/make_synthetic.py", "tools/prepare_celeba.py")
CODE_DIRS = ("model", "pipeline")
MAX_CODE_BYTES = 1 << 20  # per source file; ours are a few KB


def define_flags() -> None:
    """The tool's flags; defined by run(), so tests can import the module without them."""
    flags.DEFINE_string("out_dir", "docs", "Folder for the PNGs and results.md.")
    flags.DEFINE_string(
        "runs_dir", os.path.join("runs", "figures"), "Folder of the runs' workdirs."
    )
    flags.DEFINE_string("data_dir", None, "Dataset (default: the demo's synthetic faces).")
    flags.DEFINE_string(
        "train_flags",
        "",
        "Extra train.py flags for every run, one string: '--epochs=2 --z_dim=32'.",
    )
    flags.DEFINE_list(
        "kl_weights",
        list(KL_WEIGHTS),
        "KL weights of the extra VAE runs; the defaults bracket the demo's kl_weight.",
    )
    flags.DEFINE_integer("seed", 0, "Seed of sample.py and evaluate.py: the same seed, same files.")
    flags.DEFINE_integer("jobs", 2, "evaluate.py / sample.py commands run at once (training: one).")
    flags.DEFINE_bool("overwrite", False, "Train every run again, even if a finished one matches.")


FLAGS = flags.FLAGS


class FigureError(Exception):
    """A bad flag or a failed command: the message is one line naming it."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The flags, checked, with paths made absolute (the commands run in the repository)."""

    out_dir: str
    runs_dir: str
    data_dir: str | None
    train_flags: tuple[str, ...]
    kl_weights: tuple[str, ...]
    seed: int
    jobs: int
    overwrite: bool


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: its workdir name, its row in the table and its extra train.py flags."""

    name: str
    label: str
    extra: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Figure:
    """One sample.py picture: <name>.png from the run `run` with these flags."""

    name: str
    run: str
    args: tuple[str, ...]


# The pictures. A decoded 96x96 face of the demo takes 11-16 KB of PNG (measured: noise and
# checkerboard compress badly), so each grid holds at most 16 of them to stay under
# MAX_PNG_BYTES with some margin (sizes of one demo run noted).
BOUNDARIES = "1,5,10,50"  # boundary rows: z ~ U[0, b] for each b, then a row from N(0, I)
FIGURES = (
    Figure("samples", "vae", ("--mode", "random", "--n", "16")),  # 4 x 4, 235 KB
    Figure("reconstructions", "vae", ("--mode", "reconstruct", "--n", "8")),  # 2 x 8, 223 KB
    Figure(  # 2 rows: test image, 6 steps, test image; 239 KB
        "interpolation",
        "vae",
        ("--mode", "interpolate", "--method", "spherical", "--indices", "0,1,2,3", "--steps", "6"),
    ),
    Figure(  # 2 rows: test image, then strengths -2..2; ~180 KB
        "eyeglasses", "vae", ("--mode", "attribute", "--attribute", "Eyeglasses", "--n", "2")
    ),
    Figure(  # 4 rows (dims) of 4 steps, -3 to 3; ~225 KB
        "traversal", "vae", ("--mode", "traverse", "--num_dims", "4", "--steps", "4")
    ),
    Figure(  # 5 rows of 3; ~245 KB
        "boundary_ae", "ae", ("--mode", "boundary", "--boundaries", BOUNDARIES, "--n", "3")
    ),
    Figure("boundary_vae", "vae", ("--mode", "boundary", "--boundaries", BOUNDARIES, "--n", "3")),
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        settings = check_flags(
            FLAGS.out_dir,
            FLAGS.runs_dir,
            FLAGS.data_dir,
            FLAGS.train_flags,
            FLAGS.kl_weights,
            FLAGS.seed,
            FLAGS.jobs,
            FLAGS.overwrite,
        )
        print(make_figures(settings))
    except FigureError as e:
        sys.exit(f"make_figures: {e}")
    except KeyboardInterrupt:
        sys.exit("make_figures: interrupted; finished runs are reused next time")


def check_flags(
    out_dir: str,
    runs_dir: str,
    data_dir: str | None,
    train_flags: str,
    kl_weights: list[str],
    seed: int,
    jobs: int,
    overwrite: bool,
) -> Settings:
    """The flags as Settings; FigureError naming the first bad one and the fix."""
    try:
        extra = tuple(shlex.split(train_flags))
    except ValueError as e:
        raise FigureError(f"--train_flags={train_flags}: {e}; quote it as one string") from None
    for token in extra:
        name = token.lstrip("-").split("=")[0]
        if token.startswith("-") and (name in OWN_TRAIN_FLAGS or name[2:] in OWN_TRAIN_FLAGS):
            raise FigureError(
                f"--train_flags: {token} is set by this tool; use --data_dir, --runs_dir or "
                "--kl_weights, or run train.py yourself"
            )
    if extra and not extra[0].startswith("-"):
        raise FigureError(f"--train_flags={train_flags}: give train.py flags, e.g. --epochs=2")
    if len(kl_weights) > MAX_KL_WEIGHTS:
        raise FigureError(f"--kl_weights: {len(kl_weights)} values, at most {MAX_KL_WEIGHTS}")
    weights = []
    for text in kl_weights:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise FigureError(
                f"--kl_weights={','.join(kl_weights)}: {text!r} is not a positive number; "
                f"give e.g. {','.join(KL_WEIGHTS)}"
            )
        if f"{value:g}" in weights:
            raise FigureError(f"--kl_weights={','.join(kl_weights)}: {text} is given twice")
        weights.append(f"{value:g}")
    if jobs < 1:
        raise FigureError(f"--jobs={jobs}: give 1 or more")
    if seed < 0:
        raise FigureError(f"--seed={seed}: give 0 or more")
    return Settings(
        out_dir=os.path.abspath(out_dir),
        runs_dir=os.path.abspath(runs_dir),
        data_dir=os.path.abspath(data_dir) if data_dir else None,
        train_flags=extra,
        kl_weights=tuple(weights),
        seed=seed,
        jobs=jobs,
        overwrite=overwrite,
    )


# --------------------------------------------------------------------------- the whole job


def make_figures(s: Settings) -> str:
    """Trains or reuses the runs, evaluates them, writes the PNGs and results.md under
    s.out_dir; returns the one summary line."""
    start = time.perf_counter()
    runs = [Run("ae", "AE", ("--mode", "ae")), Run("vae", "VAE (demo)", ())]
    runs += [Run(f"vae_kl_{w}", "VAE", ("--kl_weight", w)) for w in s.kl_weights]
    if s.data_dir:  # a wrong path is one line now, not after the first training
        read_dataset(s.data_dir)
    make_folder("--out_dir", s.out_dir)
    make_folder("--runs_dir", s.runs_dir)
    code = code_version(ROOT)
    trained = 0
    for run in runs:
        trained += train(run, s, code)
    workdir = {run.name: os.path.join(s.runs_dir, run.name) for run in runs}
    data_dir = stored_flags(workdir["vae"])["data_dir"]
    manifest = read_dataset(data_dir)

    staging = os.path.join(s.out_dir, f".make_figures-{os.getpid()}")
    os.makedirs(staging)
    try:
        figures = choose_figures(manifest)
        commands = [
            (f"{run.name}: evaluated", evaluate_command(workdir[run.name], s.seed)) for run in runs
        ]
        commands += [
            (
                f"{f.name}.png: drawn from {f.run}",
                sample_command(workdir[f.run], f, os.path.join(staging, f.name + ".png"), s.seed),
            )
            for f in figures
        ]
        run_all(commands, s.jobs)
        for f in figures:
            check_size(os.path.join(staging, f.name + ".png"), f.name + ".png")
        table = results_table(runs, workdir, manifest, data_dir, s.data_dir is None)
        write_bytes_atomic(os.path.join(staging, "results.md"), table.encode())
        names = [f.name + ".png" for f in figures] + ["results.md"]
        for name in names:  # each file whole; all checked before the first is replaced
            os.replace(os.path.join(staging, name), os.path.join(s.out_dir, name))
        remove_left_out(figures, s.out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(table, end="")
    shown = os.path.relpath(s.out_dir)
    shown = s.out_dir if shown.startswith("..") else shown
    return (
        f"figures: {len(figures)} PNGs and results.md in {shown}{os.sep} (runs: {trained} "
        f"trained, {len(runs) - trained} reused) in {duration(time.perf_counter() - start)}"
    )


def make_folder(flag: str, path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise FigureError(
            f"{flag}={path}: cannot write there ({e.strerror}); choose another"
        ) from e


# --------------------------------------------------------------------------- training


def train(run: Run, s: Settings, code: str) -> bool:
    """Trains the run unless a finished one matches; True if it trained."""
    workdir = os.path.join(s.runs_dir, run.name)
    args = ["train.py", "--demo", "--workdir", workdir]
    args += ["--data_dir", s.data_dir] if s.data_dir else []
    args += [*s.train_flags, *run.extra]
    reason = "--overwrite" if s.overwrite else stale(workdir, args, code)
    if reason is None:
        print(f"{run.name}: reused {workdir} (trained by the same command; --overwrite retrains)")
        return False
    replace = os.path.lexists(config_file(workdir))
    command = [*args, "--overwrite"] if replace else args
    print(f"{run.name}: training ({reason}): {shown_command(command)}", flush=True)
    started = time.time()  # wall clock, to compare with dataset.json's mtime
    begin = time.perf_counter()
    run_streaming(command)
    seconds = time.perf_counter() - begin
    trained_flags = stored_flags(workdir)
    write_json_atomic(
        os.path.join(workdir, RUN_RECORD),
        {
            "command": args,
            "seconds": round(seconds, 1),
            # The first run of an empty demo cache also makes the dataset.
            "made_data": written_since(manifest_path(trained_flags["data_dir"]), started),
            "machine": machine(),
            "code_sha256": code,
            "flags": trained_flags,
            "dataset": dataset_version(trained_flags["data_dir"]),
        },
    )
    print(f"{run.name}: trained in {duration(seconds)}")
    return True


def stale(workdir: str, args: list[str], code: str) -> str | None:
    """Why the run in workdir cannot be reused for `args` and the code digest `code`, or
    None if it can."""
    if not os.path.isfile(os.path.join(workdir, "model.keras")):
        return "no finished run"
    path = os.path.join(workdir, RUN_RECORD)
    if not os.path.isfile(path):
        return f"no {RUN_RECORD}"
    try:
        record = read_json(path)
        stored = stored_flags(workdir)
    except FigureError as e:
        return str(e)
    if record.get("command") != args:
        return "trained by another command"
    if record.get("code_sha256") != code:
        return "the code changed (train.py, model/, pipeline/ or the dataset tools)"
    if record.get("flags") != stored:
        return f"{config_file(workdir)} changed since"
    if record.get("dataset") != dataset_version(stored["data_dir"]):
        return "its dataset changed"
    return None


def dataset_version(data_dir: str) -> str | None:
    """A digest of the dataset's shards (their sha256s in dataset.json), None if unreadable."""
    try:
        splits = read_manifest(data_dir).get("splits")
    except DatasetError:
        return None
    return hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()


def code_version(root: str) -> str:
    """sha256 over the code under `root` that a training run depends on (CODE_FILES and the
    .py files of CODE_DIRS): their sorted relative paths and bytes."""
    paths = list(CODE_FILES)
    for folder in CODE_DIRS:
        for parent, dirs, files in os.walk(os.path.join(root, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            relative = os.path.relpath(parent, root)
            paths += [os.path.join(relative, f) for f in files if f.endswith(".py")]
    digest = hashlib.sha256()
    for path in sorted(p.replace(os.sep, "/") for p in paths):
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


def written_since(path: str, started: float) -> bool:
    """Whether the file was written at or after `started` (time.time()): by this command."""
    try:
        return os.path.getmtime(path) >= started
    except OSError:
        return False


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


# --------------------------------------------------------------------------- commands


def evaluate_command(workdir: str, seed: int) -> list[str]:
    return ["evaluate.py", "--workdir", workdir, "--inception_weights", "none", "--seed", str(seed)]


def sample_command(workdir: str, figure: Figure, out: str, seed: int) -> list[str]:
    return ["sample.py", "--workdir", workdir, *figure.args, "--seed", str(seed), "--out", out]


def choose_figures(manifest: dict[str, Any]) -> list[Figure]:
    """The pictures this dataset allows: eyeglasses.png only when it has that label."""
    if "Eyeglasses" in (manifest.get("attribute_names") or []):
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


def shown_command(args: list[str]) -> str:
    return shlex.join(["python", *args])


def failure(args: list[str], code: int, stderr: str, stdout: str) -> FigureError:
    """One line: the command and the last line it printed that says something."""
    lines = [line.strip() for line in (stderr or stdout).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Pass --help")]
    last = lines[-1] if lines else "no message"
    return FigureError(f"`{shown_command(args)}` failed (exit {code}): {last}")


def child_env() -> dict[str, str]:
    """The commands' environment: unbuffered, so progress shows as it comes."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_streaming(args: list[str]) -> None:
    """Runs a command in the repository, its output shown as it comes; FigureError naming
    its last stderr line if it fails."""
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=child_env(),
        stderr=subprocess.PIPE,  # stdout goes straight to ours
        text=True,
        errors="replace",
        bufsize=1,
    )
    last: collections.deque[str] = collections.deque(maxlen=50)  # for the failure's line
    for line in process.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        last.append(line)
    code = process.wait()
    if code:
        raise failure(args, code, "".join(last), "")


def run_quiet(label: str, args: list[str]) -> None:
    """Runs a command in the repository with its output kept; FigureError if it fails."""
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=child_env(), capture_output=True, text=True
    )
    if done.returncode:
        raise failure(args, done.returncode, done.stderr, done.stdout)
    print(label, flush=True)


def run_all(commands: list[tuple[str, list[str]]], jobs: int) -> None:
    """Runs independent commands, `jobs` at a time; the first failure (in order) is raised."""
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(run_quiet, label, args) for label, args in commands]
        for future in futures:
            try:
                future.result()
            except FigureError:
                pool.shutdown(cancel_futures=True)
                raise


# --------------------------------------------------------------------------- checks and table


def check_size(path: str, name: str) -> None:
    size = os.path.getsize(path)
    if size > MAX_PNG_BYTES:
        raise FigureError(
            f"{name} is {size:,} bytes, over the limit of {MAX_PNG_BYTES:,}: these figures are "
            "sized for the README's demo; for other data use sample.py directly (nothing in "
            "the output folder was replaced)"
        )


def config_file(workdir: str) -> str:
    return os.path.join(workdir, "config.json")


def read_json(path: str) -> dict[str, Any]:
    """A small JSON object of ours; FigureError naming the file if missing or damaged."""
    try:
        if os.path.getsize(path) > MAX_JSON_BYTES:
            raise FigureError(f"{path} is over {MAX_JSON_BYTES} bytes: not a file of ours")
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError) as e:
        raise FigureError(f"cannot read {path} ({e}); --overwrite trains the runs afresh") from e
    if not isinstance(content, dict):
        raise FigureError(f"{path} holds no JSON object; --overwrite trains the runs afresh")
    return content


def stored_flags(workdir: str) -> dict[str, Any]:
    """The flags in the workdir's config.json; FigureError naming the file if it lacks them."""
    path = config_file(workdir)
    found = read_json(path).get("flags")
    if not isinstance(found, dict) or not isinstance(found.get("data_dir"), str):
        raise FigureError(
            f"{path} has no flags.data_dir: not a config.json of train.py; --overwrite trains "
            "the runs afresh"
        )
    return found


def read_dataset(data_dir: str) -> dict[str, Any]:
    try:
        return read_manifest(data_dir)
    except DatasetError as e:
        raise FigureError(f"--data_dir: {e}") from None


def results_table(
    runs: list[Run], workdir: dict[str, str], manifest: dict, data_dir: str, demo: bool
) -> str:
    """results.md: one row per run from its eval.json, config.json and figure_run.json."""
    header = (
        "| run | kl_weight | β | test ELBO (nats) | bits/dim | PSNR (dB) | KL (nats) "
        "| active units | training time (s) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows, machines, made_data = [], [], False
    for run in runs:
        config = read_json(config_file(workdir[run.name]))
        record = read_json(os.path.join(workdir[run.name], RUN_RECORD))
        results = read_json(os.path.join(workdir[run.name], "eval.json"))
        try:
            rows.append(table_row(run, config, record, results))
        except (KeyError, TypeError, ValueError) as e:
            raise FigureError(
                f"{workdir[run.name]}: config.json, {RUN_RECORD} or eval.json lacks {e}: "
                "--overwrite trains the runs afresh"
            ) from e
        made_data |= bool(record.get("made_data"))
        if record.get("machine") not in machines:
            machines.append(record.get("machine"))
    splits = manifest.get("splits", {})
    total = sum(split.get("num_examples", 0) for split in splits.values())
    image = manifest.get("image", {})
    counts = " / ".join(
        f"{name} {split.get('num_examples', 0):,}" for name, split in splits.items()
    )
    source = "the demo's synthetic faces (tools.make_synthetic), not CelebA" if demo else data_dir
    notes = [
        f"Data: {source}: {total:,} images of {image.get('width')}×{image.get('height')} "
        f"({counts}); numbers on the {results['split']} split, "
        f"`evaluate.py --seed {results['seed']}`.",
        "β = kl_weight × H·W·C / z_dim, the weight on the KL of a proper ELBO; KL in nats per "
        "image (kl_loss × z_dim); active units: latent dims whose mean code varies over the "
        f"test images (variance > {analysis.ACTIVE_UNIT_THRESHOLD:g}).",
        "† AE: no KL term, so this is minus the reconstruction NLL, not a bound.",
        "Training time: wall time of the `train.py` command, start-up included, on "
        + "; ".join(str(m) for m in machines)
        + ("; * includes making the synthetic dataset." if made_data else "."),
    ]
    return header + "".join(rows) + "\n" + "\n\n".join(notes) + "\n"


def table_row(run: Run, config: dict, record: dict, results: dict) -> str:
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
        f"{record['seconds']:.0f}{'*' if record.get('made_data') else ''}",
    ]
    return "| " + " | ".join(cells) + " |\n"


def run() -> None:
    define_flags()
    run_app(main)


if __name__ == "__main__":
    run()
