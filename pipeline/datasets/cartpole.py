"""gymnasium's CartPole-v1 (ch. 8, reinforcement learning): an environment, not data; prepare checks
that gymnasium makes it with this spec's observation shape and number of actions."""

from __future__ import annotations

from pipeline.spec import Dataset, DataSpec

DATASET = Dataset(
    DataSpec("control", (4,), 2, environment="CartPole-v1"), None,
    "gymnasium CartPole-v1: observations of 4 numbers, 2 actions, +1 a step, at most 500 steps", "none",
)
