"""The reference of a tabular environment (FrozenLake, CliffWalking): value iteration on gymnasium's own
transition model, the exact optimum a learned greedy policy's value is held to (modules/q_learning.py)."""

from __future__ import annotations

GAMMA = 0.99  # the discount of the q_learning experiments in params.yaml (their own evaluation reports V* at theirs)


def value_iteration_rows(dataset: str) -> list[dict]:
    """One row: V*(start) = Σ_s ρ₀(s) V*(s) at GAMMA as test/policy_value, and the returns of the optimal
    policy π* over the greedy test episodes (the same seeds as the models')."""
    import torch
    from torchmetrics import MaxMetric, MeanMetric, MinMetric

    from modules.q_learning import environment_model, value_iteration
    from pipeline import data
    from pipeline.core.episodes import greedy_returns
    from pipeline.core.evaluation.reinforcement import TEST_EPISODES, TEST_SEED

    environment = data.DATASETS[dataset].spec.environment
    transitions, rewards, start = environment_model(environment)
    optimal_values, optimal_policy = value_iteration(transitions, rewards, GAMMA)
    returns = greedy_returns(lambda states: optimal_policy[states.long()], environment,
                             [TEST_SEED + i for i in range(TEST_EPISODES)])
    mean, low, high = MeanMetric(), MinMetric(), MaxMetric()
    for metric in (mean, low, high):
        metric.update(returns)
    return [{"name": "value_iteration", "family": f"value iteration on the environment's model, γ = {GAMMA}",
             "test/policy_value": round(float(start @ optimal_values), 6),
             "test/mean_return": round(float(mean.compute()), 6), "test/std_return": round(float(returns.std()), 6),
             "test/min_return": round(float(low.compute()), 6), "test/max_return": round(float(high.compute()), 6)}]
