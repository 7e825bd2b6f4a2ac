"""Graph isomorphism network (ch. 8): the layer against PyTorch Geometric's GINConv with the same
weights, the neighbour sum against the dense adjacency, the readout against a loop over the graphs and
PyG's pooling, invariance to the order of the nodes, the 1-WL limit, fitting, config checks."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch, Data

from modules.gin import GINLayer, GraphIsomorphismNetwork, graph_pool, neighbour_sum
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.datasets._graph import edge_index_of
from pipeline.spec import DataSpec

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
VALID = {"hidden_size": 16, "layers": 3, "pooling": "sum", "dropout": 0.0}


def as_data(graph, features: int = 1, seed: int | None = None) -> Data:
    """A networkx graph as PyG Data: constant features (seed None) or seeded normal ones."""
    n = graph.number_of_nodes()
    x = torch.ones(n, features) if seed is None else torch.randn(n, features, generator=torch.Generator().manual_seed(seed))
    return Data(x=x, edge_index=torch.tensor(edge_index_of(graph)), num_nodes=n)


def some_graphs(features: int = 1, random_features: bool = False) -> Batch:
    graphs = [nx.gnp_random_graph(n, 0.4, seed=n) for n in (5, 7, 4, 9)]
    graphs.append(nx.empty_graph(3))  # no edges: each node keeps its own state
    return Batch.from_data_list([as_data(g, features, seed=i if random_features else None) for i, g in enumerate(graphs)])


def make_network(spec: DataSpec = DataSpec("multiclass", (1,), 2), **overrides) -> GraphIsomorphismNetwork:
    return GraphIsomorphismNetwork(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **{**VALID, **overrides})


def test_neighbour_sum_is_the_adjacency_times_the_states():
    graphs = some_graphs(3, random_features=True)
    adjacency = torch.zeros(graphs.num_nodes, graphs.num_nodes)
    adjacency[graphs.edge_index[1], graphs.edge_index[0]] = 1.0  # row i: the neighbours j of i
    assert torch.allclose(neighbour_sum(graphs.x, graphs.edge_index), adjacency @ graphs.x, atol=1e-6)


def test_layer_equals_pytorch_geometric_ginconv_with_the_same_weights():
    from torch_geometric.nn import GINConv

    torch.manual_seed(0)
    graphs = some_graphs(4, random_features=True)
    layer = GINLayer(4, 6)
    with torch.no_grad():
        layer.epsilon.fill_(0.3)  # ε = 0 at the start would hide a missing (1 + ε)
    conv = GINConv(layer.mlp, eps=0.3, train_eps=True)  # the same MLP module: the same weights
    assert torch.allclose(layer(graphs.x, graphs.edge_index), conv(graphs.x, graphs.edge_index), atol=1e-6)
    with torch.no_grad():
        layer.epsilon.fill_(0.4)
    assert not torch.allclose(layer(graphs.x, graphs.edge_index), conv(graphs.x, graphs.edge_index), atol=1e-4)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_readout_is_a_loop_over_the_graphs_and_pytorch_geometrics_pooling(pooling):
    from torch_geometric.nn import global_add_pool, global_mean_pool

    graphs = some_graphs(3, random_features=True)
    pooled = graph_pool(graphs.x, graphs.batch, graphs.num_graphs, pooling)
    loop = torch.stack([
        graph.x.sum(dim=0) if pooling == "sum" else graph.x.mean(dim=0) for graph in graphs.to_data_list()
    ])
    assert pooled.shape == (5, 3) and torch.allclose(pooled, loop, atol=1e-6)
    library = (global_add_pool if pooling == "sum" else global_mean_pool)(graphs.x, graphs.batch)
    assert torch.allclose(pooled, library, atol=1e-6)


def test_scores_ignore_the_order_of_the_nodes_and_of_the_graphs():
    torch.manual_seed(0)
    graphs = some_graphs(2, random_features=True)
    network = make_network(DataSpec("multiclass", (2,), 3)).eval()
    shuffled = []
    for index, graph in enumerate(graphs.to_data_list()):
        permutation = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(index))
        new_label = torch.empty_like(permutation)
        new_label[permutation] = torch.arange(graph.num_nodes)  # new node k is old node permutation[k]
        shuffled.append(Data(x=graph.x[permutation], edge_index=new_label[graph.edge_index], num_nodes=graph.num_nodes))
    with torch.no_grad():
        scores = network(graphs)
        assert torch.allclose(network(Batch.from_data_list(shuffled[::-1])), scores.flip(0), atol=1e-5)
        assert not torch.allclose(scores[0], scores[1], atol=1e-3)  # the graphs do get different scores


def test_two_triangles_and_a_hexagon_get_the_same_scores_from_constant_features():
    """Both 2-regular: 1-WL colours every node alike, so any message-passing network scores them alike,
    though one is connected and the other is not."""
    torch.manual_seed(0)
    hexagon, triangles = nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    network = make_network().eval()
    with torch.no_grad():
        scores = network(Batch.from_data_list([as_data(hexagon), as_data(triangles), as_data(nx.path_graph(6))]))
    assert torch.allclose(scores[0], scores[1], atol=1e-6)
    assert not torch.allclose(scores[0], scores[2], atol=1e-3)  # a path differs: its ends have one neighbour


def test_fits_a_few_graphs_whose_node_and_edge_counts_are_equal():
    """A 6-path (connected) against a triangle plus a 3-path (not): 6 nodes and 5 edges each."""
    torch.manual_seed(0)
    connected = [nx.path_graph(6), nx.star_graph(5)]
    disconnected = [nx.disjoint_union(nx.cycle_graph(3), nx.path_graph(3)), nx.disjoint_union(nx.cycle_graph(4), nx.path_graph(2))]
    batch = (Batch.from_data_list([as_data(g) for g in connected + disconnected]), torch.tensor([1, 1, 0, 0]))
    network = make_network()
    with torch.no_grad():
        before = network.training_step(batch, 0).item()
    fit_batch(network, *batch, steps=200)
    network.eval()
    with torch.no_grad():
        assert network.training_step(batch, 0).item() < 0.05 < before
        assert torch.equal(network(batch[0]).argmax(dim=-1), batch[1])


def test_one_layer_per_hop_and_a_head_on_every_layers_readout():
    network = make_network(DataSpec("multiclass", (3,), 4), hidden_size=8, layers=2)
    assert [layer.mlp[0].in_features for layer in network.layers] == [3, 8]
    assert network.head[0].in_features == 2 * 8 and network.head[-1].out_features == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dropout": 1.0}, r"^dropout: must be in \[0, 1\), got 1\.0$"),
        ({"layers": 0}, r"^layers: must be a positive integer, got 0$"),
        ({"hidden_size": -2}, r"^hidden_size: must be a positive integer, got -2$"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    GraphIsomorphismNetwork.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        GraphIsomorphismNetwork.check_config({**VALID, **change})


def test_small_config_shrinks_the_sizes_and_keeps_the_rest():
    assert GraphIsomorphismNetwork.small_config({**VALID, "hidden_size": 64, "layers": 6}) == {**VALID, "hidden_size": 8, "layers": 2}
