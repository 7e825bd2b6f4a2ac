"""Is the graph connected? Graph-level classification (networkx, ch. 8): small random graphs in pairs
that share their degree sequence, one connected (label 1) and one not (label 0), so that node count,
edge count and degree sequence say nothing of the label; only the way the edges join the nodes does.

A pair: a G(n, m) graph with n in CONNECTIVITY_NODES and n <= m <= 1.6 n, then random double edge swaps
(each keeps every node's degree) until both a connected and a disconnected realization of its degree
sequence have been seen. One pair in CONNECTIVITY_REGULAR_EVERY is instead a cycle C_n against two
cycles C_k + C_(n-k): both 2-regular, so that 1-WL colour refinement from constant features gives them
the same colours, and no message-passing network can tell them apart (the Weisfeiler-Lehman bound,
pipeline/references/connectivity.py).

Node features: the constant 1 for every node (F = 1); whatever a network knows of a node it learns from
the edges. Pairs are dealt whole to train, validation and test (data.split_seed, the data config's
fractions), so the two graphs of a pair are always in the same split.
"""

from __future__ import annotations

import numpy as np

from pipeline.datasets._graph import edge_index_of
from pipeline.spec import SPLITS, Dataset, DataSpec

CONNECTIVITY_PAIRS = 500  # 1,000 graphs
CONNECTIVITY_NODES = (8, 14)  # n, inclusive
CONNECTIVITY_REGULAR_EVERY = 10  # one pair in ten: a cycle against two cycles
CONNECTIVITY_SWAPS = 30  # double edge swaps tried per pair before drawing another graph
CONNECTIVITY_SEED = 0  # the graphs; the split follows data.split_seed


def swap_pair(rng: np.random.Generator):
    """(connected, disconnected) graphs with the same degree sequence, or None if the swaps found only one kind."""
    import networkx as nx

    n = int(rng.integers(CONNECTIVITY_NODES[0], CONNECTIVITY_NODES[1] + 1))
    m = int(rng.integers(n, int(1.6 * n) + 1))
    graph = nx.gnm_random_graph(n, m, seed=int(rng.integers(2**31)))
    found = {nx.is_connected(graph): graph.copy()}
    for _ in range(CONNECTIVITY_SWAPS):
        if len(found) == 2:
            break
        try:
            nx.double_edge_swap(graph, nswap=1, max_tries=100, seed=int(rng.integers(2**31)))
        except nx.NetworkXException:  # no swap possible (too few edges): draw another graph
            return None
        found.setdefault(nx.is_connected(graph), graph.copy())
    return (found[True], found[False]) if len(found) == 2 else None


def cycle_pair(rng: np.random.Generator):
    """(C_n, C_k + C_(n-k)) with 3 <= k <= n - 3: every node of both has degree 2."""
    import networkx as nx

    n = int(rng.integers(CONNECTIVITY_NODES[0], CONNECTIVITY_NODES[1] + 1))
    k = int(rng.integers(3, n - 2))
    return nx.cycle_graph(n), nx.disjoint_union(nx.cycle_graph(k), nx.cycle_graph(n - k))


def make_pairs(count: int, seed: int) -> list:
    """`count` pairs (connected, disconnected), every CONNECTIVITY_REGULAR_EVERY-th of them two-regular."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        pair = cycle_pair(rng) if len(pairs) % CONNECTIVITY_REGULAR_EVERY == 0 else swap_pair(rng)
        if pair is not None:
            pairs.append(pair)
    return pairs


def make_graphs(config) -> tuple[dict, dict]:
    """{split: (graphs, y)}: each graph (x (N, 1) ones, edge_index (2, E) both ways), y (G,) 1 if connected."""
    pairs = make_pairs(CONNECTIVITY_PAIRS, CONNECTIVITY_SEED)
    order = np.random.default_rng(config.split_seed).permutation(len(pairs))
    n_test, n_val = round(config.test_fraction * len(pairs)), round(config.val_fraction * len(pairs))
    chosen = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    parts = {}
    for name in SPLITS:
        graphs = [graph for index in chosen[name] for graph in pairs[index]]
        parts[name] = ([(np.ones((g.number_of_nodes(), 1)), edge_index_of(g)) for g in graphs],
                       np.tile([1, 0], len(chosen[name])))
    return parts, {"node_features": "constant 1", "classes": ["disconnected", "connected"]}


DATASET = Dataset(
    DataSpec("multiclass", (1,), 2), None,
    f"connected or not: {CONNECTIVITY_PAIRS} pairs of random graphs of {CONNECTIVITY_NODES[0]}-{CONNECTIVITY_NODES[1]} "
    "nodes sharing a degree sequence, one connected; constant node features",
    "none", kind="graphs", make_graphs=make_graphs,
)
