import io
import os
import re
import subprocess
import sys

from model.console import Progress

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
