"""pipeline/stagestats.py: the per-process record bench/benchmarks.py reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STAGE = """
import sys, time
from pipeline import cli, stagestats

def main(argv):
    time.sleep(0.3)
    stagestats.mark("work")
    stagestats.mark("work")  # the first mark counts
    import json  # light: not among the heavy packages
    return 0

sys.exit(cli.run(main))
"""


def _run(tmp_path: Path, stats: Path | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MEDL_STAGE_STATS"}
    env["DVC_STAGE"] = "train@example"
    if stats is not None:
        env["MEDL_STAGE_STATS"] = str(stats)
    subprocess.run([sys.executable, "-c", STAGE], cwd=ROOT, env=env, check=True, timeout=60)


def test_a_stage_process_appends_its_marks_exit_memory_and_imports(tmp_path):
    stats = tmp_path / "stages.jsonl"
    _run(tmp_path, stats)
    _run(tmp_path, stats)
    records = [json.loads(line) for line in stats.read_text().splitlines()]
    assert len(records) == 2
    record = records[0]
    assert record["stage"] == "train@example"
    marks = record["marks"]
    # ages from the process's start: the interpreter started before main(); work after the 0.3 s sleep
    assert 0 < marks["main"] < marks["work"] <= record["exit"] < 30
    assert marks["work"] - marks["main"] >= 0.29
    assert record["peak_rss_mib"] > 5
    assert record["imported"] == []  # pipeline.cli and pipeline.params import no heavy package


def test_nothing_is_written_or_recorded_without_the_variable(tmp_path):
    _run(tmp_path, None)
    assert list(tmp_path.iterdir()) == []


def test_process_age_counts_from_the_process_start():
    out = subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.5); from pipeline import stagestats; print(stagestats.process_age())"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )
    assert 0.5 <= float(out.stdout) < 10
