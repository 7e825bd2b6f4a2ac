"""N-way one-shot classification (ch. 6, Siamese networks): the test of an embedding on classes it
never saw. An episode shows one support image of each of N classes drawn from the test split, and a
query image of one of them (not its support image); the answer is the class of the support nearest
to the query, ŷ = argmin_j ‖f(x_q) − f(x_j)‖.

The embedding evaluation (pipeline.core.evaluation.embedding) and the pixel-space reference
(pipeline/references/) draw the same episodes: `draw_episodes` with the protocol the dataset writes
in meta.json (`oneshot`: ways, episodes, seed), on the test split (the unseen classes) and on the
validation split (new images of the training classes: what the embedding learned where it was trained).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SEEN_METRIC = "test/seen_classes_oneshot_accuracy"  # the validation split's episodes: new images of the training classes


def draw_episodes(y, ways: int, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episodes over the labels y (n,): support (E, N) sample indices, one per class, the classes in
    a random order; query (E,) sample indices; answer (E,) the query's column in support. The same
    (y, ways, episodes, seed) give the same episodes."""
    y = np.asarray(y)
    classes = np.unique(y)
    if not 2 <= ways <= len(classes):
        raise ValueError(f"ways: must be between 2 and the {len(classes)} classes of the split, got {ways}")
    members = {c: np.flatnonzero(y == c) for c in classes}
    rng = np.random.default_rng(seed)
    support = np.empty((episodes, ways), dtype=np.int64)
    query = np.empty(episodes, dtype=np.int64)
    answer = rng.integers(0, ways, size=episodes)
    for e in range(episodes):
        chosen = rng.choice(classes, size=ways, replace=False)
        for j, c in enumerate(chosen):
            if j == answer[e]:  # the query's class gives two distinct images
                support[e, j], query[e] = rng.choice(members[c], size=2, replace=False)
            else:
                support[e, j] = rng.choice(members[c])
    return support, query, answer


def nearest_support(z: torch.Tensor, support: np.ndarray, query: np.ndarray) -> torch.Tensor:
    """The column (E,) of each episode's support nearest to its query in the embeddings z (n, D)
    (Euclidean distance; the first on ties)."""
    support_z = z[torch.as_tensor(support)]  # (E, N, D)
    query_z = z[torch.as_tensor(query)].unsqueeze(1)  # (E, 1, D)
    return torch.cdist(query_z, support_z).squeeze(1).argmin(dim=1)  # (E,)


def oneshot_metrics(z: torch.Tensor, y, protocol: dict, metric: str = "test/oneshot_accuracy") -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The accuracy (named `metric`) over the protocol's episodes of the embeddings z (n, D) of samples
    with labels y, and its standard error √(p(1 − p)/E) (`metric`_stderr); with each episode's true and
    predicted classes."""
    support, query, answer = draw_episodes(y, protocol["ways"], protocol["episodes"], protocol["seed"])
    predicted = nearest_support(z, support, query).numpy()
    accuracy = float((predicted == answer).mean())
    y = np.asarray(y)
    rows = np.arange(len(query))
    metrics = {metric: round(accuracy, 6), f"{metric}_stderr": round(math.sqrt(accuracy * (1 - accuracy) / len(query)), 6)}
    return metrics, y[support[rows, answer]], y[support[rows, predicted]]
