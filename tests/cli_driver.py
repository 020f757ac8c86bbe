"""Many command lines of one CLI in one process: the tests' way to skip a TF start-up each.

`script(module)` is Python code for `python -c`: its argv[1] is JSON {name: [flags...]}; it
runs each through `module.main` as the command line would and prints one JSON line
{name: {"code", "message", "stdout", "stderr"}}.
"""

_TEMPLATE = """
import contextlib, io, json, sys
import {module}
from absl import flags

reports = {{}}
for name, argv in json.loads(sys.argv[1]).items():
    out, err, code, message = io.StringIO(), io.StringIO(), 0, ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["{module}.py", *argv])
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
