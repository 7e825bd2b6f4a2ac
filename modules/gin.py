"""Graph isomorphism network (ch. 8), graph-level classification (Xu et al. 2019, "How powerful are
graph neural networks?").

Each graph G of N nodes comes with its edges (every undirected edge both ways, as in modules/gcn.py:
a message flows from edge_index[0], the source j, to edge_index[1], the target i) and node features
h_i⁽⁰⁾ = x_i. Each layer ℓ = 1, ..., L is the book's message passing with a sum of the neighbours'
states as the aggregation and a small feedforward network as the update:

    h_i⁽ℓ⁾ = MLP⁽ℓ⁾((1 + ε⁽ℓ⁾) h_i⁽ℓ⁻¹⁾ + Σ_{j ∈ N(i)} h_j⁽ℓ⁻¹⁾),

with ε⁽ℓ⁾ a learned scalar. A sum (not a mean or a maximum) of the neighbours keeps the multiset of
their states: a GIN can tell apart whatever the Weisfeiler-Lehman colour refinement (1-WL) tells apart,
and no message-passing network can tell apart more (pipeline/references/connectivity.py computes that
bound on the test graphs).

A readout pools each layer's node states into one vector per graph, h_G⁽ℓ⁾ = Σ_{i ∈ G} h_i⁽ℓ⁾ (or the
mean), and a feedforward head maps their concatenation [h_G⁽¹⁾, ..., h_G⁽ᴸ⁾] to the graph's K class
scores. A mini-batch of B graphs is one graph whose components are the B graphs, with each node's graph
in `batch` (ΣN,).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from modules._feedforward import feedforward
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.graph_level import GraphLevelModule
from pipeline.spec import DataSpec

Pooling = Literal["sum", "mean"]


def neighbour_sum(h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Σ_{j ∈ N(i)} h_j for every node i: h (N, D), edge_index (2, E) -> (N, D)."""
    source, target = edge_index
    return torch.zeros_like(h).index_add_(0, target, h[source])


def graph_pool(h: torch.Tensor, batch: torch.Tensor, num_graphs: int, pooling: Pooling) -> torch.Tensor:
    """The readout h_G = Σ_{i ∈ G} h_i (sum) or (1/N_G) Σ_{i ∈ G} h_i (mean) of each graph G:
    h (ΣN, D), batch (ΣN,) the graph of each node -> (B, D)."""
    total = torch.zeros(num_graphs, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, batch, h)
    if pooling == "sum":
        return total
    counts = torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(h.dtype)  # N_G
    return total / counts[:, None]


class GINLayer(nn.Module):
    """h (N, F_in) -> MLP((1 + ε) h + Σ_{j ∈ N(i)} h_j) (N, F_out); MLP: linear, ReLU, linear; ε starts at 0."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.epsilon = nn.Parameter(torch.zeros(()))  # ε⁽ℓ⁾
        self.mlp = feedforward([in_features, out_features, out_features], "relu")

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.mlp((1 + self.epsilon) * h + neighbour_sum(h, edge_index))


class GraphIsomorphismNetwork(GraphLevelModule):
    """x (ΣN, F) -> [GIN layer -> ReLU] x L -> pooled per graph, every layer's -> concatenated (B, L D)
    -> linear, ReLU, dropout, linear -> scores (B, K)."""

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        hidden_size: int,  # D, the width of every node state and of the head
        layers: int,  # L, message-passing layers: a node sees L hops away
        pooling: Pooling,  # the readout over each graph's nodes: sum (keeps the count of nodes) or mean
        dropout: float,  # dropout probability in the head, in [0, 1)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        widths = [data.input_shape[0], *[hidden_size] * layers]
        self.layers = nn.ModuleList(GINLayer(fan_in, fan_out) for fan_in, fan_out in zip(widths[:-1], widths[1:]))
        self.pooling = pooling
        self.head = feedforward([layers * hidden_size, hidden_size, data.num_outputs], "relu", dropout=dropout)

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        for key in ("hidden_size", "layers"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if not 0 <= model["dropout"] < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {model['dropout']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "hidden_size": min(model["hidden_size"], 8), "layers": min(model["layers"], 2)}

    def graph_scores(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        h, readouts = x, []
        for layer in self.layers:
            h = torch.relu(layer(h, edge_index))  # (ΣN, D)
            readouts.append(graph_pool(h, batch, num_graphs, self.pooling))  # h_G⁽ℓ⁾ (B, D)
        return self.head(torch.cat(readouts, dim=1))  # (B, L D) -> (B, K)


MODEL = GraphIsomorphismNetwork
