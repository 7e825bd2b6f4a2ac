"""Graph convolutional network (ch. 8), node classification (Kipf and Welling's GCN).

A graph of N nodes with adjacency matrix A (N, N) and node features H⁽⁰⁾ = X (N, F). Each layer

    H⁽ℓ⁾ = σ(D̂^{-1/2} Â D̂^{-1/2} H⁽ℓ⁻¹⁾ W⁽ℓ⁾ + b⁽ℓ⁾),   Â = A + I,   D̂ = diag(Σ_j Â_ij),

is the book's message passing: node i sums the messages W h_j of its neighbours and of itself, each
weighted by 1/√(d̂_i d̂_j),

    h_i⁽ℓ⁾ = σ(Σ_{j ∈ N(i) ∪ {i}} (d̂_i d̂_j)^{-1/2} W⁽ℓ⁾ h_j⁽ℓ⁻¹⁾ + b⁽ℓ⁾),

computed as one sparse matrix product. The last layer has no σ: its rows are the K class scores of
each node. Dropout before every layer, as in Kipf and Welling.

The edges come as edge_index (2, E): a message flows from edge_index[0] (source j) to edge_index[1]
(target i); an undirected graph lists each edge both ways (PyTorch Geometric's convention).
"""

from __future__ import annotations

import torch
from torch import nn

from modules._feedforward import ACTIVATIONS, Activation
from modules.mlp import FeedforwardNetwork
from pipeline.spec import DataSpec
from pipeline.core.graph import GraphModule
from pipeline.config import OptimizerConfig, SchedulerConfig


def gcn_norm(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The entries of D̂^{-1/2} (A + I) D̂^{-1/2}: edges (2, E + N), the input's and a self-loop (i, i)
    per node, and their weights (E + N,) 1/√(d̂_i d̂_j), with d̂_i the edges into i, self-loop included."""
    loops = torch.arange(num_nodes, device=edge_index.device).expand(2, num_nodes)
    edge_index = torch.cat([edge_index, loops], dim=1)  # Â = A + I
    source, target = edge_index
    ones = torch.ones(target.shape, device=edge_index.device)
    degree = torch.zeros(num_nodes, device=edge_index.device).index_add_(0, target, ones)  # d̂
    inv_sqrt_degree = degree.rsqrt()
    return edge_index, inv_sqrt_degree[target] * inv_sqrt_degree[source]


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """D̂^{-1/2} Â D̂^{-1/2} as a sparse (N, N) matrix: row i, column j holds the weight of j's message to i."""
    edge_index, weight = gcn_norm(edge_index, num_nodes)
    # check_invariants=False: torch's default, said explicitly (left implicit, torch warns that it is off);
    # the indices are the graph's edges, in range by construction
    return torch.sparse_coo_tensor(edge_index.flip(0), weight, (num_nodes, num_nodes), check_invariants=False).coalesce()


def propagate(matrix: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """P H for a sparse propagation matrix P (N, N) and H (N, F), in P's float32 and outside autocast:
    under bf16-mixed H is bfloat16, but sparse.mm takes one dtype (its backward fails under autocast),
    and a sum over many neighbours wants the precision."""
    with torch.autocast(h.device.type, enabled=False):
        return torch.sparse.mm(matrix, h.to(matrix.dtype))


class GCNLayer(nn.Module):
    """H (N, F_in) -> D̂^{-1/2} Â D̂^{-1/2} H W + b (N, F_out), before σ; W Glorot-initialized, b zero."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)  # H W (weight stored as Wᵀ)
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.xavier_uniform_(self.linear.weight)

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return propagate(adjacency, self.linear(h)) + self.bias  # every node sums its messages at once


class GraphLayerStack(GraphModule):
    """X (N, F) -> [dropout -> layer -> σ] x L -> dropout -> layer -> scores (N, K), each layer taking
    (H, P) with P the family's sparse propagation matrix; GCN here, GraphSAGE (modules/sage.py) too."""

    LAYER: type[nn.Module]  # (in_features, out_features) -> a module of (h, propagation)

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        hidden_sizes: list[int],  # widths of the hidden layers; its length is L (0: one layer)
        activation: Activation,  # σ between layers
        dropout: float,  # dropout probability on each layer's input, in [0, 1)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        widths = [data.input_shape[0], *hidden_sizes, data.num_outputs]
        self.layers = nn.ModuleList(self.LAYER(fan_in, fan_out) for fan_in, fan_out in zip(widths[:-1], widths[1:]))
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    check_config = staticmethod(FeedforwardNetwork.check_config)  # the same keys: dropout, hidden_sizes
    small_config = staticmethod(FeedforwardNetwork.small_config)

    @staticmethod
    def propagation(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
        """The sparse (N, N) matrix each layer multiplies the node states by."""
        raise NotImplementedError

    def node_scores(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        propagation = self.propagation(edge_index, len(x))  # (N, N) sparse
        h = x
        for index, layer in enumerate(self.layers):
            h = layer(self.dropout(h), propagation)
            if index < len(self.layers) - 1:
                h = self.activation(h)
        return h  # (N, K)


class GraphConvolutionalNetwork(GraphLayerStack):
    """GCN layers, propagation D̂^{-1/2} Â D̂^{-1/2}."""

    LAYER = GCNLayer
    propagation = staticmethod(normalized_adjacency)


MODEL = GraphConvolutionalNetwork
