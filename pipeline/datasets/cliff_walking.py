"""gymnasium's CliffWalking-v1 (ch. 8, reinforcement learning; Sutton and Barto's example 6.6): an
environment, not data. Observations are discrete states, the cell index 0-47 of a 4 x 12 grid
(gymnasium's `Discrete` space: shape ()); 4 actions (up, right, down, left), deterministic; reward -1
a step and -100 for a step into the cliff, which sends the agent back to the start; the episode ends
at the goal. gymnasium sets no time limit: pipeline.core.episodes cuts its episodes (a greedy policy
may loop). The shortest safe path, along the cliff, has return -13."""

from __future__ import annotations

from pipeline.spec import Dataset, DataSpec

DATASET = Dataset(
    DataSpec("control", (), 4, environment="CliffWalking-v1"), None,
    "gymnasium CliffWalking-v1: 48 discrete states, 4 actions, -1 a step, -100 into the cliff, deterministic",
    "none",
)
