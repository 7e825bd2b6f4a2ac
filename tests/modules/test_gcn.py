"""Graph convolutional network (ch. 8): the normalization against the dense formula, the layer against
PyTorch Geometric's GCNConv, permutation equivariance, fitting the labelled nodes, config checks."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from modules.gcn import GCNLayer, GraphConvolutionalNetwork, gcn_norm, normalized_adjacency
from pipeline.datasets._graph import edge_index_of
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
VALID = {"hidden_sizes": [16], "activation": "relu", "dropout": 0.5}


def random_graph(nodes: int = 12, p: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, int]:
    """edge_index (2, E) of a seeded G(n, p) graph, each edge both ways, with an isolated node added; N."""
    graph = nx.gnp_random_graph(nodes, p, seed=seed)
    graph.add_node(nodes)  # no neighbours: its row of Â is its self-loop alone
    return torch.tensor(edge_index_of(graph)), nodes + 1


def dense_adjacency(edge_index: torch.Tensor, nodes: int) -> torch.Tensor:
    a = torch.zeros(nodes, nodes)
    a[edge_index[1], edge_index[0]] = 1.0  # row i: the messages into i
    return a


def make_network(spec: DataSpec = DataSpec("multiclass", (5,), 3), **overrides) -> GraphConvolutionalNetwork:
    return GraphConvolutionalNetwork(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **{**VALID, **overrides})


def test_normalization_is_the_dense_formula():
    edge_index, nodes = random_graph()
    a_hat = dense_adjacency(edge_index, nodes) + torch.eye(nodes)  # Â = A + I
    d_hat = torch.diag(a_hat.sum(dim=1).rsqrt())  # D̂^{-1/2}
    expected = d_hat @ a_hat @ d_hat
    assert torch.allclose(normalized_adjacency(edge_index, nodes).to_dense(), expected, atol=1e-6)
    edges, weight = gcn_norm(edge_index, nodes)
    assert edges.shape[1] == edge_index.shape[1] + nodes and weight.shape == (edges.shape[1],)
    assert weight[-1] == 1.0  # the isolated node: d̂ = 1, its self-loop keeps its own state


def test_layer_equals_pytorch_geometric_gcnconv_with_the_same_weights():
    from torch_geometric.nn import GCNConv

    torch.manual_seed(0)
    edge_index, nodes = random_graph()
    x = torch.randn(nodes, 6)
    conv = GCNConv(6, 4)
    layer = GCNLayer(6, 4)
    with torch.no_grad():
        conv.bias.normal_()  # PyG starts it at zero: a bias added in the wrong place would go unseen
        layer.linear.weight.copy_(conv.lin.weight)
        layer.bias.copy_(conv.bias)
    ours = layer(x, normalized_adjacency(edge_index, len(x)))
    assert torch.allclose(ours, conv(x, edge_index), atol=1e-5)
    with torch.no_grad():
        layer.linear.weight.add_(0.01)
    assert not torch.allclose(layer(x, normalized_adjacency(edge_index, len(x))), conv(x, edge_index), atol=1e-5)


def test_permuting_the_nodes_permutes_the_scores():
    torch.manual_seed(0)
    edge_index, nodes = random_graph()
    x = torch.randn(nodes, 5)
    network = make_network(hidden_sizes=[8, 8]).eval()
    permutation = torch.randperm(nodes)  # new node k is old node permutation[k]
    new_label = torch.empty_like(permutation)
    new_label[permutation] = torch.arange(nodes)
    with torch.no_grad():
        scores = network.node_scores(x, edge_index)
        permuted = network.node_scores(x[permutation], new_label[edge_index])
    assert torch.allclose(permuted, scores[permutation], atol=1e-5)
    assert not torch.allclose(scores, scores[permutation], atol=1e-3)  # the scores do differ between nodes


def test_scores_depend_on_the_graph_not_only_on_the_features():
    torch.manual_seed(0)
    edge_index, nodes = random_graph()
    x = torch.randn(nodes, 5)
    network = make_network().eval()
    with torch.no_grad():
        assert not torch.allclose(network.node_scores(x, edge_index), network.node_scores(x, edge_index[:, :4]), atol=1e-3)


def test_forward_keeps_the_masked_nodes_in_order():
    torch.manual_seed(0)
    edge_index, nodes = random_graph()
    x = torch.randn(nodes, 5)
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[[1, 4, 7]] = True
    network = make_network().eval()
    with torch.no_grad():
        assert torch.equal(network(Data(x=x, edge_index=edge_index, mask=mask)), network.node_scores(x, edge_index)[[1, 4, 7]])


def test_fits_the_labelled_nodes_of_a_graph_whose_features_say_nothing():
    """Identity features (as the karate club's): the labelled nodes can only be fitted through the weights."""
    torch.manual_seed(0)
    graph = nx.karate_club_graph()
    y = torch.tensor([graph.nodes[i]["club"] == "Officer" for i in graph.nodes], dtype=torch.long)
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[::3] = True
    batch = (Data(x=torch.eye(len(y)), edge_index=torch.tensor(edge_index_of(graph)), mask=mask), y[mask])
    network = make_network(DataSpec("multiclass", (34,), 2), dropout=0.0)
    with torch.no_grad():
        before = network.training_step(batch, 0).item()
    fit_batch(network, *batch, steps=150)
    network.eval()
    with torch.no_grad():
        assert network.training_step(batch, 0).item() < 0.05 < before
        assert torch.equal(network(batch[0]).argmax(dim=-1), batch[1])


def test_depth_is_one_layer_per_hidden_width_plus_the_output_layer():
    network = make_network(DataSpec("multiclass", (5,), 3), hidden_sizes=[8, 4])
    assert [(layer.linear.in_features, layer.linear.out_features) for layer in network.layers] == [(5, 8), (8, 4), (4, 3)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dropout": 1.0}, r"^dropout: must be in \[0, 1\), got 1\.0$"),
        ({"dropout": -0.1}, r"^dropout: must be in \[0, 1\), got -0\.1$"),
        ({"hidden_sizes": [16, 0]}, r"^hidden_sizes: widths must be positive integers, got \[16, 0\]$"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    GraphConvolutionalNetwork.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        GraphConvolutionalNetwork.check_config({**VALID, **change})


def test_sparse_message_passing_matches_a_loop_over_the_edges():
    """h_i' = Σ_{j ∈ N(i) ∪ {i}} (d̂_i d̂_j)^{-1/2} W h_j + b, summed edge by edge."""
    torch.manual_seed(1)
    edge_index, nodes = random_graph(8, 0.4, seed=3)
    x = torch.randn(nodes, 3)
    layer = GCNLayer(3, 2)
    with torch.no_grad():
        layer.bias.normal_()
        messages = layer.linear(x)  # W h_j
        neighbours = [set(edge_index[0][edge_index[1] == i].tolist()) | {i} for i in range(nodes)]
        degree = np.array([len(n) for n in neighbours], dtype=np.float32)
        expected = torch.stack([
            sum(messages[j] / np.sqrt(degree[i] * degree[j]) for j in neighbours[i]) + layer.bias for i in range(nodes)
        ])
        assert torch.allclose(layer(x, normalized_adjacency(edge_index, nodes)), expected, atol=1e-5)
