"""How every stage entry point reports a user error: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Callable, NoReturn

from pipeline import stagestats
from pipeline.params import ConfigError


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    stagestats.begin()  # off unless MEDL_STAGE_STATS is set (bench/benchmarks.py)
    try:
        return main(argv) or 0
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run_and_exit(main: Callable[[list[str] | None], int | None]) -> NoReturn:
    """A stage's `__main__`: `sys.exit(run(main))` without the interpreter's teardown.

    Freeing the thousands of modules torch, Lightning, torchmetrics and MLflow import takes 1.4 to
    1.8 s of a stage process's life after its work is done (measured here: `import lightning, mlflow,
    torchmetrics, torch` alone exits in 5.0 s, 3.7 s without the teardown), and a default `dvc repro`
    runs 47 stage processes. So once `main` has returned or reported a user error, this does what
    the interpreter's shutdown does that can matter to anyone (join the threads that are not
    daemons, run the atexit handlers, flush stdout and stderr) and leaves with `os._exit`. Every
    file a stage writes is closed by then (written under `with`); an exception other than a user
    error still leaves the normal way, with its traceback and exit code 1."""
    code = run(main)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what the interpreter would call next (stagestats' record, logging's flush)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
