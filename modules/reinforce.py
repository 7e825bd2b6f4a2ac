"""REINFORCE with a baseline (ch. 8): the Monte-Carlo policy gradient, beside PPO.

The policy π_θ(a | s) (softmax of a network's scores) plays `num_envs` whole episodes side by side;
each step's return-to-go

    G_t = Σ_{k ≥ t} γ^{k-t} r_k        (computed backwards: G_t = r_t + γ G_{t+1}, G_T = 0)

weighs the step's score function ∇_θ log π_θ(a_t | s_t) in the policy-gradient theorem's estimate

    ∇_θ J(θ) ≈ (1 / n) Σ_episodes Σ_t ∇_θ log π_θ(a_t | s_t) (G_t - b(s_t)),

n the batch's steps. Subtracting a baseline b(s_t) that does not depend on the action leaves the
estimate unbiased and lowers its variance; here the baseline is a learned state value V_φ(s_t),
fitted to G_t by least squares in the same step (c_v its weight). The loss one gradient step descends,
with the advantages Â_t = G_t - V_φ(s_t) (no gradient through them) normalized within the batch:

    L = -(1 / n) Σ_t log π_θ(a_t | s_t) Â_t + c_v (1 / n) Σ_t ½ (V_φ(s_t) - G_t)²

An episode cut by the time limit (not terminated) gets γ V_φ(s') of its final state s' added to its
last reward, as PPO does. Each batch of episodes serves one gradient step: the estimate holds only for
the policy that acted (PPO's clipped ratio is what lets it reuse a rollout).

Shapes: an episode's rewards (T,); a batch's observations (n, D), actions, returns (n,).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from modules._feedforward import feedforward, small_widths
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.episodes import make_env
from pipeline.core.reinforcement import ReinforcementModule


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + γ G_{t+1} with G_T = 0, for one episode's rewards (T,) -> returns-to-go (T,)."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros((), dtype=rewards.dtype)
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def policy_gradient_loss(logprob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-(1 / n) Σ_t log π_θ(a_t | s_t) Â_t: its gradient is minus the policy-gradient estimate. Both (n,);
    the advantages carry no gradient."""
    return -(logprob * advantages.detach()).mean()


def mlp(sizes: list[int]) -> nn.Sequential:
    """[affine -> tanh] x L -> affine."""
    return feedforward(sizes, "tanh")


class Reinforce(ReinforcementModule):
    """REINFORCE: batches of `num_envs` whole episodes, one gradient step each; a learned baseline V_φ."""

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        hidden_sizes: list[int],  # widths of the policy's and of the baseline's hidden layers
        num_envs: int,  # episodes played side by side: one gradient step's batch
        gamma: float,  # discount γ in [0, 1]
        value_coef: float,  # c_v, the baseline's weight in the loss
        steps_per_epoch: int,  # environment steps per epoch (rounded up to whole batches of episodes)
        val_episodes: int,  # greedy validation episodes per epoch (fixed seeds)
        solved_return: float,  # stop once val/mean_return reaches it; 0: train every epoch
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler, steps_per_epoch=steps_per_epoch,
                         val_episodes=val_episodes, solved_return=solved_return)
        self.num_envs, self.gamma, self.value_coef = num_envs, gamma, value_coef
        observation_size = int(np.prod(data.input_shape))
        self.policy = mlp([observation_size, *hidden_sizes, data.num_classes])  # s -> scores (B, A)
        self.value = mlp([observation_size, *hidden_sizes, 1])  # s -> V_φ(s) (B, 1)
        self._envs = None

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        ReinforcementModule.check_config(model, data)
        if model["num_envs"] < 1:
            raise ValueError(f"num_envs: must be a positive integer, got {model['num_envs']}")
        if not 0 <= model["gamma"] <= 1:
            raise ValueError(f"gamma: must be in [0, 1], got {model['gamma']}")
        if model["value_coef"] <= 0:
            raise ValueError(f"value_coef: must be positive (the baseline learns from it), got {model['value_coef']}")
        if any(width < 1 for width in model["hidden_sizes"]):
            raise ValueError(f"hidden_sizes: widths must be positive integers, got {model['hidden_sizes']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        """A few hundred environment steps an epoch, two episodes a batch."""
        return {**model, "hidden_sizes": small_widths(model["hidden_sizes"]), "steps_per_epoch": 200, "val_episodes": 2,
                "solved_return": 0, "num_envs": 2}

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.policy(observations)  # (B, A)

    def act_greedy(self, observations: torch.Tensor) -> torch.Tensor:
        return self.policy(observations).argmax(dim=1)

    # --- rollouts -------------------------------------------------------------------------------

    def _start_rollouts(self) -> None:
        self._envs = [make_env(self.environment) for _ in range(self.num_envs)]
        seed = self.rollout_seed()
        self._generator = torch.Generator().manual_seed(seed)
        restored = self.restored_state()
        if restored is not None:
            self._generator.set_state(restored["generator"])
            seed = int(restored["seed"]) + self.env_steps
        self._seed = seed
        self._episodes = 0  # episodes started so far: each batch's episode i starts from seed + episodes + i

    def rollout_state(self) -> dict:
        return {} if self._envs is None else {"generator": self._generator.get_state(), "seed": self._seed}

    @torch.no_grad()
    def _episodes_batch(self) -> dict[str, torch.Tensor]:
        """`num_envs` whole episodes with the current policy, side by side: the batch's tensors (n, ...)."""
        envs, generator = self._envs, self._generator
        observations = [env.reset(seed=self._seed + self._episodes + i)[0] for i, env in enumerate(envs)]
        self._episodes += len(envs)
        steps = [{"observation": [], "action": [], "reward": []} for _ in envs]
        totals = [0.0] * len(envs)  # each episode's undiscounted return, the learning curve's
        active = list(range(len(envs)))
        while active:
            states = torch.as_tensor(np.stack([observations[i] for i in active]), dtype=torch.float32)
            probs = Categorical(logits=self.policy(states.to(self.device)).cpu()).probs
            actions = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
            still = []
            for i, action in zip(active, actions.tolist()):
                next_observation, reward, terminated, truncated, _ = envs[i].step(action)
                steps[i]["observation"].append(observations[i])
                steps[i]["action"].append(action)
                totals[i] += reward
                if truncated and not terminated:  # cut by the time limit: the final state still has a value
                    reward += self.gamma * float(self.value(torch.as_tensor(next_observation[None], device=self.device)))
                steps[i]["reward"].append(reward)
                observations[i] = next_observation
                if terminated or truncated:
                    self.episode_finished(totals[i])
                else:
                    still.append(i)
            active = still
        self.env_steps += sum(len(episode["action"]) for episode in steps)
        returns = [discounted_returns(torch.tensor(episode["reward"], dtype=torch.float32), self.gamma) for episode in steps]
        return {"observation": torch.as_tensor(np.concatenate([np.stack(e["observation"]) for e in steps]), dtype=torch.float32),
                "action": torch.tensor([a for e in steps for a in e["action"]]),
                "return": torch.cat(returns)}

    def experience(self) -> Iterator[dict[str, torch.Tensor]]:
        if self._envs is None:
            self._start_rollouts()
        start = self.env_steps
        while not self._epoch_done(start):
            yield self._episodes_batch()

    def _epoch_done(self, start: int) -> bool:
        """Whether the epoch's `steps_per_epoch` environment steps are taken, by every process under DDP.
        Whole episodes make each process's number of batches its own, and DDP needs the same number on
        all of them (one done early would wait for the others' gradients for ever): a process that is
        done goes on with more episodes until all are."""
        done = self.env_steps - start >= self.steps_per_epoch
        if self.attached() and self.trainer.world_size > 1:
            done = self.trainer.strategy.reduce_boolean_decision(done, all=True)
        return done

    # --- learning -------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        policy = Categorical(logits=self.policy(batch["observation"]))
        value = self.value(batch["observation"]).squeeze(-1)  # (n,)
        advantages = batch["return"] - value.detach()  # Â_t = G_t - V_φ(s_t)
        advantages = (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)
        value_loss = 0.5 * (value - batch["return"]).pow(2).mean()
        return policy_gradient_loss(policy.log_prob(batch["action"]), advantages) + self.value_coef * value_loss


MODEL = Reinforce
