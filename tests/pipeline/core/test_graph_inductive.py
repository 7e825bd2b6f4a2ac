"""The inductive node task (ch. 8, pipeline/datasets/sbm_inductive.py): several generated graphs as
one disjoint union, each graph entirely in one split, no edge between two graphs, so the test graphs'
nodes reach no training node; the split follows data.split_seed, the graphs do not; a graph network
trained on the training graphs classifies the nodes of the unseen ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import DataConfig, OptimizerConfig, SchedulerConfig
from pipeline.datasets import sbm_inductive
from pipeline.spec import SPLITS

from conftest import fit_batch

CONFIG = DataConfig(split_seed=0, val_fraction=0.1, test_fraction=0.2)
ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=5e-4, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)


def graph_of_node(facts: dict) -> np.ndarray:
    """Each node's graph, from the graphs' sizes in node order."""
    return np.repeat(np.arange(len(facts["graph_sizes"])), facts["graph_sizes"])


@pytest.fixture(scope="module")
def union():
    return sbm_inductive.make_graph(CONFIG)


def test_every_graph_lies_in_one_split_and_the_splits_hold_the_stated_numbers_of_graphs(union):
    arrays, facts = union
    graphs, masks = graph_of_node(facts), arrays["masks"]
    assert sum(masks[name].astype(int) for name in SPLITS).tolist() == [1] * len(arrays["y"])
    for name, count in zip(SPLITS, (sbm_inductive.INDUCTIVE_TRAIN_GRAPHS, sbm_inductive.INDUCTIVE_VAL_GRAPHS,
                                     sbm_inductive.INDUCTIVE_GRAPHS - sbm_inductive.INDUCTIVE_TRAIN_GRAPHS
                                     - sbm_inductive.INDUCTIVE_VAL_GRAPHS)):
        assert sorted(set(graphs[masks[name]].tolist())) == facts["graphs"][name] and len(facts["graphs"][name]) == count
    for g in range(sbm_inductive.INDUCTIVE_GRAPHS):  # a graph's nodes all in one split
        assert len({name for name in SPLITS if masks[name][graphs == g].any()}) == 1
    assert np.bincount(arrays["y"][masks["test"]]).min() > 0  # every community in the unseen graphs


def test_no_edge_joins_two_graphs_so_none_joins_two_splits(union):
    arrays, facts = union
    source, target = arrays["edge_index"]
    graphs = graph_of_node(facts)
    assert np.array_equal(graphs[source], graphs[target])
    for name in SPLITS:
        assert np.array_equal(arrays["masks"][name][source], arrays["masks"][name][target])
    assert set(zip(source.tolist(), target.tolist())) == set(zip(target.tolist(), source.tolist()))  # undirected
    assert len(np.unique(graphs[source])) == sbm_inductive.INDUCTIVE_GRAPHS  # every graph has edges


def test_the_graphs_are_drawn_apart_and_share_their_communities_feature_means(union):
    arrays, facts = union
    assert len(set(facts["graph_sizes"])) > 1  # each graph its own draw, its own size
    means = np.array(facts["community_means"])
    for name in ("train", "test"):  # the same μ_k in the training and the unseen graphs
        x, y = arrays["x"][arrays["masks"][name]], arrays["y"][arrays["masks"][name]]
        estimated = np.stack([x[y == k].mean(axis=0) for k in range(sbm_inductive.INDUCTIVE_BLOCKS)])
        assert np.abs(estimated - means).max() < 0.5


def test_the_split_follows_the_split_seed_and_the_graphs_do_not(union):
    arrays, facts = union
    other, other_facts = sbm_inductive.make_graph(DataConfig(split_seed=1, val_fraction=0.1, test_fraction=0.2))
    again, _ = sbm_inductive.make_graph(CONFIG)
    assert all(np.array_equal(arrays["masks"][name], again["masks"][name]) for name in SPLITS)
    assert other_facts["graphs"] != facts["graphs"]
    for key in ("x", "edge_index", "y"):
        assert np.array_equal(arrays[key], other[key]) and np.array_equal(arrays[key], again[key])


@pytest.mark.parametrize("family", ["gcn", "sage", "gat"])
def test_the_unseen_graphs_nodes_do_not_change_a_training_nodes_scores(union, family):
    from pipeline.params import family_class

    arrays, _ = union
    train = torch.tensor(arrays["masks"]["train"])
    x, edge_index = torch.tensor(arrays["x"], dtype=torch.float32), torch.tensor(arrays["edge_index"])
    model = {"hidden_sizes": [8, 8], "activation": "relu", "dropout": 0.0}
    if family == "gat":
        model.update(heads=2, attention_dropout=0.0)
    torch.manual_seed(0)
    network = family_class(family)(data=sbm_inductive.DATASET.spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)
    changed = x.clone()
    changed[~train] = torch.randn(int((~train).sum()), x.shape[1]) * 10  # other features in the other graphs
    with torch.no_grad():
        scores, scores_changed = network.node_scores(x, edge_index), network.node_scores(changed, edge_index)
    assert torch.equal(scores[train], scores_changed[train])
    assert not torch.allclose(scores[~train], scores_changed[~train])


def test_a_graph_network_trained_on_the_training_graphs_classifies_the_unseen_graphs_nodes(union):
    from torch_geometric.data import Data

    from modules.gcn import GraphConvolutionalNetwork

    arrays, _ = union
    x, edge_index = torch.tensor(arrays["x"], dtype=torch.float32), torch.tensor(arrays["edge_index"])
    y = torch.tensor(arrays["y"])
    masks = {name: torch.tensor(arrays["masks"][name]) for name in SPLITS}
    torch.manual_seed(0)
    network = GraphConvolutionalNetwork(data=sbm_inductive.DATASET.spec, optimizer=ADAM, scheduler=NO_SCHEDULE,
                                        hidden_sizes=[16], activation="relu", dropout=0.0)
    fit_batch(network, Data(x=x, edge_index=edge_index, mask=masks["train"]), y[masks["train"]], steps=60)
    network.eval()
    with torch.no_grad():
        accuracy = (network(Data(x=x, edge_index=edge_index, mask=masks["test"])).argmax(-1) == y[masks["test"]]).float().mean()
    assert accuracy > 0.85  # the features alone: about 0.67 (the report's baselines)
