"""pipeline.core.resume.watch_parent: a training started by dvc stops when that dvc process ends, and
only then: the parent is told apart from a reused pid by its start since boot, which the system clock
does not move (psutil's create_time adds the boot time, which moves with every clock update)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil

WATCH = textwrap.dedent("""
    import sys, time, types
    from pipeline.core import resume
    resume.watch_parent(types.SimpleNamespace(name="toy"))
    time.sleep(float(sys.argv[1]))
    print("still training")
""")


def watched(value: str, seconds: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDL_WATCHED_PARENT": value}
    return subprocess.run([sys.executable, "-c", WATCH, str(seconds)], env=env, capture_output=True, text=True, timeout=120)


def test_a_living_parent_is_watched_through_a_clock_update():
    me = psutil.Process()
    # as this process's creation time reads after the system clock moved by 0.7 s
    result = watched(f"{me.pid}:{me.create_time() + 0.7}", 3)
    assert result.returncode == 0 and result.stdout.strip() == "still training", result.stderr[-2000:]


def test_an_ended_parent_stops_the_training_with_a_line():
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    created = psutil.Process().create_time()  # a time the pid never had: gone all the same
    result = watched(f"{ended.pid}:{created}", 30)
    assert result.returncode == -15, result.stderr[-2000:]
    assert f"toy: the dvc process that started this training ({ended.pid}) has ended; stopping" in result.stderr
