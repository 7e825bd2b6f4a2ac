"""Proximal policy optimization (ch. 8): an actor-critic policy gradient with a clipped surrogate.

Why PPO among the policy-gradient methods: REINFORCE (with a baseline) and A2C use each rollout for
one gradient step, since the policy-gradient estimate holds only for the policy that acted; PPO's
clipped ratio keeps the updated policy close to that one, so each rollout serves `update_epochs`
passes of minibatch steps. On CartPole that is the difference between a policy that reaches a return
of 500 within the two-minute budget and one that is still noisy: REINFORCE's Monte-Carlo returns
have a variance that grows with the episode's length (500 steps here), which GAE's bootstrapped
advantages keep in check.

The policy π_θ(a | s) (softmax of the actor's scores) and the value V_φ(s) (the critic) act in
`num_envs` environments side by side for `rollout_steps` steps. Advantages by generalized advantage
estimation (GAE):

    δ_t = r_t + γ (1 - d_t) V(s_{t+1}) - V(s_t),     Â_t = δ_t + γ λ (1 - d_t) Â_{t+1},     R_t = Â_t + V(s_t)

with d_t = 1 when the episode ended at step t; at a time-limit truncation the reward is r_t + γ V(s')
of the final observation s' (the episode did not terminate, it was cut). λ = 1 gives the discounted
return minus the baseline V, λ = 0 the one-step TD error. The loss of a minibatch, with the ratio
ρ_t = π_θ(a_t | s_t) / π_θ_old(a_t | s_t) and Â normalized within the minibatch:

    L = E[max(-Â_t ρ_t, -Â_t clip(ρ_t, 1 - ε, 1 + ε))] + c_v E[½ (V_φ(s_t) - R_t)²] - c_e E[H(π_θ(· | s_t))]

Shapes: rollout tensors (T, N) (steps x environments), observations (T, N, D); minibatches (B, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from modules._feedforward import feedforward, small_widths
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.episodes import make_env
from pipeline.core.reinforcement import ReinforcementModule


def generalized_advantages(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor,
                           gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE: rewards, values V(s_t), dones d_t (T, N); next_value V(s_T) (N,) -> advantages Â, returns R (T, N)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        following = next_value if t == len(rewards) - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * not_done * following - values[t]
        running = delta + gamma * lam * not_done * running
        advantages[t] = running
    return advantages, advantages + values


def clipped_surrogate_loss(logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
                           clip: float) -> torch.Tensor:
    """E[max(-Â ρ, -Â clip(ρ, 1 - ε, 1 + ε))], ρ = exp(log π_θ - log π_θ_old); all (B,)."""
    ratio = (logprob - old_logprob).exp()
    return torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()


def orthogonal(linear: nn.Linear, gain: float) -> None:
    """An orthogonal weight matrix scaled by `gain`, a zero bias."""
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.zeros_(linear.bias)


def mlp(sizes: list[int], output_std: float) -> nn.Sequential:
    """[affine -> tanh] x L -> affine; orthogonal weights (gain √2 inside, `output_std` at the head), zero biases."""
    return feedforward(sizes, "tanh", init=partial(orthogonal, gain=math.sqrt(2)),
                       output_init=partial(orthogonal, gain=output_std))


class ProximalPolicyOptimization(ReinforcementModule):
    """PPO: rollouts of `num_envs` x `rollout_steps` steps, then `update_epochs` passes of minibatches."""

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        hidden_sizes: list[int],  # widths of the actor's and of the critic's hidden layers
        num_envs: int,  # environments acting side by side, N
        rollout_steps: int,  # steps of each environment per rollout, T
        update_epochs: int,  # passes over each rollout
        num_minibatches: int,  # minibatches per pass (each of N T / num_minibatches transitions)
        gamma: float,  # discount γ in [0, 1)
        gae_lambda: float,  # GAE's λ in [0, 1]
        clip: float,  # the ratio's clip range ε
        value_coef: float,  # c_v, the critic's weight in the loss
        entropy_coef: float,  # c_e, the entropy bonus
        steps_per_epoch: int,  # environment steps per epoch (rounded up to whole rollouts)
        val_episodes: int,  # greedy validation episodes per epoch (fixed seeds)
        solved_return: float,  # stop once val/mean_return reaches it; 0: train every epoch
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler, steps_per_epoch=steps_per_epoch,
                         val_episodes=val_episodes, solved_return=solved_return)
        self.hp = SimpleNamespace(  # the constructor's settings, read by the rollouts and the loss
            num_envs=num_envs, rollout_steps=rollout_steps, update_epochs=update_epochs,
            num_minibatches=num_minibatches, gamma=gamma, gae_lambda=gae_lambda, clip=clip,
            value_coef=value_coef, entropy_coef=entropy_coef,
        )
        observation_size = int(np.prod(data.input_shape))
        self.actor = mlp([observation_size, *hidden_sizes, data.num_classes], output_std=0.01)  # s -> scores (B, A)
        self.critic = mlp([observation_size, *hidden_sizes, 1], output_std=1.0)  # s -> V(s) (B, 1)
        self._envs = None

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        ReinforcementModule.check_config(model, data)
        for key in ("num_envs", "rollout_steps", "update_epochs", "num_minibatches"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if model["num_minibatches"] > model["num_envs"] * model["rollout_steps"]:
            raise ValueError(f"num_minibatches: at most num_envs x rollout_steps "
                             f"({model['num_envs'] * model['rollout_steps']}) transitions, got {model['num_minibatches']}")
        if not 0 <= model["gamma"] < 1:
            raise ValueError(f"gamma: must be in [0, 1), got {model['gamma']}")
        if not 0 <= model["gae_lambda"] <= 1:
            raise ValueError(f"gae_lambda: must be in [0, 1], got {model['gae_lambda']}")
        if not 0 < model["clip"] < 1:
            raise ValueError(f"clip: must be in (0, 1), got {model['clip']}")
        for key in ("value_coef", "entropy_coef"):
            if model[key] < 0:
                raise ValueError(f"{key}: must be zero or positive, got {model[key]}")
        if any(width < 1 for width in model["hidden_sizes"]):
            raise ValueError(f"hidden_sizes: widths must be positive integers, got {model['hidden_sizes']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        """A few hundred environment steps an epoch, in short rollouts of two environments."""
        return {**model, "hidden_sizes": small_widths(model["hidden_sizes"]), "steps_per_epoch": 200, "val_episodes": 2,
                "solved_return": 0, "num_envs": 2, "rollout_steps": 16, "update_epochs": 2, "num_minibatches": 2}

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(observations), self.critic(observations).squeeze(-1)  # (B, A), (B,)

    def act_greedy(self, observations: torch.Tensor) -> torch.Tensor:
        return self.actor(observations).argmax(dim=1)

    # --- rollouts -------------------------------------------------------------------------------

    def _start_rollouts(self) -> None:
        self._envs = [make_env(self.environment) for _ in range(self.hp.num_envs)]
        seed = self.rollout_seed()
        self._generator = torch.Generator().manual_seed(seed)
        restored = self.restored_state()
        if restored is not None:  # the episodes in progress at the checkpoint start again
            self._generator.set_state(restored["generator"])
            seed = int(restored["seed"]) + self.env_steps
        self._seed = seed
        self._observations = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self._envs)])  # (N, D)
        self._episode_returns = np.zeros(self.hp.num_envs)

    def rollout_state(self) -> dict:
        return {} if self._envs is None else {"generator": self._generator.get_state(), "seed": self._seed}

    @torch.no_grad()
    def _value(self, observations: np.ndarray) -> torch.Tensor:
        return self.critic(torch.as_tensor(observations, device=self.device)).squeeze(-1).cpu()

    @torch.no_grad()
    def _rollout(self) -> dict[str, torch.Tensor]:
        """T steps of the N environments with the current policy: the rollout's tensors (T, N, ...)."""
        hp, envs, generator = self.hp, self._envs, self._generator
        T, N = hp.rollout_steps, hp.num_envs
        observations = torch.zeros(T, N, *self.data_spec.input_shape)
        actions, logprobs = torch.zeros(T, N, dtype=torch.long), torch.zeros(T, N)
        values, rewards, dones = torch.zeros(T, N), torch.zeros(T, N), torch.zeros(T, N)
        for t in range(T):
            observations[t] = torch.as_tensor(self._observations)
            scores, value = self(observations[t].to(self.device))
            policy = Categorical(logits=scores.cpu())
            action = torch.multinomial(policy.probs, 1, generator=generator).squeeze(1)  # (N,)
            actions[t], logprobs[t], values[t] = action, policy.log_prob(action), value.cpu()
            for i, env in enumerate(envs):
                observation, reward, terminated, truncated, _ = env.step(int(action[i]))
                self._episode_returns[i] += reward
                if truncated and not terminated:  # cut by the time limit: the final state still has a value
                    reward += hp.gamma * float(self._value(observation[None]))
                if terminated or truncated:
                    self.episode_finished(self._episode_returns[i])
                    self._episode_returns[i] = 0.0
                    observation, _ = env.reset()
                rewards[t, i], dones[t, i] = reward, float(terminated or truncated)
                self._observations[i] = observation
        self.env_steps += T * N
        advantages, returns = generalized_advantages(rewards, values, dones, self._value(self._observations),
                                                     hp.gamma, hp.gae_lambda)
        return {"observation": observations, "action": actions, "logprob": logprobs,
                "advantage": advantages, "return": returns}

    def experience(self) -> Iterator[dict[str, torch.Tensor]]:
        if self._envs is None:
            self._start_rollouts()
        hp = self.hp
        size = hp.num_envs * hp.rollout_steps
        for _ in range(math.ceil(self.steps_per_epoch / size)):
            rollout = {key: value.flatten(0, 1) for key, value in self._rollout().items()}  # (T N, ...)
            minibatch = math.ceil(size / hp.num_minibatches)
            for _ in range(hp.update_epochs):
                for index in torch.randperm(size, generator=self._generator).split(minibatch):
                    yield {key: value[index] for key, value in rollout.items()}

    # --- learning -------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        scores, value = self(batch["observation"])
        policy = Categorical(logits=scores)
        advantages = batch["advantage"]
        advantages = (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)
        policy_loss = clipped_surrogate_loss(policy.log_prob(batch["action"]), batch["logprob"], advantages, self.hp.clip)
        value_loss = 0.5 * (value - batch["return"]).pow(2).mean()
        return policy_loss + self.hp.value_coef * value_loss - self.hp.entropy_coef * policy.entropy().mean()


MODEL = ProximalPolicyOptimization
