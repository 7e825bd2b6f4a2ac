"""A trained model outside the pipeline: the checkpoint models/EXPERIMENT/ keeps, and the MLflow model
each training logs to its run and registers.

The checkpoint is the part of Lightning's that is a function of params, data and code (the weights and
the constructor's arguments): two trainings of the same experiment write the same bytes, so DVC's hash
of models/EXPERIMENT does not change when nothing did. `MODEL.load_from_checkpoint(path)` reads it.

The MLflow model (`runs:/<run id>/model`, `models:/<experiment>/<version>`) is one of two:
- a supervised family on samples (SupervisedModule): a pyfunc model taking raw inputs, in the
  dataset's own units, which it standardizes with the training split's mean and std (prepare's
  meta.json) and answers with the family's predictions (class probabilities, P(y=1), or values in
  the target's units);
- any other family: the `mlflow.pytorch` flavour of the module (its inputs are the family's own).
Either is registered as a new version of the registered model named after the experiment.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import torch

MODEL_PATH = "model"  # the model's name in its run: runs:/<run id>/model
MODEL_TAG = "model.md5"  # the run tag naming the md5 of the checkpoint it trained (pipeline.core.tracking.find_model_run)
CHECKPOINT, STANDARDIZATION = "best.ckpt", "standardization.json"  # the pyfunc model's data
KEPT = ("state_dict", "hyper_parameters", "hparams_name", "pytorch-lightning_version")  # what load_from_checkpoint reads
# What loading the model needs, pinned to the versions that trained it; stated, not inferred (MLflow's
# inference starts a subprocess that takes seconds of every training).
REQUIREMENTS = ("torch", "lightning", "torchmetrics", "numpy", "mlflow", "cloudpickle")


def slim_checkpoint(full: Path) -> bytes:
    """Lightning's checkpoint `full` without what varies run to run (callback state with absolute
    paths, the loops' progress, optimizer state): the weights and constructor arguments only."""
    checkpoint = torch.load(full, map_location="cpu", weights_only=True)
    buffer = io.BytesIO()  # a buffer: torch.save to a path names its archive after the file
    torch.save({key: checkpoint[key] for key in KEPT if key in checkpoint}, buffer)
    return buffer.getvalue()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def standardization(model, meta: dict) -> dict:
    """What turns raw inputs into the model's and its outputs back: the family's class, the training
    split's input mean and std, the target's for regression (prepare's meta.json)."""
    keys = ("input_mean", "input_std", "target_mean", "target_std")
    return {"module": type(model).__module__, "class": type(model).__qualname__, **{k: meta[k] for k in keys if k in meta}}


def to_model_input(raw, info: dict, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Raw samples (n, *input_shape) or flattened (n, features) -> what the model was trained on."""
    x = np.asarray(raw)
    x = x.reshape(len(x), -1)
    if "input_mean" not in info:  # token ids: not standardized
        return torch.as_tensor(x.astype(np.int64)).reshape(len(x), *input_shape)
    x = (x.astype(np.float64) - np.asarray(info["input_mean"])) / np.asarray(info["input_std"])
    return torch.as_tensor(x.astype(np.float32)).reshape(len(x), *input_shape)


def predict_raw(model, info: dict, raw) -> np.ndarray:
    """The family's predictions for raw samples, in the target's units for regression."""
    with torch.no_grad():
        prediction = model.predict(to_model_input(raw, info, model.data_spec.input_shape))
    if "target_mean" in info:
        prediction = prediction * info["target_std"] + info["target_mean"]
    return prediction.numpy()


class RawInputModel:
    """MLflow's pyfunc model of a supervised family (loaded through _load_pyfunc): raw samples in,
    predictions out (predict_raw). `folder`: the model's data, the checkpoint and standardization.json."""

    def __init__(self, folder: Path):
        self.info = json.loads((folder / STANDARDIZATION).read_text())
        family = getattr(importlib.import_module(self.info["module"]), self.info["class"])
        self.model = family.load_from_checkpoint(folder / CHECKPOINT, map_location="cpu").eval()

    def predict(self, model_input, params=None):
        if hasattr(model_input, "to_numpy"):  # a DataFrame: one column per feature
            model_input = model_input.to_numpy()
        return predict_raw(self.model, self.info, model_input)


def _load_pyfunc(path: str) -> RawInputModel:
    """MLflow's entry point of a pyfunc model whose loader module this is (`loader_module`)."""
    return RawInputModel(Path(path))


def log_raw_input_model(model, run_id: str, checkpoint: Path, meta: dict, example: torch.Tensor):
    """Log the pyfunc model of a supervised family to the run; `example`: a few prepared samples,
    turned back into raw inputs for the input example. MLflow's ModelInfo."""
    from mlflow.models import infer_signature

    # The model as it is served: loaded from the checkpoint on the CPU in float32 (the trained module may
    # be on a GPU, or in bf16 after a "bf16-true" training).
    model = type(model).load_from_checkpoint(checkpoint, map_location="cpu").eval()
    info = standardization(model, meta)
    raw = example.reshape(len(example), -1).double().numpy()
    if "input_mean" in info:
        raw = raw * np.asarray(info["input_std"]) + np.asarray(info["input_mean"])
    else:
        raw = raw.astype(np.int64)
    raw = raw.reshape(len(example), *model.data_spec.input_shape)
    output = predict_raw(model, info, raw)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)  # not its INFO line on validating the example
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        data.mkdir()
        shutil.copyfile(checkpoint, data / CHECKPOINT)
        (data / STANDARDIZATION).write_text(json.dumps(info, indent=2) + "\n")
        return _log(run_id, mlflow.pyfunc, loader_module=__name__, data_path=str(data),
                    signature=infer_signature(raw, output), input_example=raw)


def log_pytorch_model(family, run_id: str, checkpoint: Path):
    """Log the module `family` loads from `checkpoint` in MLflow's pytorch flavour (a family whose inputs
    are its own: noise, a graph, observations). Loaded afresh: the trained module holds its Trainer.
    MLflow's ModelInfo."""
    import mlflow.pytorch

    model = family.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    # Pickled: MLflow's default, a torch.export graph, needs an example of forward's inputs, which differ by
    # family. Its warning about unpickling is not news to the stage's log: loading runs this project's code.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    return _log(run_id, mlflow.pytorch, pytorch_model=model, serialization_format="pickle")


def _log(run_id: str, flavor, **kwargs):
    """MLflow's Model.log into the run `run_id`, which it needs with its experiment as the fluent
    setting: it creates the model entity (the Models tab) in the fluent experiment, not the run's."""
    from mlflow.models import Model

    from pipeline.core import tracking

    run = tracking.client().get_run(run_id)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    mlflow.set_experiment(experiment_id=run.info.experiment_id)
    # The model's user is the run's: MLflow would tag it with MLFLOW_TRACKING_USERNAME, a credential
    # this project never writes into the store.
    return Model.log(None, name=MODEL_PATH, flavor=flavor, run_id=run_id, pip_requirements=requirements(),
                     tags={"mlflow.user": run.info.user_id}, **kwargs)


def register(model_info, run_id: str, name: str, tags: dict[str, str]):
    """A new version of the registered model `name` (created by the first training; a concurrent one
    creating it first is fine), with `tags`. MLflow's ModelVersion."""
    from mlflow.exceptions import MlflowException

    from pipeline.core import tracking

    client = tracking.client()
    try:
        client.create_registered_model(name, description=f"The trainings of the experiment {name} (dvc stage train@{name}).")
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return client.create_model_version(name, source=model_info.model_uri, run_id=run_id, tags=tags,
                                       model_id=model_info.model_id)
