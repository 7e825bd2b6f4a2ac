"""bench/gpu_check.py on the CPU: its dry run (--accelerator cpu) runs the plan and writes the table, and
without a CUDA GPU the check itself stops with one line. On a GPU it runs the same way (CUDA hidden)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}  # no GPU, on any machine
    env = {key: value for key, value in env.items() if not key.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def rows(table: str) -> dict[tuple[str, str], list[str]]:
    """(experiment, what) -> the row's cells, from the Markdown table."""
    found = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] not in ("experiment", "---"):
            found[(cells[0], cells[2])] = cells
    return found


@pytest.fixture
def out():
    """A report path where reports may go (bench/results/), unique to this test, removed afterwards."""
    path = ROOT / "bench" / "results" / f"test-gpu-check-{uuid.uuid4().hex}.md"
    yield path
    path.unlink(missing_ok=True)


def test_the_dry_run_runs_the_plan_and_writes_its_table(out):
    result = run("--accelerator", "cpu", "--only", "linear_diabetes,q_learning_cliff_walking", "--epochs", "1",
                 "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    table = out.read_text()
    assert "no GPU: a CPU dry run" in table  # never read as a GPU's figures
    found = rows(table)
    manual, linear = "q_learning_cliff_walking", "linear_diabetes"
    # 16-mixed for the family that steps its optimizers itself, determinism for each kind, then the sweep
    assert sorted(found) == sorted([(manual, "16-mixed"), (linear, "determinism"), (manual, "determinism"),
                                    (linear, "32-true"), (linear, "bf16-mixed"), (manual, "32-true"), (manual, "bf16-mixed")])
    assert found[(manual, "16-mixed")][8] == (f"refused: experiments.{manual}.trainer.precision: 16-mixed needs a CUDA GPU; "
                                              "on cpu: 32-true, bf16-mixed, bf16-true, 64-true")
    for name in (linear, manual):
        assert found[(name, "determinism")][8].startswith("ok: identical metrics")
        for what in ("32-true", "bf16-mixed", "determinism"):
            cells = found[(name, what)]
            assert cells[3] == "1" and float(cells[4]) > 0  # epochs, fit seconds
            assert cells[5].endswith("samples" if name == linear else "environment steps")
            assert float(cells[6].replace(",", "")) > 0 and cells[7].startswith("× ")  # the CPU column and the speed-up
        assert found[(name, "32-true")][8] == "ok"
    assert result.stdout.count(" 16-mixed: refused: ") == 1  # one progress line per row
    assert "7/7 q_learning_cliff_walking bf16-mixed: " in result.stdout


def test_without_a_cuda_gpu_the_check_stops_with_one_line():
    result = run("--only", "linear_diabetes")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: no CUDA GPU here (torch.cuda.is_available() is False): the GPU check needs one; "
        "`--accelerator cpu` runs its plan on the CPU as a dry run"]


def test_out_outside_the_report_folders_is_refused_before_any_work(tmp_path):
    elsewhere = tmp_path / "notes.md"
    elsewhere.write_text("the user's")
    result = run("--accelerator", "cpu", "--only", "linear_diabetes", "--out", str(elsewhere))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (f"gpu_check.py: error: argument --out: {elsewhere}: a benchmark report goes "
                                              "to BENCHMARKS.md or into bench/results/")
    assert elsewhere.read_text() == "the user's"
