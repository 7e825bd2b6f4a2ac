"""Smoke test of the local SLURM cluster: sbatch a two-task job whose srun steps write their ranks."""

from __future__ import annotations

from pathlib import Path

SCRIPT = """#!/bin/bash
#SBATCH --job-name=smoke
#SBATCH --ntasks=2
#SBATCH --output={out}/slurm-%j.out
set -euo pipefail
srun bash -c 'echo "$SLURM_PROCID $SLURM_NTASKS" > "{out}/rank-$SLURM_PROCID.txt"'
echo done
"""


def test_two_task_job_runs_both_ranks(slurm_cluster, tmp_path: Path):
    script = tmp_path / "smoke.sh"
    script.write_text(SCRIPT.format(out=tmp_path))
    job_id = slurm_cluster.submit(script)

    state = slurm_cluster.wait(job_id, timeout=60)

    assert state == "COMPLETED", f"job {job_id} ended {state}: {slurm_cluster.job(job_id)}\n{slurm_cluster.output(job_id)}"
    ranks = sorted(p.read_text().split() for p in tmp_path.glob("rank-*.txt"))
    assert ranks == [["0", "2"], ["1", "2"]]
    assert slurm_cluster.job(job_id)["ExitCode"] == "0:0"
    assert slurm_cluster.output(job_id).strip() == "done"
