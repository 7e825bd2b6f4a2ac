"""A stochastic block model (networkx, ch. 8): SBM_BLOCKS planted communities of SBM_BLOCK_SIZE nodes,
an edge inside a community with probability SBM_P_IN and between two with SBM_P_OUT (mean degree about
8). Node features: the community's mean μ_k ~ N(0, SBM_SIGNAL² I) plus N(0, I) noise, too noisy alone to
tell the community of most nodes; a node's neighbours, mostly of its own community, average the noise
away."""

from __future__ import annotations

import numpy as np

from pipeline.datasets._graph import edge_index_of, node_split
from pipeline.spec import Dataset, DataSpec

SBM_BLOCKS, SBM_BLOCK_SIZE, SBM_P_IN, SBM_P_OUT = 4, 100, 0.05, 0.01
SBM_FEATURES, SBM_SIGNAL = 16, 0.5
SBM_LABELLED = 10  # labelled nodes per community, for training and again for validation
SBM_SEED = 0  # the graph and its features; the split follows data.split_seed


def make_graph(config) -> tuple[dict, dict]:
    import networkx as nx

    probabilities = [[SBM_P_IN if i == j else SBM_P_OUT for j in range(SBM_BLOCKS)] for i in range(SBM_BLOCKS)]
    graph = nx.stochastic_block_model([SBM_BLOCK_SIZE] * SBM_BLOCKS, probabilities, seed=SBM_SEED)
    y = np.array([graph.nodes[node]["block"] for node in range(graph.number_of_nodes())])
    rng = np.random.default_rng(SBM_SEED)
    means = rng.normal(0.0, SBM_SIGNAL, size=(SBM_BLOCKS, SBM_FEATURES))  # μ_k
    x = means[y] + rng.normal(size=(len(y), SBM_FEATURES))
    masks = node_split(y, SBM_LABELLED, SBM_LABELLED, config.split_seed)
    return {"x": x, "edge_index": edge_index_of(graph), "y": y, "masks": masks}, {"community_means": means.tolist()}


DATASET = Dataset(
    DataSpec("multiclass", (SBM_FEATURES,), SBM_BLOCKS), None,
    f"stochastic block model, {SBM_BLOCKS} x {SBM_BLOCK_SIZE} nodes, p_in {SBM_P_IN}, p_out {SBM_P_OUT}, "
    f"{SBM_FEATURES} noisy features; {SBM_LABELLED} labelled nodes per community",
    "none", kind="graph", make_graph=make_graph,
)
