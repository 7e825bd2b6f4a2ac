"""The environment dataset and the shared greedy evaluation of reinforcement-learning families."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from pipeline import data
from pipeline.evaluate import Context
from pipeline.params import ConfigError, load
from pipeline.core.reinforcement import TEST_EPISODES, evaluate_greedy, greedy_returns, return_bucket
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


def test_return_buckets():
    assert [return_bucket(v) for v in (0, 99.9, 100, 474, 475, 500)] == ["0-100", "0-100", "100-200", "400-475", "475+", "475+"]


def test_evaluate_greedy_writes_the_plot_rows_and_aggregates(tmp_path):
    from modules.dqn import DeepQNetwork

    experiment = load().experiments["dqn_cartpole"]
    torch.manual_seed(0)
    model = DeepQNetwork(data=data.DATASETS["cartpole"].spec, optimizer=experiment.optimizer,
                         scheduler=experiment.scheduler, **experiment.model).eval()
    context = Context(experiment, None, None, {}, tmp_path / "figures", tmp_path / "predictions.csv")
    context.figures.mkdir()
    results = evaluate_greedy(model, context)
    again = evaluate_greedy(model, context)
    assert results == again
    returns = greedy_returns(model.act_greedy, "CartPole-v1", [10_000 + i for i in range(TEST_EPISODES)])
    assert results["test/mean_return"] == pytest.approx(float(returns.mean()))
    assert results["test/std_return"] == pytest.approx(float(returns.std()), abs=1e-5)
    assert results["test/min_return"] == float(returns.min()) and results["test/max_return"] == float(returns.max())
    rows = list(csv.DictReader(context.predictions.open()))
    assert len(rows) == TEST_EPISODES and {row["actual"] for row in rows} == {"greedy policy"}
    assert (context.figures / "test_returns.png").exists()


def test_an_environment_is_prepared_as_meta_only(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PREPARED", tmp_path)
    with pytest.raises(ConfigError, match=r"cartpole/meta\.json: prepared dataset missing; run `dvc repro prepare`"):
        data.check_prepared("cartpole")
    prepare("cartpole", load().data, tmp_path / "cartpole")
    assert sorted(p.name for p in (tmp_path / "cartpole").iterdir()) == ["meta.json"]
    meta = json.loads((tmp_path / "cartpole" / "meta.json").read_text())
    assert meta["environment"] == "CartPole-v1" and meta["input_shape"] == [4] and meta["num_classes"] == 2
    data.check_prepared("cartpole")
    assert data.make_datamodule("cartpole", 64, 0) is None
    with pytest.raises(ConfigError, match=r"^cartpole: an environment \(CartPole-v1\) has no test split$"):
        data.load_split("cartpole", "test")
