"""REINFORCE with a baseline: returns-to-go against a loop over the sum, the policy-gradient loss by hand
and against autograd's score function, episodes through Lightning."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Categorical

from modules.reinforce import Reinforce, discounted_returns, policy_gradient_loss
from pipeline import data
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import ConfigError, model_kwargs

from conftest import quiet_trainer

SPEC = data.DATASETS["cartpole"].spec
SETTINGS = dict(hidden_sizes=[16], num_envs=2, gamma=0.99, value_coef=0.5, steps_per_epoch=50, val_episodes=2,
                solved_return=0.0)


def make(**changes) -> Reinforce:
    return Reinforce(data=SPEC, optimizer=OptimizerConfig("adam", 1e-2, 0.0, 0.0, False),
                     scheduler=SchedulerConfig("none", 1, 0.5, 0), **{**SETTINGS, **changes})


def test_discounted_returns_are_the_sums_of_the_definition():
    rewards = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    gamma = 0.9
    # G_t = Σ_{k ≥ t} γ^{k-t} r_k, as a double loop over the definition
    expected = [sum(gamma ** (k - t) * float(rewards[k]) for k in range(t, 4)) for t in range(4)]
    assert discounted_returns(rewards, gamma).tolist() == pytest.approx(expected)
    assert discounted_returns(rewards, 0.0).tolist() == rewards.tolist()  # γ = 0: the reward alone
    assert discounted_returns(torch.ones(3), 1.0).tolist() == [3.0, 2.0, 1.0]  # γ = 1: the steps left


def test_policy_gradient_loss_by_hand_and_its_gradient_is_the_score_function_estimate():
    logits = torch.tensor([[0.2, -0.4], [1.0, 0.0], [0.0, 0.5]], requires_grad=True)
    actions = torch.tensor([0, 1, 1])
    advantages = torch.tensor([1.5, -0.5, 2.0])
    logprob = Categorical(logits=logits).log_prob(actions)
    loss = policy_gradient_loss(logprob, advantages)
    assert loss.item() == pytest.approx(-(logprob * advantages).sum().item() / 3)
    loss.backward()
    # ∇_logits log softmax(logits)[a] = onehot(a) - softmax(logits): the estimate -(1/n) Σ_t (onehot - π) Â_t
    score = torch.nn.functional.one_hot(actions, 2) - logits.detach().softmax(dim=1)
    assert torch.allclose(logits.grad, -(score * advantages[:, None]) / 3, atol=1e-6)


def test_advantages_carry_no_gradient_into_the_baseline():
    baseline = torch.tensor([0.3, 0.7], requires_grad=True)
    logprob = torch.tensor([-0.5, -1.0], requires_grad=True)
    policy_gradient_loss(logprob, torch.tensor([1.0, 2.0]) - baseline).backward()
    assert baseline.grad is None and logprob.grad is not None


def test_a_batch_is_whole_episodes_with_their_returns_to_go():
    torch.manual_seed(0)
    model = make(num_envs=3)
    model._start_rollouts()
    batch = model._episodes_batch()
    n = len(batch["action"])
    assert batch["observation"].shape == (n, 4) and batch["return"].shape == (n,) and model.env_steps == n
    # CartPole pays 1 a step: within an episode of length T, G_t = (1 - γ^{T-t}) / (1 - γ); each episode's
    # last step has G = 1, so the batch holds num_envs ends
    assert int((batch["return"] == 1.0).sum()) == 3
    ends = (batch["return"] == 1.0).nonzero().squeeze(1).tolist()
    first = batch["return"][: ends[0] + 1]
    steps_left = torch.arange(len(first), 0, -1, dtype=torch.float32)
    assert torch.allclose(first, (1 - 0.99 ** steps_left) / (1 - 0.99), atol=1e-4)


def test_episodes_reach_training_through_lightning():
    torch.manual_seed(0)
    model = make(num_envs=2, steps_per_epoch=50)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model)
    assert model.env_steps >= 100 and trainer.global_step >= 2
    assert {"train/loss", "val/mean_return", "train/episode_return"} <= set(trainer.callback_metrics)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))  # the policy and the baseline learn



def test_under_ddp_an_epoch_ends_when_every_process_has_taken_its_steps():
    # Whole episodes give each process its own number of batches; DDP needs one number for all.
    torch.manual_seed(0)
    model = make(num_envs=1, steps_per_epoch=1)  # this process is done after its first batch
    asked = []

    def all_done(done: bool, all: bool) -> bool:  # the others are done after three batches
        asked.append((done, all))
        return len(asked) > 3

    model.trainer = SimpleNamespace(world_size=2, global_rank=0, strategy=SimpleNamespace(reduce_boolean_decision=all_done))
    assert len(list(model.experience())) == 3
    assert asked == [(False, True)] + [(True, True)] * 3
    model.trainer = SimpleNamespace(world_size=1, global_rank=0)  # one process: its own steps alone decide
    assert len(list(model.experience())) == 1

@pytest.mark.parametrize(("change", "message"), [
    ({"gamma": 1.5}, r"^gamma: must be in \[0, 1\], got 1\.5$"),
    ({"value_coef": 0.0}, r"^value_coef: must be positive \(the baseline learns from it\), got 0\.0$"),
    ({"num_envs": 0}, r"^num_envs: must be a positive integer, got 0$"),
    ({"hidden_sizes": [0]}, r"^hidden_sizes: widths must be positive integers, got \[0\]$"),
])
def test_check_config_names_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace("^", r"^model\.")):
        model_kwargs(Reinforce, {**SETTINGS, **change}, "model", SPEC)
