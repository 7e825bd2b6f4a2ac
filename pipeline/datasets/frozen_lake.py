"""gymnasium's FrozenLake-v1 (ch. 8, reinforcement learning), 4 x 4 and slippery (its defaults): an
environment, not data. Observations are discrete states, the cell index 0-15 (gymnasium's `Discrete`
space: shape ()); 4 actions (left, down, right, up), each carried out with probability 1/3 and
swapped for one of the two perpendicular moves otherwise; reward 1 on reaching the goal, episodes end
in a hole or at the goal, or are cut at 100 steps. The environment's own transition model
(`env.unwrapped.P`) gives value iteration the exact optimum (pipeline/references/frozen_lake.py)."""

from __future__ import annotations

from pipeline.spec import Dataset, DataSpec

DATASET = Dataset(
    DataSpec("control", (), 4, environment="FrozenLake-v1"), None,
    "gymnasium FrozenLake-v1, 4 x 4, slippery: 16 discrete states, 4 actions, reward 1 at the goal, at most 100 steps",
    "none",
)
