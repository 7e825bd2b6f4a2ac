"""Episodes in a gymnasium environment: what the reinforcement-learning families train in, and what
their validation (pipeline.core.reinforcement) and test (pipeline.core.evaluation) play greedily."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


MAX_EPISODE_STEPS = 500  # the cut of an environment gymnasium sets no time limit for (CliffWalking)


def make_env(environment: str):
    """gymnasium's environment; one without a time limit of its own is cut at MAX_EPISODE_STEPS, so that
    the episode of a greedy policy that loops (a half-learnt table) still ends."""
    import gymnasium

    limit = None if gymnasium.spec(environment).max_episode_steps else MAX_EPISODE_STEPS
    return gymnasium.make(environment, max_episode_steps=limit)


@torch.no_grad()
def greedy_returns(policy: Callable[[torch.Tensor], torch.Tensor], environment: str, seeds: list[int]) -> torch.Tensor:
    """The undiscounted return G = Σ_t r_t of one episode per seed, all played side by side with
    `policy` (observations (B, *obs) -> actions (B,)), each environment reset with its seed."""
    envs = [make_env(environment) for _ in seeds]
    observations = [env.reset(seed=int(seed))[0] for env, seed in zip(envs, seeds)]
    returns = torch.zeros(len(seeds), dtype=torch.float64)
    active = list(range(len(seeds)))
    while active:
        actions = policy(torch.as_tensor(np.stack([observations[i] for i in active]), dtype=torch.float32))
        still = []
        for i, action in zip(active, actions.tolist()):
            observations[i], reward, terminated, truncated, _ = envs[i].step(action)
            returns[i] += reward
            if not (terminated or truncated):
                still.append(i)
        active = still
    for env in envs:
        env.close()
    return returns
