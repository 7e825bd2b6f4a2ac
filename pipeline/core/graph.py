"""What the graph families share (graph neural networks, ch. 8): node classification on one graph,
trained full batch, semi-supervised.

A batch is (graph, y): the whole graph (a PyTorch Geometric `Data` with x (N, F), edge_index (2, E)
and the split's node `mask` (N,)) and the labels y (n,) of the n masked nodes (pipeline.data). The
network computes the scores of every node, since each needs its neighbours, and `forward` keeps the
masked nodes' rows, so SupervisedModule's loss, validation metrics, early stopping, checkpoints and
test metrics apply unchanged, to the labelled nodes in training and to the unlabelled ones in test.

A family subclasses `GraphModule` and writes `node_scores(x, edge_index)` -> (N, K).

The evaluate stage also re-fits the experiment's own config with seeds 0-9 (the graphs are small:
a fit takes about a second) and reports the mean and standard deviation of their test accuracy,
test/accuracy_mean and test/accuracy_std: one seed's accuracy on a few labelled nodes varies a lot.
"""

from __future__ import annotations

import copy
import logging

import torch
from lightning.pytorch.callbacks import Callback

from pipeline.core.supervised import SupervisedModule

SEEDS = tuple(range(10))  # the re-fits behind test/accuracy_mean and test/accuracy_std


class GraphModule(SupervisedModule):
    """Scores of the masked nodes of one graph; the graph's split is its node mask."""

    TASKS = ("multiclass",)
    GRAPH_INPUT = True
    CHAPTER = 8

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

    def work_done(self, epochs: int) -> tuple[float, str]:
        return epochs * len(self.trainer.datamodule.splits["train"][1]), "training nodes"  # one full-graph step an epoch

    def evaluate(self, context) -> dict[str, float] | None:
        from pipeline.evaluate import evaluate_supervised

        results = evaluate_supervised(self, context)
        accuracies = torch.tensor([refit_accuracy(context.experiment, seed) for seed in SEEDS])
        results["test/accuracy_mean"] = round(float(accuracies.mean()), 6)
        results["test/accuracy_std"] = round(float(accuracies.std()), 6)  # over the seeds (n - 1)
        return dict(sorted(results.items()))


class KeepBest(Callback):
    """Keeps, in memory, the weights of the best epoch by `monitor` (the first, on ties), as the train
    stage's best checkpoint does."""

    def __init__(self, monitor: str, mode: str):
        self.monitor, self.mode = monitor, mode
        self.best, self.state = None, None

    def on_validation_end(self, trainer, module) -> None:
        value = float(trainer.callback_metrics[self.monitor])
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.state = value, copy.deepcopy(module.state_dict())


def refit(experiment, seed: int) -> GraphModule:
    """The experiment's config trained again from scratch with `seed` (initialization, dropout): its
    optimizer, schedule, epochs, early stopping and choice of weights (best or last), no logging."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    from pipeline import data
    from pipeline.params import family_class

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # ten fits' device banners are noise
    L.seed_everything(seed, verbose=False)
    model = family_class(experiment.family)(
        data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
        scheduler=experiment.scheduler, **experiment.model,
    )
    stopping = experiment.early_stopping
    best = KeepBest(stopping.monitor, stopping.mode)
    callbacks = [best] + ([EarlyStopping(stopping.monitor, mode=stopping.mode, patience=stopping.patience)]
                          if stopping.patience else [])
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=experiment.max_epochs, precision=experiment.trainer.precision,
        gradient_clip_val=experiment.trainer.gradient_clip_val or None, deterministic=experiment.trainer.deterministic,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=callbacks,
    )
    trainer.fit(model, datamodule=data.make_datamodule(experiment.dataset, experiment.batch_size, seed))
    if experiment.checkpoint == "best":
        model.load_state_dict(best.state)
    return model.eval()


def refit_accuracy(experiment, seed: int) -> float:
    """Test accuracy (on the unlabelled nodes) of the experiment re-fitted with `seed`."""
    from pipeline import data

    model = refit(experiment, seed)
    graph, y = data.load_split(experiment.dataset, "test")
    with torch.no_grad():
        return float((model(graph).argmax(dim=-1) == y).float().mean())
