"""PPO: GAE and discounted returns, the clipped surrogate, and rollouts through Lightning."""

from __future__ import annotations

import pytest
import torch

from modules.ppo import ProximalPolicyOptimization, clipped_surrogate_loss, generalized_advantages
from pipeline import data
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import ConfigError, model_kwargs

from conftest import quiet_trainer

SPEC = data.DATASETS["cartpole"].spec
SETTINGS = dict(hidden_sizes=[16], num_envs=2, rollout_steps=8, update_epochs=2, num_minibatches=2, gamma=0.9,
                gae_lambda=0.8, clip=0.2, value_coef=0.5, entropy_coef=0.01, steps_per_epoch=16, val_episodes=2,
                solved_return=0.0)


def make(**changes) -> ProximalPolicyOptimization:
    return ProximalPolicyOptimization(data=SPEC, optimizer=OptimizerConfig("adam", 1e-3, 0.0, 0.0, False),
                                      scheduler=SchedulerConfig("none", 1, 0.5, 0), **{**SETTINGS, **changes})


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values)[:, None]  # (T, N = 1)


def test_gae_by_hand():
    rewards, values = column(1.0, 1.0, 1.0), column(0.5, 0.4, 0.3)
    next_value = torch.tensor([0.2])
    # δ_t = r_t + γ V(s_{t+1}) - V(s_t), γ = 0.9: 0.86, 0.87, 0.88; Â_t = δ_t + γλ Â_{t+1}, γλ = 0.72
    advantages, returns = generalized_advantages(rewards, values, column(0.0, 0.0, 0.0), next_value, 0.9, 0.8)
    expected = column(0.86 + 0.72 * (0.87 + 0.72 * 0.88), 0.87 + 0.72 * 0.88, 0.88)
    assert torch.allclose(advantages, expected) and torch.allclose(returns, expected + values)
    # the episode ends at t = 1: δ_1 = 1 - 0.4 has no bootstrap, and Â_0 does not see past it
    advantages, _ = generalized_advantages(rewards, values, column(0.0, 1.0, 0.0), next_value, 0.9, 0.8)
    assert torch.allclose(advantages, column(0.86 + 0.72 * 0.6, 0.6, 0.88))


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_baseline():
    rewards, values = column(1.0, 2.0, 3.0), column(0.3, -0.2, 0.7)
    advantages, returns = generalized_advantages(rewards, values, column(0.0, 0.0, 0.0), torch.tensor([0.0]), 0.5, 1.0)
    discounted = column(1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0)  # G_t = Σ_k γ^k r_{t+k}
    assert torch.allclose(returns, discounted) and torch.allclose(advantages, discounted - values)


def test_gae_with_lambda_zero_is_the_td_error_per_environment():
    rewards = torch.tensor([[1.0, 0.0], [2.0, 1.0]])  # (T = 2, N = 2)
    values = torch.tensor([[0.5, 1.0], [0.25, 2.0]])
    dones = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    advantages, _ = generalized_advantages(rewards, values, dones, torch.tensor([4.0, 8.0]), 0.5, 0.0)
    expected = torch.tensor([[1 + 0.5 * 0.25 - 0.5, 0 - 1.0], [2 + 0.5 * 4 - 0.25, 1 + 0.5 * 8 - 2.0]])
    assert torch.allclose(advantages, expected)


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([1.5, 0.5, 1.1])
    old = torch.tensor([-1.0, -2.0, -0.5])
    advantages = torch.tensor([1.0, -1.0, 2.0])
    # -Â ρ: -1.5, 0.5, -2.2; -Â clip(ρ, 0.8, 1.2): -1.2, 0.8, -2.2; the larger (pessimistic) of each pair
    loss = clipped_surrogate_loss(old + ratio.log(), old, advantages, 0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3)


def test_rollouts_reach_training_through_lightning():
    torch.manual_seed(0)
    model = make(num_envs=2, rollout_steps=8, update_epochs=2, num_minibatches=2, steps_per_epoch=32)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model)
    # an epoch: 32 steps = 2 rollouts of 2 x 8, each 2 passes of 2 minibatches
    assert model.env_steps == 64 and trainer.global_step == 16
    assert float(trainer.callback_metrics["train/env_steps"]) == 64
    assert {"train/loss", "val/mean_return"} <= set(trainer.callback_metrics)


def test_greedy_action_is_the_most_probable_one():
    torch.manual_seed(0)
    model = make()
    observations = torch.randn(6, 4)
    assert torch.equal(model.act_greedy(observations), model(observations)[0].softmax(-1).argmax(-1))


@pytest.mark.parametrize(("change", "message"), [
    ({"gae_lambda": 1.5}, r"^gae_lambda: must be in \[0, 1\], got 1\.5$"),
    ({"clip": 0.0}, r"^clip: must be in \(0, 1\), got 0\.0$"),
    ({"num_minibatches": 17}, r"^num_minibatches: at most num_envs x rollout_steps \(16\) transitions, got 17$"),
    ({"entropy_coef": -0.1}, r"^entropy_coef: must be zero or positive, got -0\.1$"),
    ({"num_envs": 0}, r"^num_envs: must be a positive integer, got 0$"),
    ({"val_episodes": 0}, r"^val_episodes: must be a positive integer, got 0$"),
])
def test_check_config_names_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace("^", r"^model\.")):
        model_kwargs(ProximalPolicyOptimization, {**SETTINGS, **change}, "model", SPEC)
