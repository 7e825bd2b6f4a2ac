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

from modules.gcn import GraphLayerStack, propagate


def mean_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """D⁻¹ A as a sparse (N, N) matrix: row i holds 1/|N(i)| at each neighbour j of i (edges into i)."""
    source, target = edge_index
    ones = torch.ones(target.shape, device=edge_index.device)
    degree = torch.zeros(num_nodes, device=edge_index.device).index_add_(0, target, ones)
    weight = 1.0 / degree[target]
    # torch's default, said explicitly, as in modules.gcn.normalized_adjacency
    return torch.sparse_coo_tensor(torch.stack([target, source]), weight, (num_nodes, num_nodes),
                                   check_invariants=False).coalesce()


class SAGELayer(nn.Module):
    """H (N, F_in) -> H W_self + (D⁻¹ A H) W_neigh + b (N, F_out), before σ."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.neighbours = nn.Linear(in_features, out_features)  # W_neigh and b
        self.root = nn.Linear(in_features, out_features, bias=False)  # W_self

    def forward(self, h: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        return self.neighbours(propagate(mean, h)) + self.root(h)


class GraphSAGE(GraphLayerStack):
    """SAGE layers, propagation D⁻¹ A (the neighbours' mean); the layer stack is modules/gcn.py's."""

    LAYER = SAGELayer
    propagation = staticmethod(mean_adjacency)


MODEL = GraphSAGE
