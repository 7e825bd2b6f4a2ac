"""What the graph datasets (ch. 8: one graph, node classification, semi-supervised) share.

A graph dataset's `make_graph(config)` returns the arrays x (N, F) float, edge_index (2, E) int (both
directions of every undirected edge), y (N,) int and masks {split: (N,) bool}, and facts for
meta.json. The data config's fractions do not apply: a few labelled nodes per class train, as many
validate, the rest test.
"""

from __future__ import annotations

import numpy as np

from pipeline.spec import SPLITS


def node_split(y: np.ndarray, train_per_class: int, val_per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded masks: `train_per_class` nodes of each class, then `val_per_class` more; the rest is test."""
    rng = np.random.default_rng(seed)
    masks = {name: np.zeros(len(y), dtype=bool) for name in SPLITS}
    for k in np.unique(y):
        nodes = rng.permutation(np.flatnonzero(y == k))
        masks["train"][nodes[:train_per_class]] = True
        masks["val"][nodes[train_per_class : train_per_class + val_per_class]] = True
    masks["test"] = ~(masks["train"] | masks["val"])
    return masks


def edge_index_of(graph) -> np.ndarray:
    """A networkx graph's edges as (2, E) node indices, each undirected edge in both directions."""
    edges = np.array(list(graph.edges()), dtype=np.int64).reshape(-1, 2)
    return np.concatenate([edges, edges[:, ::-1]]).T.copy()
