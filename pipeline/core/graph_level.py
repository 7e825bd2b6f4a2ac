"""What the graph-level families share (graph neural networks, ch. 8): one label per whole graph, learned
from many small graphs in mini-batches.

A batch is (graphs, y): a PyTorch Geometric `Batch` of B graphs (x (ΣN, F), edge_index (2, ΣE) with each
graph's node numbers offset so the graphs stay apart, and `batch` (ΣN,): the graph of each node) and
their labels y (B,) (pipeline.datamodules.GraphsDataModule). The family computes one row of class scores
per graph, so SupervisedModule's loss, validation metrics, early stopping, checkpoints and its test
metrics (pipeline.core.evaluation.supervised: the whole test split is one Batch) apply unchanged.

A family subclasses `GraphLevelModule` and writes `graph_scores(x, edge_index, batch, num_graphs)` -> (B, K).
"""

from __future__ import annotations

import torch

from pipeline.core.family import FamilyModule
from pipeline.core.supervised import SupervisedModule


class GraphLevelModule(SupervisedModule):
    """Scores of whole graphs, a mini-batch of graphs a step."""

    TASKS = ("multiclass",)
    DATA_KIND = "graphs"
    CHAPTER = 8

    @classmethod
    def check_experiment(cls, experiment) -> None:
        # The supervised evaluation shares out test samples by indexing them, which a Batch of graphs
        # does not support; one process trains these small graphs in seconds.
        for key in ("devices", "num_nodes"):
            if getattr(experiment.trainer, key) != 1:
                raise ValueError(f"trainer.{key}: graph-level families train and evaluate in one process; set it to 1")

    def graph_scores(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """Scores (B, K) of each of the B graphs, from node features x (ΣN, F), edges (2, ΣE) and each
        node's graph `batch` (ΣN,)."""
        raise NotImplementedError

    def forward(self, graphs) -> torch.Tensor:
        return self.graph_scores(graphs.x, graphs.edge_index, graphs.batch, graphs.num_graphs)  # (B, K)

    def log_mlflow_model(self, run_id, checkpoint, meta):
        # Its inputs are graphs, not rows of raw features: the pytorch flavour.
        return FamilyModule.log_mlflow_model(self, run_id, checkpoint, meta)

    def work_done(self, epochs: int) -> tuple[float, str]:
        return epochs * len(self.trainer.datamodule.splits["train"]), "training graphs"
