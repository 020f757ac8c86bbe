"""Many command lines of one CLI in one process: the tests' way to skip a TF start-up each.

`script(module)` is Python code for `python -c`: its argv[1] is JSON {name: [flags...]}; it
runs each through `module.main` as the command line would (its flags parsed by
console.parse_flags, as console.run_app does) and prints one JSON line
{name: {"code", "message", "stdout", "stderr"}}.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TEMPLATE = """
import contextlib, io, json, sys
import {module}
from absl import flags
from facevae.model import console

reports = {{}}
for name, argv in json.loads(sys.argv[1]).items():
    out, err, code, message = io.StringIO(), io.StringIO(), 0, ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            flags.FLAGS.unparse_flags()
            console.parse_flags(["{module}.py", *argv])  # as console.run_app parses them
            {module}.main(["{module}.py"])
    except SystemExit as e:
        code, message = (e.code, "") if isinstance(e.code, int) else (1, str(e.code))
    except flags.Error as e:
        code, message = 1, str(e)
    reports[name] = {{"code": code, "message": message, "stdout": out.getvalue(),
                     "stderr": err.getvalue()}}
print(json.dumps(reports))
"""


def script(module: str) -> str:
    return _TEMPLATE.format(module=module)


_MANY = """
import contextlib, importlib, io, json, sys
from absl import app, flags
from facevae.model import console

NUMERIC = (flags.IntegerParser, flags.FloatParser, flags.ListParser)

cases = json.loads(sys.stdin.read())
reports = {{}}
for module_name, spec in cases.items():
    module = importlib.import_module(module_name)
    lines = dict(spec.get("lines", {{}}))
    fuzz = spec.get("fuzz")
    for flag in flags.FLAGS.get_flags_for_module(module) if fuzz else []:
        if isinstance(flag.parser, NUMERIC):
            for label, value in fuzz["values"].items():
                lines[f"--{{flag.name}} {{label}}"] = [*fuzz["base"], f"--{{flag.name}}={{value}}"]
    for name, argv in lines.items():
        out, err, code, message = io.StringIO(), io.StringIO(), 0, ""
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                flags.FLAGS.unparse_flags()
                console.parse_flags([module_name + ".py", *argv])
                module.main([module_name + ".py"])
        except SystemExit as e:
            code, message = (e.code, "") if isinstance(e.code, int) else (1, str(e.code))
        except app.UsageError as e:  # as console.run_app prints it
            code, message = 1, console.usage_line(e, [module_name + ".py"])
        except BaseException as e:  # what the command line would print as a traceback
            code, message = 99, "Traceback: " + type(e).__name__ + ": " + str(e)[:300]
        reports[module_name + " " + name] = {{"code": code, "message": message,
            "stdout": out.getvalue()[-2000:], "stderr": err.getvalue()[-2000:]}}
    # Its flags go, so the next command line can define flags of the same names.
    for flag in flags.FLAGS.get_flags_for_module(module):
        delattr(flags.FLAGS, flag.name)
print(json.dumps(reports))
"""


def script_many() -> str:
    """Python code for `python -c` that reads {module: {"lines": {name: [flags...]},
    "fuzz": {"base": [flags...], "values": {label: value}}}} as JSON on stdin and runs every
    command line of every module in this one process (each module's flags are removed
    before the next is imported), printing one JSON line of reports keyed "<module> <name>".
    With "fuzz", every numeric or list flag of the module also gets each value, after the
    base flags. An exception a command line would show as a traceback is code 99."""
    return _MANY.format()


def run_many(cases: dict, timeout: float = 600) -> dict:
    """script_many's reports of `cases`, run from the repository root in one fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", script_many()],
        input=json.dumps(cases),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
