"""The reference of a tabular environment (FrozenLake, CliffWalking): value iteration on gymnasium's own
transition model, the exact optimum a learned greedy policy's value is held to (modules/q_learning.py)."""

from __future__ import annotations

from pipeline.base import ConfigError


def discount(dataset: str, config) -> dict:
    """{"gamma": γ}, the discount of the experiments on `dataset` (model.gamma), which V* is computed at;
    {} if none has one. Experiments on one environment with different discounts have no one optimum."""
    gammas = sorted({e.model["gamma"] for e in config.experiments.values() if e.dataset == dataset and "gamma" in e.model})
    if len(gammas) > 1:
        raise ConfigError(f"experiments on {dataset}: model.gamma is {', '.join(map(str, gammas))}; the value_iteration "
                          "reference is the optimum at one discount: give them the same gamma")
    return {"gamma": gammas[0]} if gammas else {}


def value_iteration_rows(dataset: str, gamma: float | None = None) -> list[dict]:
    """One row: V*(start) = Σ_s ρ₀(s) V*(s) at the discount γ as test/policy_value, and the returns of the
    optimal policy π* over the greedy test episodes (the same seeds as the models'); none without a γ."""
    if gamma is None:
        return []
    import torch
    from torchmetrics import MaxMetric, MeanMetric, MinMetric

    from modules.q_learning import environment_model, value_iteration
    from pipeline import data
    from pipeline.core.episodes import greedy_returns
    from pipeline.core.evaluation.reinforcement import TEST_EPISODES, TEST_SEED

    environment = data.DATASETS[dataset].spec.environment
    transitions, rewards, start = environment_model(environment)
    optimal_values, optimal_policy = value_iteration(transitions, rewards, gamma)
    returns = greedy_returns(lambda states: optimal_policy[states.long()], environment,
                             [TEST_SEED + i for i in range(TEST_EPISODES)])
    mean, low, high = MeanMetric(), MinMetric(), MaxMetric()
    for metric in (mean, low, high):
        metric.update(returns)
    return [{"name": "value_iteration", "family": f"value iteration on the environment's model, γ = {gamma}",
             "test/policy_value": round(float(start @ optimal_values), 6),
             "test/mean_return": round(float(mean.compute()), 6), "test/std_return": round(float(returns.std()), 6),
             "test/min_return": round(float(low.compute()), 6), "test/max_return": round(float(high.compute()), 6)}]
