"""GraphSAGE (ch. 8), node classification with mean aggregation (Hamilton, Ying and Leskovec).

A graph of N nodes, node features H⁽⁰⁾ = X (N, F). Each layer updates node i from its own state and
the mean of its neighbours' states, with separate weights for the two:

    h_i⁽ℓ⁾ = σ(W_self⁽ℓ⁾ h_i⁽ℓ⁻¹⁾ + W_neigh⁽ℓ⁾ (1/|N(i)|) Σ_{j ∈ N(i)} h_j⁽ℓ⁻¹⁾ + b⁽ℓ⁾),

that is H⁽ℓ⁾ = σ(H W_self + D⁻¹ A H W_neigh + b) with D = diag(Σ_j A_ij); an isolated node's mean is 0.
Unlike GCN's symmetric normalization, a node's own state is not mixed into its neighbours' average, so
it is kept apart from the neighbourhood. The last layer has no σ: the K class scores of each node.
Dropout before every layer.

Edges as edge_index (2, E), messages from edge_index[0] (j) to edge_index[1] (i), as in modules/gcn.py.
"""

from __future__ import annotations

import torch
from torch import nn

from modules.mlp import ACTIVATIONS, Activation
from pipeline.data import DataSpec
from pipeline.graph import GraphModule
from pipeline.params import OptimizerConfig, SchedulerConfig


def mean_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """D⁻¹ A as a sparse (N, N) matrix: row i holds 1/|N(i)| at each neighbour j of i (edges into i)."""
    source, target = edge_index
    degree = torch.zeros(num_nodes, device=edge_index.device).index_add_(0, target, torch.ones(target.shape))
    weight = 1.0 / degree[target]
    return torch.sparse_coo_tensor(torch.stack([target, source]), weight, (num_nodes, num_nodes)).coalesce()


class SAGELayer(nn.Module):
    """H (N, F_in) -> H W_self + (D⁻¹ A H) W_neigh + b (N, F_out), before σ."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.neighbours = nn.Linear(in_features, out_features)  # W_neigh and b
        self.root = nn.Linear(in_features, out_features, bias=False)  # W_self

    def forward(self, h: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        return self.neighbours(torch.sparse.mm(mean, h)) + self.root(h)


class GraphSAGE(GraphModule):
    """X (N, F) -> [dropout -> SAGE layer -> σ] x L -> dropout -> SAGE layer -> scores (N, K)."""

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        hidden_sizes: list[int],  # widths of the hidden SAGE layers; its length is L (0: one layer)
        activation: Activation,  # σ between layers
        dropout: float,  # dropout probability on each layer's input, in [0, 1)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        widths = [data.input_shape[0], *hidden_sizes, data.num_outputs]
        self.layers = nn.ModuleList(SAGELayer(fan_in, fan_out) for fan_in, fan_out in zip(widths[:-1], widths[1:]))
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if not 0 <= model["dropout"] < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {model['dropout']}")
        if any(width < 1 for width in model["hidden_sizes"]):
            raise ValueError(f"hidden_sizes: widths must be positive integers, got {model['hidden_sizes']}")

    def node_scores(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        mean = mean_adjacency(edge_index, len(x))  # (N, N) sparse
        h = x
        for index, layer in enumerate(self.layers):
            h = layer(self.dropout(h), mean)
            if index < len(self.layers) - 1:
                h = self.activation(h)
        return h  # (N, K)


MODEL = GraphSAGE
