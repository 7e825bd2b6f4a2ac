"""Graph attention network (ch. 8), node classification (Veličković et al.'s GAT).

A graph of N nodes, node features H⁽⁰⁾ = X (N, F). Where GCN weights node j's message to node i by the
fixed 1/√(d̂_i d̂_j), a GAT layer learns the weight from the two nodes' states. Per head m = 1..M, with
W (C, F_in) and a = [a_target; a_source] (2C,),

    e_ij = LeakyReLU(aᵀ [W h_i ‖ W h_j]) = LeakyReLU(a_targetᵀ W h_i + a_sourceᵀ W h_j),
    α_ij = softmax_j(e_ij) = exp(e_ij) / Σ_{k ∈ N(i) ∪ {i}} exp(e_ik),
    h_i' = Σ_{j ∈ N(i) ∪ {i}} α_ij W h_j,

the softmax running over node i's neighbourhood, a self-loop included, so each node attends to itself
too. A hidden layer concatenates its M heads' h_i' (M C features) and applies σ; the last layer
averages its heads' scores (K each): the K class scores of each node. Dropout on every layer's input
and on the attention weights α, as in the paper. Splitting a into a_target and a_source is what lets
e_ij be computed per edge from two per-node numbers, never forming [W h_i ‖ W h_j].

Edges as edge_index (2, E), messages from edge_index[0] (source j) to edge_index[1] (target i), as in
modules/gcn.py. PyTorch Geometric's `softmax` and `scatter` do the per-neighbourhood softmax and sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules._feedforward import ACTIVATIONS, Activation
from modules.mlp import FeedforwardNetwork
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.graph import GraphModule
from pipeline.spec import DataSpec

NEGATIVE_SLOPE = 0.2  # LeakyReLU's slope in e_ij, the paper's


def with_self_loops(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The edges (2, E') of N(i) ∪ {i}: the input's, without any self-loop it has, and one (i, i) per node."""
    from torch_geometric.utils import add_self_loops, remove_self_loops

    return add_self_loops(remove_self_loops(edge_index)[0], num_nodes=num_nodes)[0]


def attention_weights(
    wh: torch.Tensor, a_target: torch.Tensor, a_source: torch.Tensor, edge_index: torch.Tensor
) -> torch.Tensor:
    """α (E, M): per edge j -> i and head, softmax over i's incoming edges of
    e_ij = LeakyReLU(a_targetᵀ W h_i + a_sourceᵀ W h_j); wh is W H (N, M, C), a_target, a_source (M, C)."""
    from torch_geometric.utils import softmax

    source, target = edge_index
    score_target = (wh * a_target).sum(dim=-1)  # (N, M): a_targetᵀ W h_i
    score_source = (wh * a_source).sum(dim=-1)  # (N, M): a_sourceᵀ W h_j
    e = F.leaky_relu(score_target[target] + score_source[source], NEGATIVE_SLOPE)  # (E, M)
    return softmax(e, index=target, num_nodes=len(wh))  # each target's weights sum to 1, per head


def attend(wh: torch.Tensor, alpha: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """h_i' = Σ_j α_ij W h_j per head: (N, M, C) from wh (N, M, C) and α (E, M)."""
    from torch_geometric.utils import scatter

    source, target = edge_index
    return scatter(alpha.unsqueeze(-1) * wh[source], target, dim=0, dim_size=len(wh), reduce="sum")


class GATLayer(nn.Module):
    """H (N, F_in) -> M heads of attention -> concatenated (N, M C) or averaged (N, C), plus b, before σ.
    W, a_target, a_source Glorot-initialized, b zero (PyTorch Geometric's GATConv's initialization)."""

    def __init__(self, in_features: int, out_features: int, *, heads: int, concat: bool, attention_dropout: float):
        super().__init__()
        self.heads, self.out_features, self.concat = heads, out_features, concat
        self.linear = nn.Linear(in_features, heads * out_features, bias=False)  # the M heads' W, stacked
        self.a_target = nn.Parameter(torch.empty(heads, out_features))
        self.a_source = nn.Parameter(torch.empty(heads, out_features))
        self.bias = nn.Parameter(torch.zeros(heads * out_features if concat else out_features))
        self.attention_dropout = nn.Dropout(attention_dropout)
        for weight in (self.linear.weight, self.a_target, self.a_source):
            nn.init.xavier_uniform_(weight)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """h (N, F_in) and the edges with self-loops (2, E') -> (N, M C) concatenated or (N, C) averaged."""
        wh = self.linear(h).view(len(h), self.heads, self.out_features)  # (N, M, C)
        alpha = self.attention_dropout(attention_weights(wh, self.a_target, self.a_source, edge_index))  # (E', M)
        out = attend(wh, alpha, edge_index)  # (N, M, C)
        out = out.flatten(1) if self.concat else out.mean(dim=1)  # (N, M C) or (N, C)
        return out + self.bias


class GraphAttentionNetwork(GraphModule):
    """X (N, F) -> [dropout -> GAT layer (heads concatenated) -> σ] x L -> dropout -> GAT layer (heads
    averaged) -> scores (N, K)."""

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        hidden_sizes: list[int],  # features per head of each hidden layer; its length is L (0: one layer)
        heads: int,  # attention heads M of every layer (concatenated in hidden layers, averaged in the last)
        activation: Activation,  # σ between layers
        dropout: float,  # dropout probability on each layer's input, in [0, 1)
        attention_dropout: float,  # dropout probability on the attention weights α, in [0, 1)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        fan_ins = [data.input_shape[0], *(heads * width for width in hidden_sizes)]  # a hidden layer's M heads concatenated
        fan_outs = [*hidden_sizes, data.num_outputs]
        self.layers = nn.ModuleList(
            GATLayer(fan_in, fan_out, heads=heads, concat=index < len(hidden_sizes), attention_dropout=attention_dropout)
            for index, (fan_in, fan_out) in enumerate(zip(fan_ins, fan_outs))
        )
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        FeedforwardNetwork.check_config(model, data)  # dropout, hidden_sizes
        if model["heads"] < 1:
            raise ValueError(f"heads: must be a positive integer, got {model['heads']}")
        if not 0 <= model["attention_dropout"] < 1:
            raise ValueError(f"attention_dropout: must be in [0, 1), got {model['attention_dropout']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**FeedforwardNetwork.small_config(model), "heads": min(model["heads"], 2)}

    def node_scores(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        edge_index = with_self_loops(edge_index, len(x))  # (2, E + N): N(i) ∪ {i}
        h = x
        for index, layer in enumerate(self.layers):
            h = layer(self.dropout(h), edge_index)
            if index < len(self.layers) - 1:
                h = self.activation(h)
        return h  # (N, K)


MODEL = GraphAttentionNetwork
