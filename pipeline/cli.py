"""How every stage entry point reports a user error: one line on stderr, exit code 2, nothing written.

Besides the errors params and inputs raise (ConfigError), two that the machine causes end the same
way, whatever stage meets them and however deep in a library: a full disk, and a damaged or full
SQLite tracking store (mlflow.db). Each is one line naming the file and what to do."""

from __future__ import annotations

import gc
import logging
import os
import re
import shlex
import sqlite3
import sys
import warnings
from typing import Callable, NoReturn

from pipeline import files, stagestats
from pipeline.params import ConfigError

# SQLite's messages for a file that is not, or no longer, a database
DAMAGED = ("file is not a database", "database disk image is malformed")

# Library warnings that ask nothing of the user of a stage, as regular expressions matched from the
# message's start, each on its own text so that every other warning still shows.
NOTICES = (
    # Lightning's SLURMEnvironment, where `srun` is installed: the project starts its SLURM jobs itself
    # (pipeline.core.launch), and a stage run without srun is meant to be
    re.escape("The `srun` command is available on your system but is not used"),
    r".* is smaller than the logging interval",  # Lightning, on an epoch of fewer batches than log_every_n_steps
    # checkpoints/EXPERIMENT/ holds resume.json before the first checkpoint (pipeline.core.resume owns that folder)
    r".* exists and is not empty",
    re.escape("`isinstance(treespec, LeafSpec)` is deprecated"),  # Lightning's own use of torch's pytree
)

# Lightning's loggers of rank_zero_info: the GPU/TPU lines, the litlogger tip, "Loading
# `train_dataloader` to estimate ...", "`Trainer.fit` stopped: ...". The train stage's summary line
# says what they would. Lightning's warnings go through `warnings`, not these loggers, and still show.
INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def quiet() -> None:
    """A stage's output is its progress and one summary line: the notices above are turned off through
    the libraries' public switches (a logger's level, a warnings filter)."""
    for name in INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for notice in NOTICES:
        warnings.filterwarnings("ignore", message=notice)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    stagestats.begin()  # off unless MEDL_STAGE_STATS is set (bench/benchmarks.py)
    quiet()
    try:
        return main(argv) or 0
    except ConfigError as error:  # DiskFull too
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        line = machine_error(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2


def set_threads(count: int) -> None:
    """params.yaml's `threads`: the intra-op threads of torch and of the BLAS that numpy and scikit-learn
    call. How a sum is split across threads changes its last bits, hence the results, so the count is
    a param DVC tracks, not whatever OMP_NUM_THREADS the shell happens to set."""
    import torch
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    torch.set_num_threads(count)
    threadpool_limits(count)


def experiment_argument(parser, stage: str) -> None:
    """The EXPERIMENT argument of `python -m pipeline.STAGE [EXPERIMENT]`. Under DVC it is left out: the
    command in dvc.yaml names no experiment, which reaches the stage through DVC's own DVC_STAGE variable
    (STAGE@EXPERIMENT), so no name from params.yaml is ever a word of a shell command."""
    parser.add_argument("experiment", nargs="?", help=f"an experiment name from params.yaml (under DVC: from "
                        f"DVC_STAGE, {stage}@EXPERIMENT)")


def experiment_name(given: str | None, stage: str) -> str:
    if given is not None:
        return given
    addressing = os.environ.get("DVC_STAGE", "")  # e.g. train@mlp_digits, or dvc.yaml:train@mlp_digits
    name = addressing.rpartition("@")[2] if addressing.rpartition(":")[2].startswith(f"{stage}@") else ""
    if not name:
        raise ConfigError(f"no experiment given; run `python -m pipeline.{stage} EXPERIMENT` (or `dvc repro {stage}@EXPERIMENT`)")
    return name


def machine_error(error: BaseException) -> str | None:
    """The one line for an error the machine caused, found anywhere in `error`'s chain (libraries wrap
    them: SQLAlchemy and MLflow wrap SQLite's, Lightning's and torch's calls wrap OSError); None for
    any other error, which keeps its traceback."""
    for cause in chain(error):
        if isinstance(cause, files.DiskFull):
            return str(cause)
        if isinstance(cause, OSError) and cause.errno in files.FULL:
            # a copy or a rename names its destination second (shutil.copyfile: the source first)
            written = cause.filename2 or cause.filename
            where = files.shown(written) if written else "a file this stage writes"
            return f"{where}: no space left on device; free some space, then rerun"
        if isinstance(cause, sqlite3.DatabaseError):
            message = str(cause)
            if message == "database or disk is full":
                return f"{store()}: no space left on device ({message}); free some space, then rerun"
            if message in DAMAGED:
                where = store()
                return (f"{where}: not a readable MLflow store ({message}); move it aside "
                        f"(mv {shlex.quote(where)} {shlex.quote(where + '.damaged')}) to start a new store, "
                        "or restore it from a backup")
    return None


def chain(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from or while handling, outermost first."""
    found = []
    while error is not None and all(error is not seen for seen in found):
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


def store() -> str:
    """The SQLite store's file as a message names it (the tracking URI where it is not a file)."""
    from pipeline.core.tracking import redacted, tracking_uri  # here: most errors, and prepare's, never need it

    uri = tracking_uri()
    prefix = "sqlite:///"
    return files.shown(uri[len(prefix):]) if uri.startswith(prefix) else redacted(uri)


def run_and_exit(main: Callable[[list[str] | None], int | None]) -> NoReturn:
    """A stage's `__main__`: `sys.exit(run(main))`, with the interpreter's garbage collections at exit
    made cheap.

    At exit the interpreter collects garbage over every object the thousands of modules of torch,
    Lightning, torchmetrics and MLflow made, a noticeable share of a stage process's life after its
    work is done (BENCHMARKS.md), and a default `dvc repro` runs dozens of stage processes.
    `gc.freeze()` moves every object alive now out of the collector's sight, so those collections skip
    them. Nothing else changes: threads that are not daemons are joined, atexit handlers run, streams
    are flushed and files closed by the interpreter, as in any exit."""
    code = run(main)
    gc.freeze()
    sys.exit(code)
