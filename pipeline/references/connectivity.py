"""The references of the connectivity dataset (graph-level classification, ch. 8): what the graph's
invariants alone reach, and the Weisfeiler-Lehman bound no message-passing network can pass.

features_alone: a random forest on each graph's node count, edge count and sorted degree sequence
(pipeline.data.graph_invariants), fitted on the training graphs. The two graphs of a pair share all of
these, and pairs are never split, so on the test split any function of them scores exactly 1/2.

wl_bound: the best test accuracy of any function of the 1-WL colour histogram. A message-passing network
from the constant node features gives two graphs with the same 1-WL colour histogram the same scores
(Xu et al. 2019; Morris et al. 2019), so within each class of test graphs sharing a histogram it gets
at most the majority label right: the bound is Σ over classes of the majority label's count, divided by
the number of test graphs. The histogram's hash is networkx's weisfeiler_lehman_graph_hash with the node
features as the starting colours and as many refinement rounds as the largest graph has nodes (colour
refinement is stable after at most N rounds).
"""

from __future__ import annotations

from collections import Counter, defaultdict


def wl_hash(graph, iterations: int) -> str:
    """The 1-WL hash of a PyTorch Geometric graph, its node features (rounded) as starting colours."""
    import networkx as nx

    nx_graph = nx.Graph()
    for node, features in enumerate(graph.x.tolist()):
        nx_graph.add_node(node, colour=",".join(f"{value:g}" for value in features))
    nx_graph.add_edges_from(graph.edge_index.t().tolist())
    return nx.weisfeiler_lehman_graph_hash(nx_graph, node_attr="colour", iterations=iterations)


def wl_bound(hashes: list[str], labels: list[int]) -> float:
    """max over functions f of hashes of the accuracy of f: Σ over distinct hashes of the count of
    their most frequent label, over the number of graphs."""
    by_hash = defaultdict(Counter)
    for key, label in zip(hashes, labels):
        by_hash[key][label] += 1
    return sum(max(counts.values()) for counts in by_hash.values()) / len(labels)


def reference_rows(dataset: str) -> list[dict]:
    from sklearn.ensemble import RandomForestClassifier

    from pipeline import data

    x_train, y_train = data.load_features(dataset, "train")
    x_test, y_test = data.load_features(dataset, "test")
    forest = RandomForestClassifier(random_state=0).fit(x_train.numpy(), y_train.numpy())
    graphs, _ = data.load_split(dataset, "test")
    iterations = data.load_meta(dataset)["max_nodes"]
    hashes = [wl_hash(graph, iterations) for graph in graphs.to_data_list()]
    return [
        {"name": "features_alone", "family": "random forest on node and edge counts, sorted degrees",
         "test/accuracy": round(float(forest.score(x_test.numpy(), y_test.numpy())), 6)},
        {"name": "wl_bound", "family": "best any 1-WL-bounded network can do (WL hash majority)",
         "test/accuracy": round(wl_bound(hashes, y_test.tolist()), 6)},
    ]
