"""DQN: the TD target, the replay buffer, the ε schedule, the loss, and rollouts through Lightning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.dqn import DeepQNetwork, ReplayBuffer, epsilon_schedule, td_target
from pipeline import data
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import ConfigError, model_kwargs

from conftest import quiet_trainer

SPEC = data.DATASETS["cartpole"].spec
SETTINGS = dict(hidden_sizes=[16], gamma=0.9, buffer_size=500, minibatch_size=8, learning_starts=40, train_frequency=2,
                target_update=1, tau=1.0, epsilon_start=1.0, epsilon_end=0.1, exploration_steps=100, double=False,
                steps_per_epoch=100, val_episodes=2, solved_return=0.0)


def make(**changes) -> DeepQNetwork:
    return DeepQNetwork(data=SPEC, optimizer=OptimizerConfig("adam", 1e-3, 0.0, 0.0, False),
                        scheduler=SchedulerConfig("none", 1, 0.5, 0), **{**SETTINGS, **changes})


def test_td_target_by_hand_with_a_terminal_transition():
    reward = torch.tensor([1.0, 0.5, 1.0])
    next_q_target = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    terminated = torch.tensor([0.0, 0.0, 1.0])  # the last transition ended the episode: no bootstrap
    # y = r + γ (1 - d) max_a' Q⁻(s', a'): 1 + 0.9 * 2, 0.5 + 0.9 * 3, 1
    assert torch.allclose(td_target(reward, next_q_target, terminated, 0.9), torch.tensor([2.8, 3.2, 1.0]))
    # double DQN: the online values choose a' = 0, 1, 1; the target network's values of those: 1, 0, (4)
    next_q_online = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 9.0]])
    assert torch.allclose(td_target(reward, next_q_target, terminated, 0.9, next_q_online), torch.tensor([1.9, 0.5, 1.0]))


def test_replay_buffer_overwrites_the_oldest_and_samples_only_what_it_holds():
    buffer = ReplayBuffer(3, (1,))
    for i in range(5):
        buffer.add([i], i % 2, float(i), [i + 1], i == 4)
    assert len(buffer) == 3 and buffer.added == 5
    assert buffer.observations[:, 0].tolist() == [3.0, 4.0, 2.0]  # 0 and 1 were overwritten by 3 and 4
    batch = buffer.sample(200, torch.Generator().manual_seed(0))
    assert set(batch["observation"][:, 0].tolist()) == {2.0, 3.0, 4.0}
    assert torch.equal(batch["next_observation"], batch["observation"] + 1)  # the fields of a transition stay together
    assert torch.equal(batch["reward"], batch["observation"][:, 0])
    assert torch.equal(batch["terminated"], (batch["observation"][:, 0] == 4).float())
    partial = ReplayBuffer(10, (1,))
    partial.add([7], 0, 0.0, [8], False)
    partial.add([9], 1, 0.0, [10], False)
    assert set(partial.sample(50, torch.Generator().manual_seed(0))["observation"][:, 0].tolist()) == {7.0, 9.0}


def test_replay_sampling_is_uniform_and_seeded():
    buffer = ReplayBuffer(4, (1,))
    for i in range(4):
        buffer.add([i], 0, 0.0, [i], False)
    drawn = buffer.sample(40_000, torch.Generator().manual_seed(1))["observation"][:, 0].long()
    frequencies = torch.bincount(drawn, minlength=4) / len(drawn)
    assert torch.allclose(frequencies, torch.full((4,), 0.25), atol=0.01)
    first, again = (buffer.sample(16, torch.Generator().manual_seed(3))["observation"] for _ in range(2))
    other = buffer.sample(16, torch.Generator().manual_seed(4))["observation"]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_replay_buffer_state_round_trip():
    buffer = ReplayBuffer(4, (2,))
    for i in range(6):
        buffer.add([i, -i], 1, 1.0, [i, i], i == 5)
    copy = ReplayBuffer(4, (2,))
    copy.load_state_dict(buffer.state_dict())
    assert copy.added == 6
    for name in ("observations", "next_observations", "actions", "rewards", "terminated"):
        assert (getattr(copy, name) == getattr(buffer, name)).all(), name


def test_epsilon_decays_linearly_then_stays():
    assert epsilon_schedule(0, 1.0, 0.1, 100) == pytest.approx(1.0)
    assert epsilon_schedule(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert epsilon_schedule(100, 1.0, 0.1, 100) == pytest.approx(0.1)
    assert epsilon_schedule(1000, 1.0, 0.1, 100) == pytest.approx(0.1)


def test_training_step_is_the_huber_loss_of_the_td_error():
    torch.manual_seed(0)
    model = make(double=False)
    with torch.no_grad():  # a target network unlike the online one, so mixing them up shows
        for parameter in model.target_network.parameters():
            parameter.add_(torch.randn_like(parameter))
    batch = {"observation": torch.randn(5, 4), "action": torch.tensor([0, 1, 1, 0, 1]), "reward": torch.ones(5),
             "next_observation": torch.randn(5, 4), "terminated": torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0])}
    q = model.q_network(batch["observation"])
    q_taken = torch.stack([q[i, a] for i, a in enumerate(batch["action"].tolist())])
    next_max = model.target_network(batch["next_observation"]).max(dim=1).values
    target = batch["reward"] + 0.9 * (1 - batch["terminated"]) * next_max
    expected = F.smooth_l1_loss(q_taken, target)
    assert torch.allclose(model.training_step(batch, 0), expected)


def test_rollouts_reach_training_through_lightning():
    torch.manual_seed(0)
    model = make(learning_starts=40, train_frequency=2, steps_per_epoch=100)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model)
    # epoch 0: a step at env steps 40, 42, ..., 100 (31); epoch 1: every other of steps 101..200 (50)
    assert model.env_steps == 200 and trainer.global_step == 81
    assert float(trainer.callback_metrics["train/env_steps"]) == 200
    assert {"train/loss", "train/episode_return", "val/mean_return"} <= set(trainer.callback_metrics)
    assert len(model._buffer) == 200


def test_target_network_is_a_copy_at_tau_one_and_untouched_by_the_optimizer():
    torch.manual_seed(0)
    model = make(tau=1.0, target_update=1)
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model)
    for target, online in zip(model.target_network.parameters(), model.q_network.parameters()):
        assert torch.equal(target, online) and not target.requires_grad


@pytest.mark.parametrize(("change", "message"), [
    ({"gamma": 1.0}, r"^gamma: must be in \[0, 1\), got 1\.0$"),
    ({"tau": 0.0}, r"^tau: must be in \(0, 1\], got 0\.0$"),
    ({"epsilon_end": 1.5}, r"^epsilon_end: must be a probability in \[0, 1\], got 1\.5$"),
    ({"buffer_size": 0}, r"^buffer_size: must be a positive integer, got 0$"),
    ({"learning_starts": 4}, r"^learning_starts: must be at least minibatch_size \(8\) so the first minibatch"),
    ({"steps_per_epoch": 0}, r"^steps_per_epoch: must be a positive integer, got 0$"),
    ({"solved_return": -1.0}, r"^solved_return: must be 0 \(never stop early\) or a positive return, got -1\.0$"),
    ({"hidden_sizes": [0]}, r"^hidden_sizes: widths must be positive integers, got \[0\]$"),
])
def test_check_config_names_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace("^", r"^model\.")):
        model_kwargs(DeepQNetwork, {**SETTINGS, **change}, "model", SPEC)
