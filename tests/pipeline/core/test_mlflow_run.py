"""What a training leaves in MLflow, on a real SQLite store: a store the project creates lists the project's
experiment alone; a run carries its source (the command that trains it again) and a description; a real
tiny fit through pipeline.core.trainer.build_trainer logs each epoch's metrics at MLflow step = the epoch
(environment steps for a reinforcement-learning family), and MLflow's system metrics when
tracking.system_metrics is on, none when it is off."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from mlflow import MlflowClient

from pipeline import data
from pipeline.core import tracking
from pipeline.core.trainer import SYSTEM_METRICS_SECONDS, LearningCurve, build_trainer
from pipeline.params import family_class, load
from pipeline.prepare import prepare

CONFIG = load(family_checks=False)


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    return uri


def small(name: str, epochs: int):
    experiment = CONFIG.experiments[name]
    model = family_class(experiment.family).small_config(experiment.model)
    return dataclasses.replace(experiment, max_epochs=epochs, model=model)


def fit(experiment, tmp_path, monkeypatch, system_metrics: bool) -> tuple[MlflowClient, str, LearningCurve]:
    """Train `experiment` as the train stage does (its run from tracking.start_run, its Trainer from
    build_trainer) on data prepared under tmp_path; the client, the run id and the learning curve."""
    from pipeline.datamodules import make_datamodule

    prepared = tmp_path / "prepared"
    prepare(experiment.dataset, CONFIG.data, prepared / experiment.dataset)
    monkeypatch.setattr(data, "PREPARED", prepared)
    run_id = tracking.start_run(CONFIG.tracking_experiment, experiment, family_class(experiment.family).CHAPTER)
    torch.manual_seed(experiment.seed)
    model = family_class(experiment.family)(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                                            scheduler=experiment.scheduler, **experiment.model)
    curve = LearningCurve()
    trainer = build_trainer(experiment, tmp_path / "checkpoints", tracking.tracking_uri(), run_id, curve,
                            system_metrics=system_metrics)
    trainer.fit(model, datamodule=make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed))
    return tracking.client(), run_id, curve


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [point.step for point in sorted(client.get_metric_history(run_id, key), key=lambda point: point.step)]


def test_a_store_the_project_creates_lists_only_the_projects_experiment(store):
    client = tracking.client()
    project = tracking.experiment_id(client, CONFIG.tracking_experiment)
    assert [(e.experiment_id, e.name) for e in MlflowClient(store).search_experiments()] == [(project, CONFIG.tracking_experiment)]
    assert tracking.client().search_experiments()[0].name == CONFIG.tracking_experiment  # no Default made again


def test_a_run_carries_the_command_that_trains_it_and_a_description(store, monkeypatch):
    experiment = CONFIG.experiments["cnn_digits"]
    monkeypatch.setenv("DVC_STAGE", "train@cnn_digits")
    tags = tracking.client().get_run(tracking.start_run(CONFIG.tracking_experiment, experiment, 6)).data.tags
    assert tags["mlflow.source.name"] == "dvc repro train@cnn_digits" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.note.content"] == ("cnn_digits: the cnn family (chapter 6 of Mathematical Engineering of Deep "
                                           "Learning) trained on the digits dataset by the DVC stage train@cnn_digits.")
    monkeypatch.delenv("DVC_STAGE")
    tags = tracking.client().get_run(tracking.start_run(CONFIG.tracking_experiment, experiment, 6)).data.tags
    assert tags["mlflow.source.name"] == "python -m pipeline.train cnn_digits"


def test_epoch_metrics_are_at_the_epoch_and_system_metrics_are_sampled(store, tmp_path, monkeypatch):
    assert SYSTEM_METRICS_SECONDS <= 5  # and a fit shorter than that has its sample too (SystemMetrics.stop)
    client, run_id, curve = fit(small("mlp_digits", 3), tmp_path, monkeypatch, system_metrics=True)
    epochs = [row["epoch"] for row in curve.rows]
    assert epochs == [0, 1, 2]
    for key in ("train/loss", "val/loss", "val/accuracy", "train/lr"):
        assert steps(client, run_id, key) == epochs, key  # the learning curve's x
    metrics = client.get_run(run_id).data.metrics
    assert "epoch" not in metrics  # it is the step
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
    assert steps(client, run_id, "system/cpu_utilization_percentage")[0] == 0


def test_no_system_metrics_when_switched_off(store, tmp_path, monkeypatch):
    client, run_id, _ = fit(small("softmax_digits", 2), tmp_path, monkeypatch, system_metrics=False)
    metrics = client.get_run(run_id).data.metrics
    assert "val/loss" in metrics and not [key for key in metrics if key.startswith("system/")]


def test_a_reinforcement_learning_run_is_charted_against_environment_steps(store, tmp_path, monkeypatch):
    experiment = small("dqn_cartpole", 2)
    client, run_id, curve = fit(experiment, tmp_path, monkeypatch, system_metrics=False)
    env_steps = [int(row["train/env_steps"]) for row in curve.rows]
    assert env_steps == [experiment.model["steps_per_epoch"] * (epoch + 1) for epoch in range(2)]
    for key in ("val/mean_return", "train/env_steps", "train/loss"):
        assert steps(client, run_id, key) == env_steps, key
    assert steps(client, run_id, "epoch") == env_steps  # the epoch stays a metric, to chart against it too
