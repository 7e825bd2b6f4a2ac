"""What the graph families share (graph neural networks, ch. 8): node classification on one graph,
trained full batch, semi-supervised.

A batch is (graph, y): the whole graph (a PyTorch Geometric `Data` with x (N, F), edge_index (2, E)
and the split's node `mask` (N,)) and the labels y (n,) of the n masked nodes (pipeline.data). The
network computes the scores of every node, since each needs its neighbours, and `forward` keeps the
masked nodes' rows, so SupervisedModule's loss, validation metrics, early stopping, checkpoints and
test metrics apply unchanged, to the labelled nodes in training and to the unlabelled ones in test.

A family subclasses `GraphModule` and writes `node_scores(x, edge_index)` -> (N, K).

The evaluate stage (pipeline.core.evaluation) also re-fits the experiment's own config with seeds
0-9 and reports the mean and standard deviation of their test accuracy,
test/accuracy_mean and test/accuracy_std: one seed's accuracy on a few labelled nodes varies a lot.
"""

from __future__ import annotations

import torch

from pipeline.core.family import FamilyModule
from pipeline.core.supervised import SupervisedModule


class GraphModule(SupervisedModule):
    """Scores of the masked nodes of one graph; the graph's split is its node mask."""

    TASKS = ("multiclass",)
    DATA_KIND = "graph"
    CHAPTER = 8
    EVALUATION = "graph"  # pipeline.core.evaluation.graph

    @classmethod
    def check_experiment(cls, experiment) -> None:
        for key in ("devices", "num_nodes"):
            if getattr(experiment.trainer, key) != 1:
                raise ValueError(f"trainer.{key}: full-batch training on one graph runs in one process; set it to 1")
        if experiment.trainer.accumulate_grad_batches != 1:
            raise ValueError("trainer.accumulate_grad_batches: a graph epoch is one full batch; set it to 1")

    def node_scores(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Scores (N, K) of every node from the node features x (N, F) and the edges (2, E)."""
        raise NotImplementedError

    def forward(self, graph) -> torch.Tensor:
        return self.node_scores(graph.x, graph.edge_index)[graph.mask]  # (n, K), the split's nodes

    def log_mlflow_model(self, run_id, checkpoint, meta):
        # A graph's nodes are classified with the whole graph, not sample by sample: the pytorch flavour.
        return FamilyModule.log_mlflow_model(self, run_id, checkpoint, meta)

    def work_done(self, epochs: int) -> tuple[float, str]:
        return epochs * len(self.trainer.datamodule.splits["train"][1]), "training nodes"  # one full-graph step an epoch
