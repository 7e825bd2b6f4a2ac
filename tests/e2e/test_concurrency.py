"""Four experiments trained at once against (a) the default SQLite store, created by the racing
processes themselves, and (b) a real `mlflow server` on loopback: every run complete, no
"database is locked", one MLflow experiment. The third way, `dvc exp run --queue` with
`dvc queue start -j 2`, is in tests/e2e/test_pipeline_e2e.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import env, python

pytestmark = pytest.mark.slow

EXPERIMENTS = ["linear_diabetes", "logistic_breast_cancer", "softmax_digits", "mlp_digits"]
EXPERIMENT_NAME = "mathematical-engineering-of-deep-learning"


def train_at_once(project: Path, extra_env: dict | None = None) -> list[subprocess.CompletedProcess]:
    procs = [
        subprocess.Popen([sys.executable, "-m", "pipeline.train", name], cwd=project, env={**env(), **(extra_env or {})},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in EXPERIMENTS
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def check_runs(client, project: Path, raw: dict) -> None:
    """One MLflow experiment; per experiment exactly one FINISHED run with every param, curve and artifact."""
    experiments = [e for e in client.search_experiments() if e.name == EXPERIMENT_NAME]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(EXPERIMENTS)
    for run in runs:
        name = run.info.run_name
        config = json.loads((project / "models" / name / "config.json").read_text())
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == set(config), name
        epochs = raw["experiments"][name]["max_epochs"]
        assert len(client.get_metric_history(run.info.run_id, "val/loss")) == epochs, name
        assert "train/seconds" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint", "config.json"} <= artifacts, (name, artifacts)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/best.ckpt"]


def prepared_project(project: Path) -> dict:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    python("-m", "pipeline.prepare", cwd=project)
    return raw


def test_four_trainings_at_once_into_a_fresh_sqlite_store(project):
    raw = prepared_project(project)
    assert not (project / "mlflow.db").exists()  # the racing processes create the store themselves

    results = train_at_once(project)

    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "database is locked" not in result.stderr
    from mlflow import MlflowClient

    check_runs(MlflowClient(f"sqlite:///{project / 'mlflow.db'}"), project, raw)


def test_four_trainings_at_once_into_an_mlflow_server(project, mlflow_server):
    raw = prepared_project(project)

    results = train_at_once(project, {"MLFLOW_TRACKING_URI": mlflow_server})

    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert not (project / "mlflow.db").exists()  # everything went to the server
    from mlflow import MlflowClient

    check_runs(MlflowClient(mlflow_server), project, raw)

