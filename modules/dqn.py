"""Deep Q-network (ch. 8): Q-learning with a neural network, experience replay and a target network.

The action-value function Q_θ(s, a) (a network: observation s -> one value per action) is fitted to
the temporal-difference target of a transition (s, a, r, s', d) drawn from the replay buffer:

    y = r + γ (1 - d) max_a' Q_θ⁻(s', a')                       (DQN)
    y = r + γ (1 - d) Q_θ⁻(s', argmax_a' Q_θ(s', a'))            (double DQN: θ chooses, θ⁻ evaluates)

with d = 1 only when the episode terminated (a time-limit truncation is not terminal: its s' still
has a value), γ the discount and θ⁻ the target network's weights, moved towards θ as
θ⁻ <- τ θ + (1 - τ) θ⁻ every `target_update` gradient steps (τ = 1: a copy). The loss is the Huber
loss of Q_θ(s, a) - y (δ = 1: squared below 1, absolute above, so large TD errors do not blow up
the gradient). Acting is ε-greedy: a uniformly random action with probability ε, else
argmax_a Q_θ(s, a), with ε decaying linearly from ε_start to ε_end over the first
`exploration_steps` environment steps.

Shapes: observations (B, D), actions (B,), rewards and terminations (B,), Q values (B, A).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules._exploration import epsilon_schedule
from modules._feedforward import feedforward, small_widths
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.episodes import make_env
from pipeline.core.reinforcement import ReinforcementModule


def td_target(reward: torch.Tensor, next_q_target: torch.Tensor, terminated: torch.Tensor, gamma: float,
              next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """y (B,) = r + γ (1 - d) Q_θ⁻(s', a*), a* = argmax of Q_θ⁻(s', ·) or, given next_q_online (double
    DQN), of Q_θ(s', ·). next_q_target, next_q_online: (B, A)."""
    chooser = next_q_target if next_q_online is None else next_q_online
    next_value = next_q_target.gather(1, chooser.argmax(dim=1, keepdim=True)).squeeze(1)  # (B,)
    return reward + gamma * (1.0 - terminated) * next_value


class ReplayBuffer:
    """The last `capacity` transitions (s, a, r, s', d) in a ring: the oldest is overwritten first;
    minibatches are drawn uniformly, with replacement, from the transitions stored."""

    def __init__(self, capacity: int, observation_shape: tuple[int, ...]):
        self.capacity = capacity
        self.observations = np.zeros((capacity, *observation_shape), dtype=np.float32)
        self.next_observations = np.zeros((capacity, *observation_shape), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.added = 0  # transitions ever added; the next goes to added % capacity

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(self, observation, action: int, reward: float, next_observation, terminated: bool) -> None:
        i = self.added % self.capacity
        self.observations[i], self.actions[i], self.rewards[i] = observation, action, reward
        self.next_observations[i], self.terminated[i] = next_observation, terminated
        self.added += 1

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(len(self), (batch_size,), generator=generator).numpy()
        return {
            "observation": torch.from_numpy(self.observations[index]),  # (B, D)
            "action": torch.from_numpy(self.actions[index]),  # (B,)
            "reward": torch.from_numpy(self.rewards[index]),
            "next_observation": torch.from_numpy(self.next_observations[index]),
            "terminated": torch.from_numpy(self.terminated[index]),
        }

    def state_dict(self) -> dict:
        n = len(self)
        arrays = ("observations", "next_observations", "actions", "rewards", "terminated")
        return {"added": self.added, **{name: torch.from_numpy(getattr(self, name)[:n].copy()) for name in arrays}}

    def load_state_dict(self, state: dict) -> None:
        self.added = state["added"]
        for name in ("observations", "next_observations", "actions", "rewards", "terminated"):
            stored = state[name].numpy()
            getattr(self, name)[: len(stored)] = stored


def q_network(input_size: int, hidden_sizes: list[int], actions: int) -> nn.Sequential:
    """s (B, D) -> [affine -> ReLU] x L -> affine -> Q(s, ·) (B, A)."""
    return feedforward([input_size, *hidden_sizes, actions], "relu")


class DeepQNetwork(ReinforcementModule):
    """DQN: ε-greedy rollouts into a replay buffer; one Huber TD step per `train_frequency` env steps."""

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        hidden_sizes: list[int],  # widths of the Q network's hidden layers
        gamma: float,  # discount γ in [0, 1)
        buffer_size: int,  # replay capacity: the last transitions kept
        minibatch_size: int,  # transitions drawn from the buffer per gradient step
        learning_starts: int,  # environment steps of acting before the first gradient step
        train_frequency: int,  # environment steps per gradient step
        target_update: int,  # gradient steps between target-network updates
        tau: float,  # target update θ⁻ <- τ θ + (1 - τ) θ⁻, in (0, 1]; 1 is a copy
        epsilon_start: float,  # exploration rate ε at the first step
        epsilon_end: float,  # ε after the decay
        exploration_steps: int,  # environment steps over which ε decays linearly
        double: bool,  # double DQN: the online network chooses a', the target network evaluates it
        steps_per_epoch: int,  # environment steps per epoch
        val_episodes: int,  # greedy validation episodes per epoch (fixed seeds)
        solved_return: float,  # stop once val/mean_return reaches it; 0: train every epoch
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler, steps_per_epoch=steps_per_epoch,
                         val_episodes=val_episodes, solved_return=solved_return)
        self.hp = SimpleNamespace(  # the constructor's settings, read by the rollouts and the loss
            gamma=gamma, buffer_size=buffer_size, minibatch_size=minibatch_size, learning_starts=learning_starts,
            train_frequency=train_frequency, target_update=target_update, tau=tau, epsilon_start=epsilon_start,
            epsilon_end=epsilon_end, exploration_steps=exploration_steps, double=double,
        )
        observation_size = int(np.prod(data.input_shape))
        self.q_network = q_network(observation_size, hidden_sizes, data.num_classes)
        self.target_network = q_network(observation_size, hidden_sizes, data.num_classes)
        self.target_network.load_state_dict(self.q_network.state_dict())
        self.target_network.requires_grad_(False)
        self._env = None

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        ReinforcementModule.check_config(model, data)
        if not 0 <= model["gamma"] < 1:
            raise ValueError(f"gamma: must be in [0, 1), got {model['gamma']}")
        if not 0 < model["tau"] <= 1:
            raise ValueError(f"tau: must be in (0, 1], got {model['tau']}")
        for key in ("epsilon_start", "epsilon_end"):
            if not 0 <= model[key] <= 1:
                raise ValueError(f"{key}: must be a probability in [0, 1], got {model[key]}")
        for key in ("buffer_size", "minibatch_size", "train_frequency", "target_update", "exploration_steps"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if model["learning_starts"] < model["minibatch_size"]:
            raise ValueError(f"learning_starts: must be at least minibatch_size ({model['minibatch_size']}) "
                             f"so the first minibatch has transitions to draw, got {model['learning_starts']}")
        if any(width < 1 for width in model["hidden_sizes"]):
            raise ValueError(f"hidden_sizes: widths must be positive integers, got {model['hidden_sizes']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        """A few hundred environment steps an epoch, a small buffer that starts learning early."""
        return {**model, "hidden_sizes": small_widths(model["hidden_sizes"]), "steps_per_epoch": 200, "val_episodes": 2,
                "solved_return": 0, "buffer_size": 1000, "minibatch_size": 32, "learning_starts": 64,
                "exploration_steps": 200}

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.q_network(observations)  # (B, A)

    def act_greedy(self, observations: torch.Tensor) -> torch.Tensor:
        return self.q_network(observations).argmax(dim=1)

    # --- rollouts -------------------------------------------------------------------------------

    def _start_rollouts(self) -> None:
        hp = self.hp
        self._env = make_env(self.environment)
        self._buffer = ReplayBuffer(hp.buffer_size, self.data_spec.input_shape)
        seed = self.rollout_seed()
        self._generator = torch.Generator().manual_seed(seed)
        restored = self.restored_state()
        if restored is not None:  # the episode in progress at the checkpoint starts again
            self._buffer.load_state_dict(restored["buffer"])
            self._generator.set_state(restored["generator"])
            seed = int(restored["seed"]) + self.env_steps
        self._seed = seed
        self._observation, _ = self._env.reset(seed=seed)
        self._episode_return = 0.0

    def rollout_state(self) -> dict:
        if self._env is None:
            return {}
        return {"buffer": self._buffer.state_dict(), "generator": self._generator.get_state(), "seed": self._seed}

    def experience(self) -> Iterator[dict[str, torch.Tensor]]:
        if self._env is None:
            self._start_rollouts()
        hp, env, buffer, generator = self.hp, self._env, self._buffer, self._generator
        for _ in range(self.steps_per_epoch):
            epsilon = epsilon_schedule(self.env_steps, hp.epsilon_start, hp.epsilon_end, hp.exploration_steps)
            if float(torch.rand((), generator=generator)) < epsilon:
                action = int(torch.randint(self.data_spec.num_classes, (), generator=generator))
            else:
                with torch.no_grad():
                    observation = torch.as_tensor(self._observation, device=self.device)[None]
                    action = int(self.q_network(observation).argmax())
            next_observation, reward, terminated, truncated, _ = env.step(action)
            buffer.add(self._observation, action, reward, next_observation, terminated)
            self._episode_return += reward
            self.env_steps += 1
            if terminated or truncated:
                self.episode_finished(self._episode_return)
                self._episode_return = 0.0
                next_observation, _ = env.reset()
            self._observation = next_observation
            if self.env_steps >= hp.learning_starts and self.env_steps % hp.train_frequency == 0:
                yield buffer.sample(hp.minibatch_size, generator)

    # --- learning -------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        q_value = self.q_network(batch["observation"]).gather(1, batch["action"][:, None]).squeeze(1)  # (B,)
        with torch.no_grad():
            next_q_target = self.target_network(batch["next_observation"])  # (B, A)
            next_q_online = self.q_network(batch["next_observation"]) if self.hp.double else None
            target = td_target(batch["reward"], next_q_target, batch["terminated"], self.hp.gamma, next_q_online)
        return F.huber_loss(q_value, target, delta=1.0)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.trainer.global_step % self.hp.target_update == 0:
            with torch.no_grad():
                for target, online in zip(self.target_network.parameters(), self.q_network.parameters()):
                    target.lerp_(online, self.hp.tau)  # θ⁻ <- θ⁻ + τ (θ - θ⁻)


MODEL = DeepQNetwork
