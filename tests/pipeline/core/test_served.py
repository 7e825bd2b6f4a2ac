"""The model a training keeps and logs (pipeline.core.served): a slim checkpoint, the same bytes for the same
weights wherever and whenever it was written; and the MLflow model of a supervised family, logged to a real
SQLite store and loaded back through `runs:/` and `models:/`, which standardizes raw inputs as prepare did and
answers what the module answers on standardized ones. tests/e2e/test_serving.py serves one."""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import pytest
import torch

from pipeline import data
from pipeline.core import served, tracking
from pipeline.params import family_class, load_experiment


def full_checkpoint(model, folder: str) -> dict:
    """What Lightning's checkpoint holds beside the model: loop and callback state (with absolute paths)."""
    return {"epoch": 3, "global_step": 60, "pytorch-lightning_version": L.__version__,
            "state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
            "loops": {"fit_loop": {"state_dict": {}}}, "optimizer_states": [{"state": {}, "param_groups": []}],
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"dirpath": folder, "best_model_path": f"{folder}/best.ckpt"}},
            "epoch_so_far": {"train_batches": 20}}


def build(name: str):
    config, experiment = load_experiment(name)
    torch.manual_seed(0)
    model = family_class(experiment.family)(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                                            scheduler=experiment.scheduler, **experiment.model)
    return config, experiment, model.eval()


def test_the_slim_checkpoint_is_the_same_bytes_wherever_it_was_trained_and_loads(tmp_path):
    _, experiment, model = build("mlp_digits")
    paths = []
    for where in ("/home/ann/clone", "/scratch/bob/other"):
        path = tmp_path / f"{len(paths)}.ckpt"
        torch.save(full_checkpoint(model, where), path)
        paths.append(path)
    slim = [served.slim_checkpoint(path) for path in paths]
    assert paths[0].read_bytes() != paths[1].read_bytes() and slim[0] == slim[1]
    assert set(torch.load(io.BytesIO(slim[0]), weights_only=True)) == {"state_dict", "hyper_parameters", "pytorch-lightning_version"}
    (tmp_path / "best.ckpt").write_bytes(slim[0])
    rebuilt = family_class(experiment.family).load_from_checkpoint(tmp_path / "best.ckpt", map_location="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))


@pytest.mark.parametrize("name", ["cnn_digits", "linear_diabetes"])  # images, one mean; tabular regression, per feature
def test_the_mlflow_model_takes_raw_inputs_and_answers_as_the_module(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root of a new store: ./mlruns
    config, experiment, model = build(name)
    spec = model.data_spec
    features = int(np.prod(spec.input_shape))
    rng = np.random.default_rng(0)
    global_scale = data.DATASETS[experiment.dataset].scaling == "global"
    mean = 7.5 if global_scale else rng.normal(size=features).tolist()
    std = 4.0 if global_scale else rng.uniform(0.5, 2.0, size=features).tolist()
    meta = {"dataset": experiment.dataset, "input_mean": mean, "input_std": std}
    if spec.task == "regression":
        meta.update(target_mean=150.0, target_std=75.0)
    raw = rng.normal(5.0, 3.0, size=(6, *spec.input_shape))
    standardized = torch.tensor(((raw.reshape(6, -1) - np.asarray(mean)) / np.asarray(std)).reshape(raw.shape), dtype=torch.float32)
    with torch.no_grad():
        expected = model.predict(standardized).numpy()
    if spec.task == "regression":
        expected = expected * 75.0 + 150.0

    checkpoint = tmp_path / "best.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": L.__version__}, checkpoint)
    run_id = tracking.start_run(config.tracking_experiment, experiment, model.CHAPTER)
    info = served.log_raw_input_model(model, run_id, checkpoint, meta, standardized[:2])
    version = served.register(info, run_id, name, {"git.commit": "abc", "dvc.stage": f"train@{name}"})

    assert (version.name, version.run_id, version.tags) == (name, run_id, {"git.commit": "abc", "dvc.stage": f"train@{name}"})
    for uri in (f"runs:/{run_id}/model", f"models:/{name}/{version.version}"):
        loaded = mlflow.pyfunc.load_model(uri)
        np.testing.assert_allclose(loaded.predict(raw), expected, rtol=1e-5, atol=1e-5)
    [inputs] = loaded.metadata.signature.inputs.inputs
    assert inputs.shape == (-1, *spec.input_shape)
    assert loaded.metadata.get_input_schema() is not None and loaded.metadata.saved_input_example_info is not None
    folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model")
    pins = Path(folder) / "requirements.txt"
    assert [line for line in pins.read_text().splitlines() if line and not line.startswith("#")] == served.requirements()
    # the Models tab: the model belongs to the run's experiment
    client = tracking.client()
    assert client.get_logged_model(info.model_id).experiment_id == client.get_run(run_id).info.experiment_id
    # a second training of the experiment is its next version
    again = served.register(info, run_id, name, {})
    assert int(again.version) == int(version.version) + 1
