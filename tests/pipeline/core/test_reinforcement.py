"""The environment dataset and the greedy episodes of reinforcement-learning families."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline import data, datamodules
from pipeline.params import ConfigError, load
from pipeline.core.episodes import greedy_returns
from pipeline.prepare import prepare


def lean_on_the_pole(observations: torch.Tensor) -> torch.Tensor:
    """Push towards the side the pole leans to: a fixed policy that balances for a while."""
    return (observations[:, 2] > 0).long()


def test_greedy_returns_are_reproducible_from_their_seeds():
    first = greedy_returns(lean_on_the_pole, "CartPole-v1", [10, 11, 12, 13])
    assert torch.equal(first, greedy_returns(lean_on_the_pole, "CartPole-v1", [10, 11, 12, 13]))
    assert not torch.equal(first, greedy_returns(lean_on_the_pole, "CartPole-v1", [20, 21, 22, 23]))
    always_left = greedy_returns(lambda o: torch.zeros(len(o), dtype=torch.long), "CartPole-v1", [10, 11])
    assert (always_left < first[:2]).all() and (always_left < 20).all()  # pushing one way topples it fast


def test_an_environment_is_prepared_as_meta_only(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PREPARED", tmp_path)
    with pytest.raises(ConfigError, match=r"cartpole/meta\.json: prepared dataset missing; run `dvc repro prepare`"):
        data.check_prepared("cartpole")
    prepare("cartpole", load().data, tmp_path / "cartpole")
    assert sorted(p.name for p in (tmp_path / "cartpole").iterdir()) == ["meta.json"]
    meta = json.loads((tmp_path / "cartpole" / "meta.json").read_text())
    assert meta["environment"] == "CartPole-v1" and meta["input_shape"] == [4] and meta["num_classes"] == 2
    data.check_prepared("cartpole")
    assert datamodules.make_datamodule("cartpole", 64, 0) is None
    with pytest.raises(ConfigError, match=r"^cartpole: an environment \(CartPole-v1\) has no test split$"):
        data.load_split("cartpole", "test")
