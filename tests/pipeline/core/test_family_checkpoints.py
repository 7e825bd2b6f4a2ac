"""Every default experiment's model is rebuilt by `MODEL.load_from_checkpoint(path)` alone: the family's
constructor arguments are saved in the checkpoint as plain values (read with weights_only=True).
tests/e2e/test_pipeline_e2e.py does the same with the checkpoints a real `dvc repro` trained."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from pipeline import data
from pipeline.params import family_class, load

CONFIG = load()


@pytest.mark.parametrize("name", list(CONFIG.experiments))
def test_load_from_checkpoint_rebuilds_the_model_from_the_checkpoint_alone(name, tmp_path):
    experiment = CONFIG.experiments[name]
    model_cls = family_class(experiment.family)
    torch.manual_seed(0)
    model = model_cls(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                      scheduler=experiment.scheduler, **experiment.model)
    path = tmp_path / "model.ckpt"
    # the keys Lightning's checkpoint connector writes for the model
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": L.__version__}, path)

    rebuilt = model_cls.load_from_checkpoint(path, map_location="cpu")

    assert rebuilt.data_spec == model.data_spec and rebuilt.optimizer_config == model.optimizer_config
    assert rebuilt.scheduler_config == model.scheduler_config
    assert model.state_dict().keys() == rebuilt.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))
    assert set(model.hparams) == {"data", "optimizer", "scheduler", *experiment.model}
