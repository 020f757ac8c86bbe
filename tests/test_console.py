import configparser
import io
import os
import re
import subprocess
import sys

from facevae.model.console import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUIET_IMPORT = (
    "from model.console import quiet_tensorflow; quiet_tensorflow(); "
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


def test_progress_prints_count_rate_and_eta_lines_when_not_a_tty():
    stream = io.StringIO()
    bar = Progress(total=3, label="prep", stream=stream)
    for _ in range(3):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("prep [") and "1/3" in lines[0] and "img/s" in lines[0]
    assert "3/3" in lines[-1] and "ETA 0:00" in lines[-1]


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
}


def test_every_console_script_lists_its_flags_under_help():
    scripts = console_scripts()
    assert set(scripts) == set(KEY_FLAG)
    # As the installed wrapper runs it: sys.argv[0] is the script, __main__ has no docstring.
    running = {}
    for name, target in scripts.items():
        module, function = target.split(":")
        code = (
            f"import sys; sys.argv[0] = {os.path.join(os.path.dirname(sys.executable), name)!r}; "
            f"from {module} import {function}; {function}()"
        )
        running[name] = subprocess.Popen(
            [sys.executable, "-c", code, "--help"],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    for name, proc in running.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stderr, f"{name}: {stderr[-2000:]}"  # absl exits 1 after help
        flag_lines = re.findall(r"^  --\w+", stdout, re.MULTILINE)
        assert f"  {KEY_FLAG[name]}" in flag_lines and len(flag_lines) >= 3, (name, stdout)
