"""GraphSAGE (ch. 8): the mean aggregation against the dense formula, the layer against PyTorch
Geometric's SAGEConv, permutation equivariance, fitting the labelled nodes, config checks."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from torch_geometric.data import Data

from modules.sage import GraphSAGE, SAGELayer, mean_adjacency
from pipeline.datasets._graph import edge_index_of
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
VALID = {"hidden_sizes": [16], "activation": "relu", "dropout": 0.5}


def random_graph(nodes: int = 12, p: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, int]:
    graph = nx.gnp_random_graph(nodes, p, seed=seed)
    graph.add_node(nodes)  # isolated: its neighbours' mean is 0
    return torch.tensor(edge_index_of(graph)), nodes + 1


def make_network(spec: DataSpec = DataSpec("multiclass", (5,), 3), **overrides) -> GraphSAGE:
    return GraphSAGE(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **{**VALID, **overrides})


def test_mean_aggregation_is_the_dense_formula():
    edge_index, nodes = random_graph()
    a = torch.zeros(nodes, nodes)
    a[edge_index[1], edge_index[0]] = 1.0
    degree = a.sum(dim=1)
    expected = a / degree.clamp_min(1)[:, None]  # D⁻¹ A, a zero row for the isolated node
    assert degree[-1] == 0
    assert torch.allclose(mean_adjacency(edge_index, nodes).to_dense(), expected)


def test_layer_equals_pytorch_geometric_sageconv_with_the_same_weights():
    from torch_geometric.nn import SAGEConv

    torch.manual_seed(0)
    edge_index, nodes = random_graph()
    x = torch.randn(nodes, 6)
    conv = SAGEConv(6, 4, aggr="mean")
    layer = SAGELayer(6, 4)
    with torch.no_grad():
        layer.neighbours.weight.copy_(conv.lin_l.weight)
        layer.neighbours.bias.copy_(conv.lin_l.bias)
        layer.root.weight.copy_(conv.lin_r.weight)
    assert torch.allclose(layer(x, mean_adjacency(edge_index, len(x))), conv(x, edge_index), atol=1e-5)
    with torch.no_grad():  # the two weights swapped: the root and the neighbours must not be mixed up
        layer.neighbours.weight.copy_(conv.lin_r.weight)
        layer.root.weight.copy_(conv.lin_l.weight)
    assert not torch.allclose(layer(x, mean_adjacency(edge_index, len(x))), conv(x, edge_index), atol=1e-3)


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
    network = make_network(DataSpec("multiclass", (34,), 2), dropout=0.0)
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
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    GraphSAGE.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        GraphSAGE.check_config({**VALID, **change})
