"""model/console.py: quiet TensorFlow start-up, --help of every console script, one-line errors."""

import configparser
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from absl import flags

from facevae.model import console
from facevae.pipeline.schema import DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUIET_IMPORT = (
    "from facevae.model.console import quiet_tensorflow; quiet_tensorflow(); "
    "import tensorflow as tf; tf.constant(1) + 1"
)
CPP_LOG_LINE = re.compile(r"^[IWE]\d{4} ", re.MULTILINE)  # absl's C++ format: I0000 00:00:...


def _stderr_of(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_extra)
    done = subprocess.run(
        [sys.executable, "-c", QUIET_IMPORT], env=env, capture_output=True, text=True, check=True
    )
    return done.stderr


def test_quiet_tensorflow_hides_cpp_start_up_lines():
    assert not CPP_LOG_LINE.search(_stderr_of({}))


def test_users_log_level_wins():
    # With the user's own level the start-up lines are TensorFlow's to print (0 = everything).
    assert CPP_LOG_LINE.search(_stderr_of({"TF_CPP_MIN_LOG_LEVEL": "0"}))


def test_one_line_names_flags_and_adds_the_command_that_fixes_it():
    flag_values = flags.FlagValues()
    flags.DEFINE_integer("batch_size", 1, "x", flag_values=flag_values)
    saved = console.flags.FLAGS
    console.flags.FLAGS = flag_values
    try:
        text = console.one_line(ValueError("`batch_size`=500 is more: lower `batch_size`\nsecond"))
        assert text == "--batch_size=500 is more: lower --batch_size second"
        # A name that is no flag of this process stays as the library wrote it.
        assert console.one_line(ValueError("`zdim` off")) == "`zdim` off"
    finally:
        console.flags.FLAGS = saved
    error = DatasetError("shard x is missing: prepare the dataset again", "data/x")
    assert console.one_line(error).endswith(
        "(`python -m tools.prepare_celeba --src SRC --out data/x --overwrite`)"
    )
    long = console.one_line(ValueError(f"`seed`={'9' * 10_000}: give 0..4294967295"))
    assert len(long) < 200 and "\n" not in long


def test_a_bad_flag_value_is_one_short_line(monkeypatch):
    flag_values = flags.FlagValues()
    flags.DEFINE_integer("seed", 0, "x", flag_values=flag_values)
    monkeypatch.setattr(console.flags, "FLAGS", flag_values)
    with pytest.raises(SystemExit) as caught:
        console.parse_flags(["tool.py", f"--seed={'x' * 10_000}"])
    message = str(caught.value.code)
    assert message.startswith("tool.py: ") and "\n" not in message and len(message) < 300


def console_scripts() -> dict[str, str]:
    """name -> module:function of every console script in setup.cfg."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


# A flag each tool must list under --help (the rest of its flags come with it).
KEY_FLAG = {
    "facevae-prepare": "--src",
    "facevae-synthetic": "--n",
    "facevae-train": "--data_dir",
    "facevae-sample": "--mode",
    "facevae-evaluate": "--workdir",
    "facevae-judge": "--data_dir",
    "facevae-export-tflite": "--workdir",
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """A non-editable `pip install .` into a fresh virtual environment (TensorFlow and the
    other requirements come from this one's site-packages); returns its bin folder."""
    root = tmp_path_factory.mktemp("installed")
    # From a copy: a build folder left in the checkout could carry files that are gone.
    source = shutil.copytree(
        ROOT,
        root / "source",
        ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "runs", "data", "__pycache__"),
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-cache-dir", str(source)],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return str(venv / "bin")


def test_an_installed_copy_takes_no_generic_names(installed):
    python = os.path.join(installed, "python")
    code = (
        "import importlib.util, json, facevae, site; "
        "print(json.dumps([facevae.__file__, site.getsitepackages()[0], "
        "[n for n in ('model', 'pipeline', 'tools', 'train', 'sample', 'evaluate') "
        "if importlib.util.find_spec(n)]]))"
    )
    done = subprocess.run([python, "-c", code], cwd="/", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    package, site_packages, generic = json.loads(done.stdout)
    assert package.startswith(site_packages), package  # the installed copy, not the checkout
    assert generic == []  # nothing else in site-packages is shadowed or shadows
    names = os.listdir(site_packages)
    assert "facevae" in names and not {"model", "pipeline", "tools", "train.py"} & set(names)


def test_every_console_script_lists_its_flags_under_help(installed, tmp_path):
    """Each installed console script, run from a folder outside the repository."""
    scripts = console_scripts()
    assert set(scripts) == set(KEY_FLAG)
    running = {
        name: subprocess.Popen(
            [os.path.join(installed, name), "--help"],
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in scripts
    }
    for name, proc in running.items():
        stdout, stderr = proc.communicate(timeout=180)
        assert "Traceback" not in stderr, f"{name}: {stderr[-2000:]}"  # absl exits 1 after help
        flag_lines = re.findall(r"^  --\w+", stdout, re.MULTILINE)
        assert f"  {KEY_FLAG[name]}" in flag_lines and len(flag_lines) >= 3, (name, stdout)
