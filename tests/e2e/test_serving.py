"""A trained model people use, end to end: a shrunk cnn_digits trained and evaluated by a real `dvc repro`,
its registered version served by the real `mlflow models serve --env-manager local`, which answers raw
test images (pixel values 0-16, as sklearn's digits are) with the evaluate stage's predictions. Training
again writes the same dvc.lock entry for models/cnn_digits, and evaluate finds the training's MLflow run
from the model alone (no runs/ file: a checkout that pulled the model)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from conftest import copy_project, dvc, env, git_init, python, shrink_params
from slurm_cluster import free_port

pytestmark = pytest.mark.slow

EXPERIMENT = "cnn_digits"  # the README's example


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("serving") / "project")
    shrink_params(project / "params.yaml", keep=(EXPERIMENT,))
    git_init(project)
    dvc("repro", f"evaluate@{EXPERIMENT}", cwd=project)
    return project


def model_hash(project: Path) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    [out] = [o for o in lock["stages"][f"train@{EXPERIMENT}"]["outs"] if o["path"] == f"models/{EXPERIMENT}"]
    return out["md5"]


def raw_test_images(project: Path) -> tuple[np.ndarray, torch.Tensor]:
    """The test split as the dataset has it (integer pixels), and as prepare standardized it."""
    x = torch.load(project / "data" / "prepared" / "digits" / "test.pt", weights_only=True)["x"]
    meta = json.loads((project / "data" / "prepared" / "digits" / "meta.json").read_text())
    raw = x.double().numpy() * meta["input_std"] + meta["input_mean"]
    assert np.abs(raw - np.rint(raw)).max() < 1e-4  # meta.json's mean and std undo prepare's standardization
    return np.rint(raw).astype(np.int64), x


def test_the_served_registered_model_answers_raw_images_as_the_evaluate_stage(trained):
    from pipeline.params import family_class

    summary = json.loads((trained / "runs" / f"{EXPERIMENT}.json").read_text())
    version = summary["registered_version"]
    raw, standardized = raw_test_images(trained)
    port = free_port()
    log = (trained / "serve.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{EXPERIMENT}/{version}",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        cwd=trained, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**env(), "MLFLOW_TRACKING_URI": f"sqlite:///{trained / 'mlflow.db'}", "PYTHONPATH": str(trained)},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (trained / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow models serve did not answer within 120 s"
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps({"inputs": raw.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answered = np.array(json.loads(response.read())["predictions"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()

    rows = list(csv.DictReader((trained / "plots" / "predictions" / f"{EXPERIMENT}.csv").open()))
    assert answered.shape == (len(rows), 10)
    assert answered.argmax(axis=1).tolist() == [int(row["predicted"]) for row in rows]
    model = family_class("cnn").load_from_checkpoint(trained / "models" / EXPERIMENT / "best.ckpt", map_location="cpu").eval()
    with torch.no_grad():
        np.testing.assert_allclose(answered, model.predict(standardized).numpy(), rtol=1e-5, atol=1e-6)


def test_training_again_writes_the_same_model_and_evaluate_finds_its_run_from_the_model_alone(trained):
    before = model_hash(trained)
    first = json.loads((trained / "runs" / f"{EXPERIMENT}.json").read_text())["mlflow_run_id"]
    dvc("repro", "-f", f"train@{EXPERIMENT}", cwd=trained)
    assert model_hash(trained) == before
    second = json.loads((trained / "runs" / f"{EXPERIMENT}.json").read_text())["mlflow_run_id"]
    assert second != first

    shutil.rmtree(trained / "runs")  # as in a checkout that pulled models/ (dvc pull) and trained nothing
    python("-m", "pipeline.evaluate", EXPERIMENT, cwd=trained)
    client = MlflowClient(f"sqlite:///{trained / 'mlflow.db'}")
    metrics = json.loads((trained / "metrics" / f"{EXPERIMENT}.json").read_text())
    assert client.get_run(second).data.metrics["test/accuracy"] == pytest.approx(metrics["test/accuracy"])
    assert [v.version for v in client.search_model_versions(f"name = '{EXPERIMENT}'")] == [2, 1]
