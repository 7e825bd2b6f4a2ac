"""A reinforcement-learning family's evaluation: greedy test episodes in its environment, their
returns aggregated with torchmetrics, a histogram of them; and the metrics the family computes exactly
(`exact_test_metrics`: a table's policy value on the environment's model)."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torchmetrics import MaxMetric, MeanMetric, MinMetric
from torchmetrics.aggregation import CatMetric

from pipeline.core import figures as fig
from pipeline.core.episodes import greedy_returns
from pipeline.core.evaluation import Context, write_csv

TEST_SEED = 10_000  # test episode i starts from seed TEST_SEED + i (validation's are VAL_SEED + i)
TEST_EPISODES = 100  # CartPole-v1 is solved at a mean return of 475 over 100 consecutive episodes
RETURN_BUCKETS = (100, 200, 300, 400, 475)  # the plot rows: each test episode's return bucket


def evaluate(model, context: Context) -> dict[str, float] | None:
    """TEST_EPISODES greedy episodes (seeds TEST_SEED + i), their returns aggregated with torchmetrics;
    the DVC plot rows (actual = greedy policy, predicted = the return's bucket); a histogram of the
    returns. Global rank 0 only."""
    if rank_zero_only.rank != 0:
        return None
    def policy(observations: torch.Tensor) -> torch.Tensor:
        return model.act_greedy(observations.to(model.device)).cpu()

    returns = greedy_returns(policy, model.environment, [TEST_SEED + i for i in range(TEST_EPISODES)])
    mean, low, high, every = MeanMetric(), MinMetric(), MaxMetric(), CatMetric()
    for metric in (mean, low, high, every):
        metric.update(returns)
    results = {
        "test/mean_return": float(mean.compute()),
        "test/std_return": float(every.compute().double().std()),
        "test/min_return": float(low.compute()),
        "test/max_return": float(high.compute()),
        **model.exact_test_metrics(),
    }
    write_csv(context.predictions, ["actual", "predicted"], (("greedy policy", return_bucket(r)) for r in returns.tolist()))
    fig.return_histogram(returns, context.figures / "test_returns.png",
                         f"{context.experiment.name}: {TEST_EPISODES} greedy test episodes")
    return {k: round(v, 6) for k, v in sorted(results.items())}


def return_bucket(value: float) -> str:
    """The bucket of RETURN_BUCKETS a return falls in, e.g. '400-475' or '475+'."""
    lower = 0
    for upper in RETURN_BUCKETS:
        if value < upper:
            return f"{lower}-{upper}"
        lower = upper
    return f"{lower}+"
