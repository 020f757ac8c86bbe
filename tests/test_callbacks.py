"""model/callbacks.py on its own: counts, input timing, console output, signals, event files."""

import io
import os
import re
import signal
import time

import pytest
import tensorflow as tf

from facevae.model.callbacks import (
    Interrupted,
    Interrupts,
    ProgressLogger,
    Throughput,
    crossed,
    logged_steps,
    metric_logs,
    validation_logs,
)

ESCAPES = re.compile(r"\x1b|\r|\x08")  # ANSI escape codes, carriage returns, backspaces


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def run_epoch(logger: ProgressLogger, throughput: Throughput, steps: int) -> None:
    """Drives the logger as fit would, with the counts a Throughput would keep."""
    throughput.epoch_steps = steps
    logger.on_epoch_begin(0)
    for batch in range(steps):
        throughput.previous_step, throughput.step = batch, batch + 1
        throughput.epoch_step = batch + 1
        logs = {
            "loss": 1.0 / (batch + 1),
            "kl_loss": 0.5,
            "images_per_sec": 80.0,
            "input_wait_fraction": 0.25,
            "learning_rate": 1e-3,
        }
        logger.on_train_batch_end(batch, logs)
    throughput.seconds = 3.0
    logger.on_epoch_end(0, {**logs, "loss": 0.4567, "val_loss": 0.5678})


def test_crossed_counts_multiples_passed():
    assert crossed(0, 1, 1) and crossed(49, 50, 50) and crossed(45, 53, 50)
    assert not crossed(50, 51, 50) and not crossed(51, 99, 50)


def test_logs_split_into_metrics_and_validation_in_the_models_order():
    logs = {
        "kl_loss": 1.0,
        "loss": 2.0,
        "val_kl_loss": 3.0,
        "val_loss": 4.0,
        "images_per_sec": 5.0,
        "learning_rate": 6.0,
        "input_wait_fraction": 0.1,
    }
    assert list(metric_logs(logs, ("loss", "kl_loss")).items()) == [("loss", 2.0), ("kl_loss", 1.0)]
    assert validation_logs(logs, ("loss", "kl_loss")) == {"loss": 4.0, "kl_loss": 3.0}


def test_plain_lines_when_not_a_terminal():
    stream = FakeStream(tty=False)
    throughput = Throughput(batch_size=8)
    logger = ProgressLogger(2, 4, throughput, ("loss", "kl_loss"), stream=stream)
    run_epoch(logger, throughput, steps=10)
    lines = stream.getvalue().splitlines()
    assert not ESCAPES.search(stream.getvalue())
    # Steps 4 and 8 (not 10: the epoch line follows), then the epoch line.
    assert [line.split("  ")[0] for line in lines[:2]] == [
        "epoch 1/2 step 4/10",
        "epoch 1/2 step 8/10",
    ]
    assert "loss 0.25 kl_loss 0.5 | 80 img/s, input wait 25%" in lines[0]
    assert lines[2] == (
        "epoch 1/2  train loss 0.4567 kl_loss 0.5 | validation loss 0.5678 | 3s, 80 img/s, "
        "input wait 25%"
    )
    assert len(lines) == 3


def test_live_bar_on_a_terminal():
    stream = FakeStream(tty=True)
    throughput = Throughput(batch_size=8)
    logger = ProgressLogger(2, 4, throughput, ("loss", "kl_loss"), stream=stream)
    run_epoch(logger, throughput, steps=10)
    text = stream.getvalue()
    assert text.startswith("\repoch 1/2 [") and "10/10" in text  # redrawn in place
    assert text.endswith(
        "epoch 1/2  train loss 0.4567 kl_loss 0.5 | validation loss 0.5678 | "
        "3s, 80 img/s, input wait 25%\n"
    )
    bar = text.rsplit("\r", 1)[0]
    assert "\n" not in bar  # the bar never scrolls


def test_input_wait_is_the_time_spent_waiting_for_batches():
    throughput = Throughput(batch_size=1)

    def slow(x):
        time.sleep(0.05)
        return x

    ds = tf.data.Dataset.range(4).map(lambda x: tf.py_function(slow, [x], tf.int64))
    fast = throughput.wrap(tf.data.Dataset.range(4).prefetch(4))
    for _ in fast:
        time.sleep(0.02)  # the consumer is slower: the prefetched batches are ready
    assert throughput.waited < 0.1
    throughput.waited = 0.0
    for _ in throughput.wrap(ds):
        pass
    assert 0.15 < throughput.waited < 1.0


def test_interrupts_defer_the_first_signal_and_raise_at_the_second():
    with Interrupts() as interrupts:
        interrupts.deferred = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert interrupts.received == signal.SIGTERM
        with pytest.raises(Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert caught.value.exit_code == 130 and str(caught.value).startswith("stopped by SIGINT")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_logged_steps_reads_event_files_up_to_a_cut(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in (3, 6):
            tf.summary.scalar("loss", 1.0, step=step)
        tf.summary.scalar("other", 1.0, step=9)
    writer.close()
    assert logged_steps(str(tmp_path), "loss") == {3, 6}
    (event_file,) = tmp_path.iterdir()
    event_file.write_bytes(event_file.read_bytes()[:-5])  # a kill during the last write
    assert logged_steps(str(tmp_path), "loss") == {3, 6}
    assert logged_steps(str(tmp_path / "missing"), "loss") == set()
