"""Preemption on a real SLURM cluster: SLURM's requeue signal (SIGUSR1) to a running training job
saves a checkpoint and requeues the job; the requeued job resumes from that checkpoint into the same
MLflow run and ends with the test metrics of an uninterrupted training of the same seed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import RESUME_EPOCHS as EPOCHS
from conftest import checkpoint_epoch, make_resume_project

pytestmark = pytest.mark.slow

def test_requeue_signal_checkpoints_requeues_and_resumes_into_the_same_run(slurm_cluster, tmp_path: Path, uninterrupted_metrics):
    expected = uninterrupted_metrics
    project = make_resume_project(tmp_path / "project", launcher="srun")
    submitted = slurm_cluster.run(
        "sbatch", "--parsable", "--ntasks-per-node=1", f"--export=ALL,MEDL_VENV={sys.prefix}",
        "slurm/train.sbatch", "train@mlp_digits", "evaluate@mlp_digits", cwd=project,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    last = project / "checkpoints" / "mlp_digits" / "last.ckpt"
    deadline = time.monotonic() + 300
    while checkpoint_epoch(last) < 2:  # training is under way, with epochs to go
        state = slurm_cluster.state(job_id)
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), f"job {job_id} {state}\n{slurm_cluster.output(job_id)[-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint within 300 s\n{slurm_cluster.output(job_id)[-3000:]}"
        time.sleep(0.2)
    slurm_cluster.run("scancel", "--signal=USR1", job_id)  # what `#SBATCH --signal=SIGUSR1@90` sends

    state = slurm_cluster.wait(job_id, timeout=600)
    log = slurm_cluster.output(job_id)
    assert state == "COMPLETED", f"job {job_id} ended {state}\n{log[-5000:]}"
    assert slurm_cluster.job(job_id)["Restarts"] == "1"
    assert "requeueing SLURM job " + job_id + "," in log
    assert "mlp_digits: resuming from checkpoints/mlp_digits/requeue.ckpt" in log

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["resume.count"] == "1"
    assert run.data.tags["resume.checkpoint"] == "checkpoints/mlp_digits/requeue.ckpt"
    assert run.data.tags["slurm.job_id"] == job_id
    summary = json.loads((project / "runs" / "mlp_digits.json").read_text())
    assert summary["resumed_from"] == "checkpoints/mlp_digits/requeue.ckpt" and summary["epochs_trained"] == EPOCHS
    # Resumed from the middle of an epoch, the training ends exactly where the uninterrupted one did.
    assert json.loads((project / "metrics" / "mlp_digits.json").read_text()) == expected
    assert run.data.metrics["test/accuracy"] == pytest.approx(expected["test/accuracy"])
