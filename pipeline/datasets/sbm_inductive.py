"""Inductive node classification (networkx, ch. 8): INDUCTIVE_GRAPHS stochastic block models, each
drawn with its own seed, trained on the nodes of some graphs and tested on the nodes of unseen ones.

Each graph has INDUCTIVE_BLOCKS planted communities of INDUCTIVE_MIN_SIZE to INDUCTIVE_MAX_SIZE nodes
(drawn per community), an edge inside a community with probability INDUCTIVE_P_IN and between two with
INDUCTIVE_P_OUT. Node features: the community's mean μ_k ~ N(0, INDUCTIVE_SIGNAL² I), the same μ_k in
every graph (so what is learnt on one graph transfers), plus N(0, I) noise, too noisy alone to tell
most nodes' community; averaging over the neighbours, mostly of the node's own community, helps.

The graphs come as one disjoint union for the graph kind (pipeline/datasets/_graph.py), graph after
graph in node order: INDUCTIVE_TRAIN_GRAPHS of them, chosen by data.split_seed, give the training
nodes (all their nodes are labelled), INDUCTIVE_VAL_GRAPHS others the validation nodes, the rest the
test nodes. No edge crosses two graphs, so in full-batch training the validation and test graphs'
nodes, though in the forward pass, reach no training node: the training nodes' scores, the loss and
its gradient are those of the training graphs alone, and the test graphs are unseen.
"""

from __future__ import annotations

import numpy as np

from pipeline.datasets._graph import edge_index_of
from pipeline.spec import SPLITS, Dataset, DataSpec

INDUCTIVE_GRAPHS, INDUCTIVE_TRAIN_GRAPHS, INDUCTIVE_VAL_GRAPHS = 10, 6, 2  # the rest test
INDUCTIVE_BLOCKS, INDUCTIVE_MIN_SIZE, INDUCTIVE_MAX_SIZE = 4, 20, 40
INDUCTIVE_P_IN, INDUCTIVE_P_OUT = 0.2, 0.025  # mean degree about 8, three quarters of it inside the community
INDUCTIVE_FEATURES, INDUCTIVE_SIGNAL = 16, 0.4
INDUCTIVE_SEED = 0  # the graphs and their features; which graph goes to which split follows data.split_seed


def make_graphs(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """INDUCTIVE_GRAPHS block models as (edge_index (2, E_g), communities (N_g,)), each with its own seed."""
    import networkx as nx

    probabilities = [[INDUCTIVE_P_IN if i == j else INDUCTIVE_P_OUT for j in range(INDUCTIVE_BLOCKS)]
                     for i in range(INDUCTIVE_BLOCKS)]
    graphs = []
    for _ in range(INDUCTIVE_GRAPHS):
        sizes = rng.integers(INDUCTIVE_MIN_SIZE, INDUCTIVE_MAX_SIZE + 1, size=INDUCTIVE_BLOCKS).tolist()
        graph = nx.stochastic_block_model(sizes, probabilities, seed=int(rng.integers(2**31)))
        graphs.append((edge_index_of(graph), np.array([graph.nodes[node]["block"] for node in graph.nodes])))
    return graphs


def disjoint_union(graphs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graphs as one: edge_index (2, Σ E_g) with graph g's nodes shifted past the earlier graphs',
    labels (Σ N_g,), and each node's graph (Σ N_g,)."""
    offsets = np.cumsum([0] + [len(y) for _, y in graphs[:-1]])
    edge_index = np.concatenate([edges + offset for (edges, _), offset in zip(graphs, offsets)], axis=1)
    y = np.concatenate([y for _, y in graphs])
    graph_of_node = np.concatenate([np.full(len(y), g) for g, (_, y) in enumerate(graphs)])
    return edge_index, y, graph_of_node


def graph_split(split_seed: int) -> dict[str, list[int]]:
    """Which graphs each split holds, by a permutation seeded with split_seed."""
    order = np.random.default_rng(split_seed).permutation(INDUCTIVE_GRAPHS).tolist()
    ends = np.cumsum([INDUCTIVE_TRAIN_GRAPHS, INDUCTIVE_VAL_GRAPHS, INDUCTIVE_GRAPHS])
    return {name: sorted(order[start:end]) for name, start, end in zip(SPLITS, [0, *ends[:-1]], ends)}


def make_graph(config) -> tuple[dict, dict]:
    rng = np.random.default_rng(INDUCTIVE_SEED)
    edge_index, y, graph_of_node = disjoint_union(make_graphs(rng))
    means = rng.normal(0.0, INDUCTIVE_SIGNAL, size=(INDUCTIVE_BLOCKS, INDUCTIVE_FEATURES))  # μ_k, shared by the graphs
    x = means[y] + rng.normal(size=(len(y), INDUCTIVE_FEATURES))
    graphs = graph_split(config.split_seed)
    masks = {name: np.isin(graph_of_node, graphs[name]) for name in SPLITS}
    facts = {"graph_sizes": np.bincount(graph_of_node).tolist(), "graphs": graphs, "community_means": means.tolist()}
    return {"x": x, "edge_index": edge_index, "y": y, "masks": masks}, facts


DATASET = Dataset(
    DataSpec("multiclass", (INDUCTIVE_FEATURES,), INDUCTIVE_BLOCKS), None,
    f"{INDUCTIVE_GRAPHS} stochastic block models of {INDUCTIVE_BLOCKS} communities of {INDUCTIVE_MIN_SIZE}-"
    f"{INDUCTIVE_MAX_SIZE} nodes, p_in {INDUCTIVE_P_IN}, p_out {INDUCTIVE_P_OUT}, {INDUCTIVE_FEATURES} noisy features; "
    f"inductive: trained on {INDUCTIVE_TRAIN_GRAPHS} graphs, validated on {INDUCTIVE_VAL_GRAPHS}, tested on the others",
    "none", kind="graph", make_graph=make_graph,
)
