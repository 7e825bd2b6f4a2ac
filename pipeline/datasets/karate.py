"""Zachary's karate club (networkx, ch. 8): 34 members, 78 friendships; the label is the club each
member joined after the split ('Mr. Hi' 0, 'Officer' 1); features are one-hot node identities, so only
the graph tells an unlabelled member's club."""

from __future__ import annotations

import numpy as np

from pipeline.datasets._graph import edge_index_of, node_split
from pipeline.spec import Dataset, DataSpec

KARATE_LABELLED = 2  # labelled nodes per club, for training and again for validation


def make_graph(config) -> tuple[dict, dict]:
    import networkx as nx

    graph = nx.karate_club_graph()
    clubs = sorted({club for _, club in graph.nodes(data="club")})
    y = np.array([clubs.index(graph.nodes[node]["club"]) for node in range(graph.number_of_nodes())])
    masks = node_split(y, KARATE_LABELLED, KARATE_LABELLED, config.split_seed)
    arrays = {"x": np.eye(len(y)), "edge_index": edge_index_of(graph), "y": y, "masks": masks}
    return arrays, {"classes": clubs}


DATASET = Dataset(
    DataSpec("multiclass", (34,), 2), None,
    f"Zachary's karate club (networkx), 34 nodes, 78 edges, the two clubs; {KARATE_LABELLED} labelled nodes per club",
    "none", kind="graph", make_graph=make_graph,
)
