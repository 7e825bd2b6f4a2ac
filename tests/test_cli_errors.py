"""Stage entry points on bad input: exit 2, one line naming the key or file, nothing written,
no MLflow run created."""

from __future__ import annotations

import yaml
from conftest import python


def snapshot(project):
    return sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())


def test_typo_in_params_stops_train_before_anything_is_written(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["experiments"]["mlp_digits"]["optimizer"]["lerning_rate"] = 0.1
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    before = snapshot(project)
    for stage in (["pipeline.prepare"], ["pipeline.train", "mlp_digits"], ["pipeline.train", "softmax_digits"]):
        result = python("-m", *stage, cwd=project, check=False)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines == [
            "error: experiments.mlp_digits.optimizer.lerning_rate: unknown key; "
            "allowed: lr, momentum, name, nesterov, weight_decay"
        ]
    assert snapshot(project) == before
    assert not (project / "mlflow.db").exists()


def test_missing_prepared_data_names_the_stage_to_run(project):
    before = snapshot(project)
    result = python("-m", "pipeline.train", "softmax_digits", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: data/prepared/digits/train.pt: prepared dataset missing; run `dvc repro prepare` to build it"
    )
    assert snapshot(project) == before
    assert not (project / "mlflow.db").exists()


def test_unknown_experiment_and_missing_checkpoint(project):
    result = python("-m", "pipeline.train", "nope", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown experiment 'nope'; params.yaml defines: linear_diabetes")
    result = python("-m", "pipeline.evaluate", "cnn_digits", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: models/cnn_digits/best.ckpt: missing; run `dvc repro train@cnn_digits` to build it"
    )


def test_unreachable_tracking_server_stops_train_and_evaluate_before_any_work(project):
    import socket
    import subprocess
    import sys
    import time

    from conftest import env

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    python("-m", "pipeline.prepare", cwd=project)
    before = snapshot(project)
    uri = f"http://127.0.0.1:{port}"
    for stage in (["pipeline.train", "mlp_digits"], ["pipeline.evaluate", "mlp_digits"]):
        if stage[0] == "pipeline.evaluate":  # evaluate needs a trained model first: make one, locally
            python("-m", "pipeline.train", "mlp_digits", cwd=project)
            before = snapshot(project)
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", *stage], cwd=project, env={**env(), "MLFLOW_TRACKING_URI": uri},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [
            f"error: MLFLOW_TRACKING_URI={uri}: the tracking server does not answer (MlflowException); "
            "start it, or unset MLFLOW_TRACKING_URI to track into the local mlflow.db"
        ]
        assert time.monotonic() - start < 60  # not MLflow's minutes of retries
        assert snapshot(project) == before
