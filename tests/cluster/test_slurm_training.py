"""The project's sbatch path on a real SLURM cluster: a 2-task DDP training (CPU, gloo) and a 2-task
evaluation through `slurm/train.sbatch` -> `dvc repro` -> the stages' srun launcher."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_project, git_init, python, shrink_params

pytestmark = pytest.mark.slow


def test_sbatch_trains_with_ddp_on_two_tasks_into_one_run(slurm_cluster, tmp_path: Path):
    project = copy_project(tmp_path / "project")
    raw = shrink_params(project / "params.yaml")
    raw["experiments"]["mlp_digits"]["trainer"] = {"devices": 2, "strategy": "ddp"}
    raw["experiments"]["mlp_digits"]["launcher"] = {"name": "srun"}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git_init(project)

    submitted = slurm_cluster.run(
        "sbatch", "--parsable", "--ntasks-per-node=2", f"--export=ALL,MEDL_VENV={sys.prefix}",
        "slurm/train.sbatch", "train@mlp_digits", "evaluate@mlp_digits", cwd=project,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    state = slurm_cluster.wait(job_id, timeout=600)

    log = slurm_cluster.output(job_id)
    assert state == "COMPLETED", f"job {job_id} ended {state}\n{log[-4000:]}"
    assert "launching: srun --nodes=1 --ntasks-per-node=2" in log
    summary = json.loads((project / "runs" / "mlp_digits.json").read_text())
    assert summary["world_size"] == 2

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.run_name, r.data.tags["world_size"]) for r in runs] == [("mlp_digits", "2")]
    # The test metrics of the DDP-trained checkpoint, evaluated in the job by 2 srun tasks, equal a
    # fresh single-process evaluation of the same checkpoint here.
    assert "mlp_digits: 360 test samples on 2 process(es)" in log
    in_job = json.loads((project / "metrics" / "mlp_digits.json").read_text())
    del raw["experiments"]["mlp_digits"]["trainer"], raw["experiments"]["mlp_digits"]["launcher"]
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    python("-m", "pipeline.evaluate", "mlp_digits", cwd=project)
    again = json.loads((project / "metrics" / "mlp_digits.json").read_text())
    assert in_job == again and "test/accuracy" in in_job
    assert runs[0].data.metrics["test/accuracy"] == pytest.approx(in_job["test/accuracy"])
