"""What every family declares beside its constructor: `small_config`, the small sizes the tests train it
at (conftest.shrink_params asks each experiment's family, so a new family brings its own)."""

from __future__ import annotations

import copy
import shutil

import yaml

from modules.mlp import FeedforwardNetwork
from pipeline import data
from pipeline.params import PARAMS_FILE, family_class, load

from conftest import shrink_params


def test_shrink_params_takes_the_model_settings_from_each_familys_small_config(tmp_path, monkeypatch):
    shutil.copy(PARAMS_FILE, tmp_path / "params.yaml")
    monkeypatch.setattr(FeedforwardNetwork, "small_config", staticmethod(lambda model: {**model, "hidden_sizes": [3]}))
    shrunk = shrink_params(tmp_path / "params.yaml", keep=("mlp_digits", "cnn_digits"))
    assert shrunk["experiments"]["mlp_digits"]["model"]["hidden_sizes"] == [3]
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == shrunk


def test_every_experiments_small_config_keeps_its_keys_passes_its_checks_and_builds(tmp_path):
    full = load()
    raw = yaml.safe_load(PARAMS_FILE.read_text())["experiments"]
    for name, settings in raw.items():  # small_config leaves its argument as it was
        before = copy.deepcopy(settings["model"])
        small = family_class(settings["family"]).small_config(settings["model"])
        assert settings["model"] == before and list(small) == list(before), name
    shutil.copy(PARAMS_FILE, tmp_path / "params.yaml")
    shrink_params(tmp_path / "params.yaml")
    shrunk = load(tmp_path / "params.yaml")  # every family's check_config, against its dataset
    assert set(shrunk.experiments) == set(full.experiments)
    for experiment in shrunk.experiments.values():
        family_class(experiment.family)(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                                        scheduler=experiment.scheduler, **experiment.model)
