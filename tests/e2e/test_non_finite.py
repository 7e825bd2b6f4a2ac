"""A training whose loss becomes NaN or infinite stops with one line naming the experiment, epoch
and step; its MLflow run is FAILED, the last good checkpoint is kept, and `dvc repro` stops there."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from conftest import dvc, git_init


@pytest.mark.slow
def test_diverging_training_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    # Plain gradient descent on least squares: fine at lr 1e-3 in epoch 0, divergent (|1 - lr * eigenvalue| > 1,
    # geometric growth to inf) once the step schedule multiplies the rate by 1e6 for epoch 1.
    raw["experiments"]["linear_diabetes"].update(
        max_epochs=5, batch_size=16, optimizer={"name": "sgd", "lr": 1.0e-3},
        scheduler={"name": "step", "step_size": 1, "gamma": 1.0e6},
    )
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git_init(project)

    result = dvc("repro", cwd=project, check=False)

    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error: experiments.")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert re.fullmatch(
        r"error: experiments\.linear_diabetes: non-finite training loss (nan|inf|-inf) at epoch 1, step \d+; "
        r"the last good checkpoint is checkpoints/linear_diabetes/last\.ckpt; MLflow run \w+ marked FAILED\. "
        r"Lower experiments\.linear_diabetes\.optimizer\.lr or set experiments\.linear_diabetes\.trainer\.gradient_clip_val",
        errors[0],
    ), errors[0]
    last = torch.load(project / "checkpoints" / "linear_diabetes" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert not (project / "models" / "linear_diabetes").exists()
    assert not (project / "metrics" / "linear_diabetes.json").exists()  # evaluate did not run

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.experiment = 'linear_diabetes'")
    assert [r.info.status for r in runs] == ["FAILED"]
