"""Interruption: `kill -9` of a running train stage, then `dvc repro` again, resumes from the last
checkpoint into the same MLflow run and ends with the metrics of an uninterrupted training."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RESUME_EPOCHS as EPOCHS
from conftest import checkpoint_epoch, dvc, env, make_resume_project

pytestmark = pytest.mark.slow

def mlflow_runs(project: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_kill_9_mid_training_then_repro_resumes_into_the_same_run(tmp_path: Path, uninterrupted_metrics):
    expected = uninterrupted_metrics
    project = make_resume_project(tmp_path / "project")
    stage = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=project, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    last = project / "checkpoints" / "mlp_digits" / "last.ckpt"
    deadline = time.monotonic() + 300
    while checkpoint_epoch(last) < 3:  # a few epochs done, several to go
        assert stage.poll() is None, f"dvc repro ended before it could be killed:\n{stage.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint of epoch 3 within 300 s"
        time.sleep(0.2)
    import psutil  # a dependency of DVC

    pids = [child.pid for child in psutil.Process(stage.pid).children(recursive=True)
            if "pipeline.train" in " ".join(child.cmdline())]
    assert pids, "no train process to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    stage.wait(timeout=60)
    killed_at = checkpoint_epoch(last)
    assert stage.returncode != 0 and 3 <= killed_at < EPOCHS - 1
    assert not (project / "models" / "mlp_digits" / "best.ckpt").exists()
    [run] = mlflow_runs(project)
    assert run.info.status == "RUNNING"

    again = dvc("repro", cwd=project)
    assert "mlp_digits: resuming from checkpoints/mlp_digits/" in again.stdout

    [after] = mlflow_runs(project)  # the same run, finished, not a second one
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["resume.count"] == "1"
    summary = json.loads((project / "runs" / "mlp_digits.json").read_text())
    assert summary["resumed_from"] is not None and summary["epochs_trained"] == EPOCHS
    assert not (project / "checkpoints" / "mlp_digits").exists()  # cleaned up once finished
    # Every epoch's curve is in the run once resumed (epochs before the kill came from the checkpoint).
    from mlflow import MlflowClient

    history = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_metric_history(run.info.run_id, "val/loss")
    # Every epoch, at MLflow step = epoch. A kill -9 lands anywhere, also between an epoch's logging and its
    # checkpoint: that epoch is trained again on resume, and the run then holds it twice at the same step.
    assert sorted({m.step for m in history}) == list(range(EPOCHS))
    curve = (project / "plots" / "learning_curves" / "mlp_digits.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in curve[1:]] == [str(e) for e in range(EPOCHS)]
    # Resumed, the training ends exactly where the uninterrupted one did.
    assert json.loads((project / "metrics" / "mlp_digits.json").read_text()) == expected
    assert after.data.metrics["test/accuracy"] == pytest.approx(expected["test/accuracy"])


def test_a_corrupt_resume_checkpoint_is_named_and_nothing_is_overwritten(project):
    from mlflow import MlflowClient

    from conftest import python

    python("-m", "pipeline.prepare", cwd=project)
    # An interrupted training's folder as a crash may leave it: resume.json of a real run, a damaged last.ckpt.
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("interrupted"))
    folder = project / "checkpoints" / "softmax_digits"
    folder.mkdir(parents=True)
    damaged = b"PK\x03\x04" + bytes(range(256)) * 8  # the start of a zip, cut off
    (folder / "last.ckpt").write_bytes(damaged)
    fingerprint = subprocess.run(
        [sys.executable, "-c", "from pipeline.core import resume; from pipeline.params import load_experiment; "
         "print(resume.fingerprint(load_experiment('softmax_digits')[1]))"],
        cwd=project, env=env(), capture_output=True, text=True, check=True,
    ).stdout.strip()
    (folder / "resume.json").write_text(json.dumps({"run_id": run.info.run_id, "fingerprint": fingerprint}))

    result = python("-m", "pipeline.train", "softmax_digits", cwd=project, check=False)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert re.fullmatch(
        r"error: checkpoints/softmax_digits/last\.ckpt: unreadable checkpoint \((OSError|RuntimeError)\); to train from "
        r"the start instead, delete checkpoints/softmax_digits and run `dvc repro train@softmax_digits`", line
    ), line
    assert (folder / "last.ckpt").read_bytes() == damaged and not (project / "models").exists()
    assert [r.info.run_id for r in mlflow_runs(project)] == [run.info.run_id]
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # untouched: not reopened, not failed
