"""Tabular Q-learning and value iteration: the Bellman backups against closed forms, a linear solve and
brute force; the TD update by hand; learning through Lightning with no optimizer."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from modules.q_learning import (TabularQLearning, environment_model, epsilon_greedy, policy_evaluation,
                                q_learning_update, value_iteration)
from pipeline import data
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import ConfigError, model_kwargs

from conftest import quiet_trainer

SPEC = data.DATASETS["frozen_lake"].spec
SETTINGS = dict(alpha=0.5, gamma=0.9, epsilon_start=1.0, epsilon_end=0.1, exploration_steps=100, batch_steps=10,
                steps_per_epoch=50, val_episodes=2, solved_return=0.0)


def make(dataset: str = "frozen_lake", **changes) -> TabularQLearning:
    return TabularQLearning(data=data.DATASETS[dataset].spec, optimizer=OptimizerConfig("adam", 1e-3, 0.0, 0.0, False),
                            scheduler=SchedulerConfig("none", 1, 0.5, 0), **{**SETTINGS, **changes})


def chain(terminate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two states, actions stay (0) and move (1). State 0: stay, reward 0; move to 1, reward 1 (the episode
    ends with probability `terminate` instead). State 1: stay, reward 2; move to 0, reward 0."""
    transitions = torch.zeros(2, 2, 2, dtype=torch.float64)
    transitions[0, 0, 0] = transitions[1, 0, 1] = transitions[1, 1, 0] = 1.0
    transitions[0, 1, 1] = 1.0 - terminate
    rewards = torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    return transitions, rewards


def test_value_iteration_on_a_two_state_chain_solves_the_optimal_policys_linear_system():
    # π* stays in 1 and moves from 0: V(1) = 2 + γ V(1), V(0) = 1 + γ V(1); γ = 0.9: V = (19, 20)
    values, policy = value_iteration(*chain(), 0.9)
    assert torch.allclose(values, torch.tensor([19.0, 20.0], dtype=torch.float64), atol=1e-8)
    assert policy.tolist() == [1, 0]
    # moving from 0 ends the episode half the time: V(0) = max(γ V(0), 1 + γ ½ V(1)) = 1 + 0.45 · 20 = 10
    values, policy = value_iteration(*chain(terminate=0.5), 0.9)
    assert torch.allclose(values, torch.tensor([10.0, 20.0], dtype=torch.float64), atol=1e-8)
    assert policy.tolist() == [1, 0]


def random_mdp(states: int = 5, actions: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random moves that go on with probability 0.9 in all (the rest ends the episode), random rewards."""
    generator = torch.Generator().manual_seed(seed)
    transitions = torch.rand(states, actions, states, generator=generator, dtype=torch.float64)
    transitions = 0.9 * transitions / transitions.sum(dim=2, keepdim=True)
    return transitions, torch.randn(states, actions, generator=generator, dtype=torch.float64)


def test_policy_evaluation_solves_the_bellman_linear_system():
    transitions, rewards = random_mdp()
    policy = torch.tensor([0, 2, 1, 1, 0])
    gamma = 0.95
    p_pi = transitions.numpy()[np.arange(5), policy.numpy()]  # (S, S)
    r_pi = rewards.numpy()[np.arange(5), policy.numpy()]
    expected = np.linalg.solve(np.eye(5) - gamma * p_pi, r_pi)  # (I - γ P_π) V = r_π
    assert np.allclose(policy_evaluation(transitions, rewards, policy, gamma).numpy(), expected, atol=1e-9)


def test_value_iteration_is_the_best_of_every_deterministic_policy():
    transitions, rewards = random_mdp(states=4, actions=3, seed=1)
    values, policy = value_iteration(transitions, rewards, 0.9)
    every = torch.stack([policy_evaluation(transitions, rewards, torch.tensor(p), 0.9)
                         for p in itertools.product(range(3), repeat=4)])  # (3^4, S)
    assert torch.allclose(values, every.max(dim=0).values, atol=1e-8)  # one policy is best in every state at once
    assert torch.allclose(policy_evaluation(transitions, rewards, policy, 0.9), values, atol=1e-8)


def test_cliff_walking_optimum_is_the_13_step_path():
    transitions, rewards, start = environment_model("CliffWalking-v1")
    assert transitions.shape == (48, 4, 48) and start[36] == 1  # the start is the bottom-left cell
    values, _ = value_iteration(transitions, rewards, 0.99)
    assert float(start @ values) == pytest.approx(-sum(0.99 ** t for t in range(13)), abs=1e-8)


def test_frozen_lake_model_is_a_distribution_with_the_episode_ends():
    transitions, rewards, start = environment_model("FrozenLake-v1")
    assert transitions.shape == (16, 4, 16) and start.tolist() == [1.0] + [0.0] * 15
    holes_and_goal = [5, 7, 11, 12, 15]  # entering one ends the episode: no mass goes on into them
    assert transitions[:, :, holes_and_goal].sum() == 0
    assert torch.all(transitions.sum(dim=2) <= 1 + 1e-12)
    # the reward is the probability of stepping into the goal: from 14, moving right reaches it 1/3 of the time
    assert rewards[14, 2] == pytest.approx(1 / 3) and rewards[0].abs().sum() == 0


def test_q_learning_update_by_hand():
    q_table = torch.zeros(3, 2, dtype=torch.float64)
    q_table[1] = torch.tensor([0.5, 2.0])
    q_table[0, 1] = 0.4
    # y = r + γ max_a' Q(1, a') = 1 + 0.9 · 2 = 2.8; δ = 2.8 - 0.4 = 2.4; Q(0, 1) = 0.4 + 0.5 · 2.4 = 1.6
    assert q_learning_update(q_table, 0, 1, 1.0, 1, False, 0.5, 0.9) == pytest.approx(2.4)
    assert q_table[0, 1] == pytest.approx(1.6)
    # a terminal move has no bootstrap: y = r = -1; δ = -1 - 0.5; Q(1, 0) = 0.5 + 0.5 · (-1.5) = -0.25
    assert q_learning_update(q_table, 1, 0, -1.0, 2, True, 0.5, 0.9) == pytest.approx(-1.5)
    assert q_table[1, 0] == pytest.approx(-0.25)
    assert q_table.sum() == pytest.approx(1.6 - 0.25 + 2.0)  # nothing else moved


def test_epsilon_greedy_breaks_ties_at_random_and_explores():
    q_values = [1.0, 3.0, 3.0, 0.0]
    # explore_draw >= ε: a greedy action, the tie between 1 and 2 split by choice_draw
    assert [epsilon_greedy(q_values, 0.1, 0.5, choice) for choice in (0.0, 0.49, 0.5, 0.99)] == [1, 1, 2, 2]
    # explore_draw < ε: any of the 4 actions, by quarters of choice_draw
    assert [epsilon_greedy(q_values, 0.1, 0.05, choice) for choice in (0.0, 0.3, 0.6, 0.9)] == [0, 1, 2, 3]


def test_a_training_step_is_the_td_updates_in_order():
    model = make("cliff_walking")
    moves = [(36, 0, -1.0, 24, 0.0), (24, 1, -1.0, 25, 0.0), (36, 0, -1.0, 24, 0.0)]  # (36, up) twice: in order
    expected = torch.zeros(48, 4, dtype=torch.float64)
    for move in moves:
        q_learning_update(expected, *move, model.alpha, model.gamma)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    model.experience = lambda: iter([model._batch(moves)])
    trainer.fit(model)
    assert trainer.global_step == 1  # one optimizer step a batch: Lightning's counter and checkpoints follow it
    assert torch.allclose(model.q_table.detach(), expected, atol=1e-12)
    # the second visit to (36, up) starts from the first's -0.5: y = -1 + γ max Q(24, ·) = -1, Q = -0.5 + α (-1 + 0.5)
    assert float(model.q_table[36, 0]) == pytest.approx(-0.75)


def test_learning_through_lightning():
    torch.manual_seed(0)
    model = make("cliff_walking", steps_per_epoch=50, batch_steps=10)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model)
    assert model.env_steps == 100 and trainer.global_step == 10
    assert {"train/loss", "val/mean_return", "train/env_steps"} <= set(trainer.callback_metrics)
    assert model.q_table.abs().sum() > 0
    metrics = model.exact_test_metrics()
    assert set(metrics) == {"test/policy_value", "test/optimal_value"}
    assert metrics["test/policy_value"] <= metrics["test/optimal_value"] + 1e-9


def test_cliff_walking_learns_the_optimal_path():
    torch.manual_seed(0)
    model = make("cliff_walking", gamma=0.99, steps_per_epoch=5000, batch_steps=100, exploration_steps=5000)
    quiet_trainer(max_epochs=2).fit(model)
    metrics = model.exact_test_metrics()
    assert metrics["test/policy_value"] == pytest.approx(metrics["test/optimal_value"], abs=1e-6)
    assert model.act_greedy(torch.tensor([36.0])).item() == 0  # up, then along the cliff


@pytest.mark.parametrize(("change", "message"), [
    ({"alpha": 0.0}, r"^alpha: must be in \(0, 1\], got 0\.0$"),
    ({"gamma": 1.0}, r"^gamma: must be in \[0, 1\), got 1\.0$"),
    ({"epsilon_end": 1.5}, r"^epsilon_end: must be a probability in \[0, 1\], got 1\.5$"),
    ({"batch_steps": 0}, r"^batch_steps: must be a positive integer, got 0$"),
    ({"steps_per_epoch": 0}, r"^steps_per_epoch: must be a positive integer, got 0$"),
])
def test_check_config_names_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace("^", r"^model\.")):
        model_kwargs(TabularQLearning, {**SETTINGS, **change}, "model", SPEC)


def test_the_reference_row_is_value_iterations_optimum_and_its_returns():
    from pipeline.references import reference_rows

    [row] = reference_rows("cliff_walking", {"gamma": 0.99})
    assert row["name"] == "value_iteration" and row["family"].endswith("γ = 0.99")
    assert row["test/policy_value"] == pytest.approx(-sum(0.99 ** t for t in range(13)), abs=1e-6)
    assert row["test/mean_return"] == row["test/min_return"] == -13  # the optimal path on every test episode
    [row] = reference_rows("cliff_walking", {"gamma": 0.9})  # V* at the discount it is given
    assert row["test/policy_value"] == pytest.approx(-sum(0.9 ** t for t in range(13)), abs=1e-6)
    assert reference_rows("cliff_walking") == []  # no experiment with a discount on it: no optimum to give


def test_the_reference_discount_is_the_experiments_own(tmp_path):
    """The value_iteration row is V* at the discount of the experiments on its environment, read from the
    params (it was a constant kept beside them by hand); two experiments that disagree are refused."""
    import yaml

    from pipeline import codedeps
    from pipeline.params import PARAMS_FILE, load
    from pipeline.references import reference_params

    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw["targets"] = {}

    def loaded():
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        return load(tmp_path / "params.yaml", family_checks=False)

    assert reference_params("cliff_walking", loaded()) == {"gamma": raw["experiments"]["q_learning_cliff_walking"]["model"]["gamma"]}
    raw["experiments"]["q_learning_cliff_walking"]["model"]["gamma"] = 0.9
    config = loaded()
    assert reference_params("cliff_walking", config) == {"gamma": 0.9}
    assert codedeps.stage_params(config)["baselines"]["references"]["cliff_walking"] == {"gamma": 0.9}  # reruns the baselines
    assert reference_params("digits", config) == {}
    raw["experiments"]["second_cliff"] = copy.deepcopy(raw["experiments"]["q_learning_cliff_walking"])
    raw["experiments"]["second_cliff"]["model"]["gamma"] = 0.95
    with pytest.raises(ConfigError, match=r"^experiments on cliff_walking: model.gamma is 0.9, 0.95; the value_iteration "
                                          r"reference is the optimum at one discount: give them the same gamma$"):
        reference_params("cliff_walking", loaded())
