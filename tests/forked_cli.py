"""`python -m compiler` for the tests, forked from a process that has already imported what every compile imports.

A subprocess compile spends about 2.5 s importing torch, onnx, onnxruntime, Hydra and the compiler before any work,
and the end-to-end tests run about 190 of them. This server imports those once, then forks one child per compile:
the child takes the test's working directory, environment, argv and output files, runs the `compiler` module as
`python -m compiler` does, and exits with its exit code as the compiler's own exit does (atexit handlers run).
Nothing has run in the server but imports, so each child starts as a fresh process would, minus the imports.

Protocol: one JSON request per line on stdin ({"args", "env", "cwd", "stdout", "stderr", "timeout"}), one JSON
answer per line on the answer pipe ({"code"} or {"timeout": true}).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

# preloading torch._dynamo, tensorflow and tf2onnx too gained nothing measurable (tests/e2e/test_frameworks.py,
# test_io_recipes.py: within a second either way) and slows the server's start
PRELOADED = ("numpy", "torch", "onnx", "onnxruntime", "omegaconf", "hydra", "onnx_graphsurgeon", "compiler.cli")


def _child(request: dict) -> None:
    """In the forked child: become `python -m compiler ARGS` and exit with its code."""
    import runpy

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
    sys.argv = ["-m", *request["args"]]
    try:
        runpy.run_module("compiler", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    # the compiler's own single-run exit: threads joined, atexit handlers, logging flushed, then os._exit. The
    # interpreter's teardown is skipped: in a forked child it can wait forever on a lock a server thread held.
    from compiler.cli import _exit

    _exit(code)


def _wait(pid: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"code": os.waitstatus_to_exitcode(status)}
        time.sleep(0.02)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return {"timeout": True}


def serve() -> None:
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)
    answers = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            answers.close()
            os.setpgid(0, 0)  # the compile and whatever it starts, killed together on a timeout
            _child(request)
        answers.write(json.dumps(_wait(pid, request["timeout"])) + "\n")


if __name__ == "__main__":
    serve()
