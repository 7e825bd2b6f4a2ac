"""A stage process's start-up, peak memory and heavy imports, for bench/benchmarks.py.

Off unless the environment variable MEDL_STAGE_STATS names a file: then, at exit, each stage process
appends one JSON line to it: the DVC stage (DVC_STAGE, set by `dvc repro`), the command, the process's
age in seconds at each mark (`main`: the stage's main() entered, module imports done; `work`: the
stage's own work begins: a train stage's training loop starting, an evaluate stage's test-split
work, ...), its age at exit, its peak resident memory, and the heavy packages it imported. Ages are measured from the kernel's record of the process's
start (so the interpreter's own start-up counts), in clock ticks (10 ms).
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
import time

ENV = "MEDL_STAGE_STATS"
HEAVY = (
    "torch", "lightning", "torchmetrics", "mlflow", "torchvision", "gymnasium", "torch_geometric",
    "sklearn", "scipy", "matplotlib", "networkx", "pandas",
)

_marks: dict[str, float] = {}
_started = False


def process_age() -> float:
    """Seconds since this process started (Linux: /proc/self/stat's start time against the boot clock)."""
    with open("/proc/self/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])  # field 22 of proc(5), counted after the command name
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


def begin() -> None:
    """Called by every stage's entry point (pipeline.cli.run): record `main` and write at exit."""
    global _started
    if _started or not os.environ.get(ENV) or not sys.platform.startswith("linux"):
        return
    _started = True
    mark("main")
    atexit.register(_write)


def mark(name: str) -> None:
    """Record the process's age now under `name` (the first time only); nothing if stats are off."""
    if _started and name not in _marks:
        _marks[name] = round(process_age(), 3)


def _write() -> None:
    record = {
        "stage": os.environ.get("DVC_STAGE", ""),
        "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
        "rank": int(os.environ.get("RANK", "0")),
        "marks": _marks,
        "exit": round(process_age(), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "imported": [name for name in HEAVY if name in sys.modules],
    }
    with open(os.environ[ENV], "a") as handle:  # one short line: an atomic append
        handle.write(json.dumps(record) + "\n")
