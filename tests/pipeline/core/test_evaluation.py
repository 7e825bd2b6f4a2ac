"""The evaluate stage's work by kind of family (pipeline.core.evaluation): each kind's test metrics
against an independent computation, the evaluation kept out of what trains, and each kind's
evaluation out of the other kinds' evaluate stages."""

from __future__ import annotations

import csv

import pytest
import torch

from pipeline import codedeps, data
from pipeline.core import evaluation
from pipeline.core.episodes import greedy_returns
from pipeline.core.evaluation import Context
from pipeline.core.evaluation import graph as graph_evaluation
from pipeline.core.evaluation import reinforcement as reinforcement_evaluation
from pipeline.config import DataConfig
from pipeline.params import available_families, family_class, load
from pipeline.prepare import prepare


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "ROOT", tmp_path)
    monkeypatch.setattr(data, "PREPARED", tmp_path / "prepared")
    config = DataConfig(split_seed=0, val_fraction=0.1, test_fraction=0.2)
    for dataset in ("karate", "sbm"):
        prepare(dataset, config, tmp_path / "prepared" / dataset)
    return tmp_path / "prepared"


def test_every_family_has_an_evaluation_of_its_kind():
    for family in available_families():
        assert family_class(family).EVALUATION in evaluation.KINDS, family
    assert evaluation.KINDS == ("embedding", "generative", "graph", "reinforcement", "supervised")


def test_a_model_of_no_kind_is_refused_by_name():
    with pytest.raises(TypeError, match=r"^Linear\.EVALUATION: None; a family subclasses one of the kinds"):
        evaluation.evaluate(torch.nn.Linear(1, 1), None)


def test_training_imports_no_evaluation_code():
    """Editing how a kind is evaluated reruns evaluate stages only, never a training."""
    entries = codedeps.stage_entries()
    for family in available_families():
        trained = codedeps.files_of(*entries[f"train/{family}"])
        assert not any(path == "pipeline/evaluate.py" or path.startswith("pipeline/core/evaluation/")
                       or path == "pipeline/core/scoring.py" for path in trained), family


def test_an_evaluate_stage_depends_on_its_own_kinds_evaluation_only():
    """The scorer's CNN (modules/cnn.py) and gymnasium's episodes belong to the generative and the
    reinforcement evaluations: editing them reruns those evaluate stages, not a supervised one's."""
    entries = codedeps.stage_entries()
    for family in available_families():
        kind = family_class(family).EVALUATION
        evaluated = set(codedeps.files_of(*entries[f"evaluate/{family}"]))
        assert f"pipeline/core/evaluation/{kind}.py" in evaluated, family
        assert ("pipeline/core/scoring.py" in evaluated) == (kind == "generative"), family
        assert ("pipeline/core/episodes.py" in evaluated) == (kind == "reinforcement"), family
        assert ("modules/cnn.py" in evaluated) == (kind == "generative" or family == "cnn"), family
        others = {f"pipeline/core/evaluation/{other}.py" for other in evaluation.KINDS} - {f"pipeline/core/evaluation/{kind}.py"}
        assert others & evaluated <= {"pipeline/core/evaluation/supervised.py"}, family  # the graph kind's builds on it


def test_return_buckets():
    assert [reinforcement_evaluation.return_bucket(v) for v in (0, 99.9, 100, 474, 475, 500)] == ["0-100", "0-100", "100-200", "400-475", "475+", "475+"]


def test_a_reinforcement_family_is_judged_by_greedy_test_episodes(tmp_path):
    from modules.dqn import DeepQNetwork

    experiment = load().experiments["dqn_cartpole"]
    torch.manual_seed(0)
    model = DeepQNetwork(data=data.DATASETS["cartpole"].spec, optimizer=experiment.optimizer,
                         scheduler=experiment.scheduler, **experiment.model).eval()
    context = Context(experiment, None, None, {}, tmp_path / "figures", tmp_path / "predictions.csv")
    context.figures.mkdir()
    results = evaluation.evaluate(model, context)
    again = evaluation.evaluate(model, context)
    assert results == again
    returns = greedy_returns(model.act_greedy, "CartPole-v1", [10_000 + i for i in range(reinforcement_evaluation.TEST_EPISODES)])
    assert results["test/mean_return"] == pytest.approx(float(returns.mean()))
    assert results["test/std_return"] == pytest.approx(float(returns.std()), abs=1e-5)
    assert results["test/min_return"] == float(returns.min()) and results["test/max_return"] == float(returns.max())
    rows = list(csv.DictReader(context.predictions.open()))
    assert len(rows) == reinforcement_evaluation.TEST_EPISODES and {row["actual"] for row in rows} == {"greedy policy"}
    assert (context.figures / "test_returns.png").exists()


def test_refits_are_seeded_and_the_evaluation_reports_their_mean_and_spread(prepared, monkeypatch, tmp_path):
    experiment = load().experiments["gcn_karate"]
    experiment = type(experiment)(**{**experiment.__dict__, "max_epochs": 30})
    assert graph_evaluation.refit_accuracy(experiment, 3) == graph_evaluation.refit_accuracy(experiment, 3)
    monkeypatch.setattr(graph_evaluation, "SEEDS", (0, 1, 2))
    model = graph_evaluation.refit(experiment, 0)
    x, y = data.load_split("karate", "test")
    context = Context(experiment, x, y, data.load_meta("karate"), tmp_path / "figures", tmp_path / "predictions.csv")
    context.figures.mkdir()
    results = evaluation.evaluate(model, context)
    accuracies = torch.tensor([graph_evaluation.refit_accuracy(experiment, seed) for seed in (0, 1, 2)])
    assert results["test/accuracy_mean"] == pytest.approx(float(accuracies.mean()), abs=1e-6)
    assert results["test/accuracy_std"] == pytest.approx(float(accuracies.std()), abs=1e-6)
    assert results["test/accuracy"] == pytest.approx(float(accuracies[0]), abs=1e-6)  # seed 0 is the model itself
    assert {"test/f1", "test/auroc", "test/ece"} <= set(results) and (context.figures / "confusion_matrix.png").exists()


def test_refit_keeps_the_best_epoch_when_the_experiment_says_so(prepared):
    from pipeline.config import EarlyStoppingConfig

    experiment = load().experiments["gcn_sbm"]
    best = type(experiment)(**{**experiment.__dict__, "max_epochs": 15, "checkpoint": "best",
                               "early_stopping": EarlyStoppingConfig("val/loss", "min", 0)})
    keep = graph_evaluation.KeepBest("val/loss", "min")
    values = [3.0, 1.0, 2.0]

    class Trainer:
        callback_metrics: dict = {}
        callbacks: list = []  # no weight averaging: the weights kept are the module's own

    module = torch.nn.Linear(1, 1)
    for value in values:
        Trainer.callback_metrics = {"val/loss": torch.tensor(value)}
        with torch.no_grad():
            module.weight.fill_(value)
        keep.on_validation_end(Trainer, module)
    assert keep.best == 1.0 and float(keep.state["weight"]) == 1.0
    assert graph_evaluation.refit(best, 0).training is False


def test_a_refit_accumulates_gradients_as_the_train_stage_does(prepared, monkeypatch):
    import dataclasses

    import lightning as L

    # One batch (the graph) an epoch, so Lightning steps every epoch, with the loss divided by the accumulation:
    # the re-fit trains the train stage's model only if it accumulates as params say.
    experiment = load().experiments["gcn_karate"]
    experiment = dataclasses.replace(experiment, max_epochs=4, trainer=dataclasses.replace(experiment.trainer,
                                                                                            accumulate_grad_batches=2))
    built = []

    class Recording(L.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(graph_evaluation.L, "Trainer", Recording)
    graph_evaluation.refit(experiment, 0)
    assert [trainer.accumulate_grad_batches for trainer in built] == [2]
