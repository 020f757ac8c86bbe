"""Every numeric flag of every command line, fed -1, 0, 1e308, nan and a very long string:
one line and a non-zero exit, never a traceback, never the long value echoed whole.

The required paths point nowhere, so a value that passes its checks stops at the first
read instead of starting work; all command lines run in one process (cli_driver).
"""

import os
import re

import cli_driver
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOWHERE = "/nonexistent/facevae"
UNDER_A_FILE = os.path.join(ROOT, "README.md", "x")  # cannot be created, even by root
VALUES = {"-1": "-1", "0": "0", "1e308": "1e308", "nan": "nan", "long": "x" * 10_000}
# Each command line's required settings, pointing where nothing can be read or written.
BASES = {
    "facevae.train": [f"--data_dir={NOWHERE}/data", f"--workdir={NOWHERE}/run"],
    "facevae.sample": [f"--workdir={NOWHERE}/run"],
    "facevae.evaluate": [f"--workdir={NOWHERE}/run"],
    "tools.prepare_celeba": [f"--src={NOWHERE}/src", f"--out={UNDER_A_FILE}"],
    "tools.make_synthetic": [f"--out={UNDER_A_FILE}"],
    "tools.train_judge": [f"--data_dir={NOWHERE}/data"],
    "tools.bench_pipeline": [f"--data_dir={NOWHERE}/data"],
    "tools.bench_train": [f"--data_dir={NOWHERE}/data"],
    "tools.export_tflite": [f"--workdir={NOWHERE}/run"],
    "tools.tfds_metadata": [f"--data_dir={NOWHERE}/data"],
    "tools.make_figures": [f"--data_dir={NOWHERE}/data", f"--out_dir={UNDER_A_FILE}"],
    "tools.projector": [f"--workdir={NOWHERE}/run"],
}


@pytest.fixture(scope="module")
def reports() -> dict:
    cases = {
        module: {"fuzz": {"base": base, "values": VALUES}, "lines": {"base": base}}
        for module, base in BASES.items()
    }
    return cli_driver.run_many(cases, timeout=600)


WITHOUT_NUMBERS = ("tools.tfds_metadata", "tools.export_tflite")  # paths and choices only


def test_every_command_line_was_fuzzed(reports):
    for module in BASES:
        fuzzed = [name for name in reports if name.startswith(module + " --")]
        assert bool(fuzzed) == (module not in WITHOUT_NUMBERS), f"{module}: {len(fuzzed)} cases"
        assert reports[f"{module} base"]["code"] == 1  # nothing to read: one line, exit 1


def test_bad_values_are_one_line_and_a_non_zero_exit(reports):
    problems = []
    for name, report in reports.items():
        text = report["message"] + report["stderr"]
        if report["code"] == 99 or "Traceback" in text:
            problems.append(f"{name}: a traceback: {text[-300:]}")
        elif report["code"] == 0:
            problems.append(f"{name}: exit 0 although nothing can be read")
        elif "\n" in report["message"].strip() or not report["message"].strip():
            problems.append(f"{name}: not one line: {report['message'][:300]!r}")
        elif re.search(r"x{100}", text):
            problems.append(f"{name}: the long value echoed: {text[:200]}")
    assert not problems, "\n".join(problems[:20])


def test_seeds_are_checked_to_be_0_to_2_to_the_32(reports):
    for name, report in reports.items():
        if " --seed " in f"{name} " and name.endswith(("-1", "1e308")):
            assert "seed" in report["message"] and report["code"] == 1, (name, report["message"])
