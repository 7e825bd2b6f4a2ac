"""Graph attention (ch. 8): the attention weights against the book's formula computed densely, the
layer against PyTorch Geometric's GATConv with the same weights (several heads, concatenated and
averaged, a self-loop in the input), permutation equivariance, fitting the labelled nodes, config checks."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from modules.gat import NEGATIVE_SLOPE, GATLayer, GraphAttentionNetwork, attend, attention_weights, with_self_loops
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.datasets._graph import edge_index_of
from pipeline.spec import DataSpec

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
VALID = {"hidden_sizes": [8], "heads": 3, "activation": "relu", "dropout": 0.5, "attention_dropout": 0.5}


def random_graph(nodes: int = 12, p: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, int]:
    graph = nx.gnp_random_graph(nodes, p, seed=seed)
    graph.add_node(nodes)  # isolated: it attends to itself alone
    return torch.tensor(edge_index_of(graph)), nodes + 1


def make_network(spec: DataSpec = DataSpec("multiclass", (5,), 3), **overrides) -> GraphAttentionNetwork:
    return GraphAttentionNetwork(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **{**VALID, **overrides})


def test_self_loops_are_one_per_node_whatever_the_input_has():
    edge_index, nodes = random_graph()
    with_loop = torch.cat([edge_index, torch.tensor([[3], [3]])], dim=1)  # a self-loop already there
    source, target = with_self_loops(with_loop, nodes)
    assert (source == target).sum() == nodes and set((source[source == target]).tolist()) == set(range(nodes))
    assert source.shape[0] == edge_index.shape[1] + nodes


def test_attention_weights_and_messages_are_the_books_formula_computed_densely():
    torch.manual_seed(0)
    edge_index, nodes = random_graph()
    edge_index = with_self_loops(edge_index, nodes)
    heads, width = 3, 4
    wh, a = torch.randn(nodes, heads, width), torch.randn(heads, 2 * width)  # W h and a = [a_target; a_source]
    alpha = attention_weights(wh, a[:, :width], a[:, width:], edge_index)
    out = attend(wh, alpha, edge_index)
    adjacency = torch.zeros(nodes, nodes, dtype=torch.bool)
    adjacency[edge_index[1], edge_index[0]] = True  # row i: N(i) ∪ {i}
    for m in range(heads):
        e = torch.full((nodes, nodes), float("-inf"))
        for i in range(nodes):
            for j in range(nodes):
                if adjacency[i, j]:  # e_ij = LeakyReLU(aᵀ [W h_i ‖ W h_j])
                    e[i, j] = F.leaky_relu(a[m] @ torch.cat([wh[i, m], wh[j, m]]), NEGATIVE_SLOPE)
        dense_alpha = torch.softmax(e, dim=1)  # over j in N(i) ∪ {i}
        assert torch.allclose(alpha[:, m], dense_alpha[edge_index[1], edge_index[0]], atol=1e-6)
        assert torch.allclose(out[:, m], dense_alpha @ wh[:, m], atol=1e-5)
    assert torch.allclose(out[-1], wh[-1], atol=1e-6)  # the isolated node's only neighbour is itself


@pytest.mark.parametrize("concat", [True, False])
def test_layer_equals_pytorch_geometric_gatconv_with_the_same_weights(concat):
    from torch_geometric.nn import GATConv

    torch.manual_seed(0)
    edge_index, nodes = random_graph()
    edge_index = torch.cat([edge_index, torch.tensor([[5], [5]])], dim=1)  # GATConv too replaces it by one loop
    x = torch.randn(nodes, 6)
    conv = GATConv(6, 4, heads=3, concat=concat)
    torch.nn.init.normal_(conv.bias)  # zero at initialization: a nonzero one checks where it is added
    layer = GATLayer(6, 4, heads=3, concat=concat, attention_dropout=0.0)
    with torch.no_grad():
        layer.linear.weight.copy_(conv.lin.weight)
        layer.a_source.copy_(conv.att_src[0])  # (1, M, C) in PyG
        layer.a_target.copy_(conv.att_dst[0])
        layer.bias.copy_(conv.bias)
    expected = conv(x, edge_index)
    assert expected.shape == (nodes, 12 if concat else 4)
    assert torch.allclose(layer(x, with_self_loops(edge_index, nodes)), expected, atol=1e-5)
    with torch.no_grad():  # a_source and a_target swapped: the two ends of an edge must not be mixed up
        layer.a_source.copy_(conv.att_dst[0])
        layer.a_target.copy_(conv.att_src[0])
    assert not torch.allclose(layer(x, with_self_loops(edge_index, nodes)), expected, atol=1e-3)


def test_hidden_layers_concatenate_their_heads_and_the_last_averages_them():
    network = make_network(hidden_sizes=[8, 6], heads=3)
    assert [(layer.linear.in_features, layer.heads, layer.concat) for layer in network.layers] == [
        (5, 3, True), (24, 3, True), (18, 3, False)]
    assert network.node_scores(torch.randn(7, 5), torch.tensor([[0, 1], [1, 0]])).shape == (7, 3)


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
    assert not torch.allclose(scores, scores[permutation], atol=1e-3)


def test_fits_the_labelled_nodes_of_a_graph_whose_features_say_nothing():
    torch.manual_seed(0)
    graph = nx.karate_club_graph()
    y = torch.tensor([graph.nodes[i]["club"] == "Officer" for i in graph.nodes], dtype=torch.long)
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[::3] = True
    batch = (Data(x=torch.eye(len(y)), edge_index=torch.tensor(edge_index_of(graph)), mask=mask), y[mask])
    network = make_network(DataSpec("multiclass", (34,), 2), dropout=0.0, attention_dropout=0.0)
    with torch.no_grad():
        before = network.training_step(batch, 0).item()
    fit_batch(network, *batch, steps=150)
    network.eval()
    with torch.no_grad():
        assert network.training_step(batch, 0).item() < 0.05 < before
        assert torch.equal(network(batch[0]).argmax(dim=-1), batch[1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dropout": 1.0}, r"^dropout: must be in \[0, 1\), got 1\.0$"),
        ({"hidden_sizes": [0]}, r"^hidden_sizes: widths must be positive integers, got \[0\]$"),
        ({"heads": 0}, r"^heads: must be a positive integer, got 0$"),
        ({"attention_dropout": 1.0}, r"^attention_dropout: must be in \[0, 1\), got 1\.0$"),
        ({"attention_dropout": -0.1}, r"^attention_dropout: must be in \[0, 1\), got -0\.1$"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    GraphAttentionNetwork.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        GraphAttentionNetwork.check_config({**VALID, **change})
