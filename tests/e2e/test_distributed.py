"""DDP on CPU (gloo) with 2 processes and bf16-mixed precision through the train stage: one MLflow
run, one checkpoint, rank 0 writes."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from conftest import python, run


@pytest.mark.slow
def test_two_process_ddp_bf16_training_makes_one_run_and_one_checkpoint(project):
    params_file = project / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["experiments"]["mlp_digits"]["trainer"] = {"devices": 2, "strategy": "ddp", "precision": "bf16-mixed"}
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    python("-m", "pipeline.prepare", cwd=project)

    python("-m", "pipeline.train", "mlp_digits", cwd=project)

    summary = json.loads((project / "runs" / "mlp_digits.json").read_text())
    assert summary["world_size"] == 2
    assert sorted(p.name for p in (project / "models").iterdir()) == ["mlp_digits"]  # no staging left behind
    assert sorted(p.name for p in (project / "models" / "mlp_digits").iterdir()) == ["best.ckpt", "config.json"]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("mlp_digits", "FINISHED")]
    run = runs[0]
    assert run.info.run_id == summary["mlflow_run_id"]
    assert run.data.tags["world_size"] == "2"
    assert run.data.params["trainer.strategy"] == "ddp" and run.data.params["trainer.devices"] == "2"
    assert run.data.params["trainer.precision"] == "bf16-mixed"
    epochs = raw["experiments"]["mlp_digits"]["max_epochs"]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")) == list(range(epochs))  # by rank 0
    system = [m.step for m in client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")]
    assert system and sorted(system) == list(range(len(system)))  # sampled by rank 0 alone: no step twice
    # The checkpoints folder is gone once training finished; only models/mlp_digits holds the weights.
    assert not (project / "checkpoints" / "mlp_digits").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["linear_diabetes", "softmax_digits"])
def test_two_process_evaluation_counts_every_test_sample_once(project, name):
    """The same checkpoint evaluated by 1 and by 2 processes gives the same metrics, exactly. The
    diabetes test split has an odd size (89): a DistributedSampler would pad it to 90."""
    params_file = project / "params.yaml"
    python("-m", "pipeline.prepare", cwd=project)
    python("-m", "pipeline.train", name, cwd=project)
    python("-m", "pipeline.evaluate", name, cwd=project)
    metrics_file = project / "metrics" / f"{name}.json"
    single = json.loads(metrics_file.read_text())
    predictions_file = project / "plots" / "predictions" / f"{name}.csv"
    single_predictions = predictions_file.read_text()
    metrics_file.unlink()

    raw = yaml.safe_load(params_file.read_text())
    raw["experiments"][name]["trainer"] = {"devices": 2, "strategy": "ddp"}
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    evaluated = python("-m", "pipeline.evaluate", name, cwd=project)

    assert "test samples on 2 process(es)" in evaluated.stdout
    assert json.loads(metrics_file.read_text()) == single
    assert predictions_file.read_text() == single_predictions  # every sample, once, in the split's order
    if name == "linear_diabetes":
        meta = json.loads((project / "data" / "prepared" / "diabetes" / "meta.json").read_text())
        assert meta["sizes"]["test"] % 2 == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gan_digits", "logistic_breast_cancer", "reinforce_cartpole"])
def test_families_that_failed_or_hung_under_two_process_ddp_train(project, name):
    # gan_digits failed: its critic's backward leaves the generator without gradients, which DDP refuses unless
    # it looks for unused parameters (GenerativeAdversarialNetwork.UNUSED_PARAMETERS, pipeline.core.trainer.strategy).
    # logistic_breast_cancer (L-BFGS) hung: each process's line search decided on its own loss
    # (FamilyModule.optimizer_step). reinforce_cartpole hung: whole episodes gave the processes different
    # numbers of batches (Reinforce.experience). A hang ends at the timeout.
    params_file = project / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["experiments"][name]["trainer"] = {**raw["experiments"][name].get("trainer", {}), "devices": 2, "strategy": "ddp"}
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    python("-m", "pipeline.prepare", cwd=project)

    run([sys.executable, "-m", "pipeline.train", name], cwd=project, timeout=300)

    summary = json.loads((project / "runs" / f"{name}.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_trained"] >= 1
