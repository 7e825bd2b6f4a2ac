"""N-way one-shot episodes (pipeline.core.oneshot), the one-shot digits split, its pixel-space reference
against scikit-learn's 1-nearest-neighbour classifier, and the embedding kind's evaluation."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from pipeline import data
from pipeline.config import DataConfig
from pipeline.core import evaluation, oneshot
from pipeline.core.evaluation import Context
from pipeline.datasets import digits_oneshot
from pipeline.params import load
from pipeline.prepare import prepare
from pipeline.references import digits_oneshot as reference

DATASET = "digits_oneshot"


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "ROOT", tmp_path)
    monkeypatch.setattr(data, "PREPARED", tmp_path / "prepared")
    prepare(DATASET, DataConfig(split_seed=0, val_fraction=0.1, test_fraction=0.2), tmp_path / "prepared" / DATASET)
    return DATASET


def labels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 12, size=200)  # 7 classes


@pytest.mark.parametrize("ways", [2, 5, 7])
def test_an_episode_has_one_support_per_class_and_a_query_of_one_of_them(ways):
    y = labels()
    support, query, answer = oneshot.draw_episodes(y, ways, 300, seed=1)
    assert support.shape == (300, ways) and query.shape == answer.shape == (300,)
    for e in range(300):
        assert len(set(y[support[e]])) == ways  # N distinct classes, one image each
        assert y[query[e]] == y[support[e, answer[e]]] and query[e] != support[e, answer[e]]
        assert y[query[e]] not in np.delete(y[support[e]], answer[e])
    assert set(answer.tolist()) == set(range(ways))  # the query's class sits in every column
    assert len(set(map(tuple, support[:, :].tolist()))) > 250  # drawn afresh each episode


def test_episodes_are_fixed_by_their_seed():
    y = labels()
    first, again, other = (oneshot.draw_episodes(y, 5, 100, seed) for seed in (3, 3, 4))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_ways_beyond_the_classes_are_refused():
    with pytest.raises(ValueError, match=r"^ways: must be between 2 and the 7 classes of the split, got 8$"):
        oneshot.draw_episodes(labels(), 8, 10, seed=0)


def test_nearest_support_equals_scikit_learns_one_nearest_neighbour_per_episode():
    y = labels()
    z = torch.randn(len(y), 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    support, query, answer = oneshot.draw_episodes(y, 5, 200, seed=2)
    predicted = oneshot.nearest_support(z, support, query)
    for e in range(200):
        knn = KNeighborsClassifier(1).fit(z[support[e]].numpy(), np.arange(5))
        assert predicted[e] == knn.predict(z[query[e], None].numpy())[0]
    metrics, actual, chosen = oneshot.oneshot_metrics(z, y, {"ways": 5, "episodes": 200, "seed": 2})
    accuracy = float((predicted.numpy() == answer).mean())
    assert metrics["test/oneshot_accuracy"] == pytest.approx(accuracy)
    assert metrics["test/oneshot_accuracy_stderr"] == pytest.approx(np.sqrt(accuracy * (1 - accuracy) / 200), abs=1e-6)
    assert np.array_equal(actual, y[query]) and float((actual == chosen).mean()) == pytest.approx(accuracy)


def test_the_test_classes_are_unseen_in_training_and_standardized_with_training_statistics(prepared):
    from sklearn.datasets import load_digits

    splits = {name: data.load_split(DATASET, name) for name in ("train", "val", "test")}
    assert set(splits["train"][1].tolist()) == set(splits["val"][1].tolist()) == set(digits_oneshot.SEEN_CLASSES)
    assert set(splits["test"][1].tolist()) == set(digits_oneshot.UNSEEN_CLASSES)
    assert len(splits["test"][1]) == int(np.isin(load_digits().target, digits_oneshot.UNSEEN_CLASSES).sum())
    x_train = splits["train"][0]
    assert x_train.shape[1:] == (1, 8, 8)
    assert float(x_train.mean()) == pytest.approx(0.0, abs=1e-5) and float(x_train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert data.load_meta(DATASET)["oneshot"] == digits_oneshot.ONESHOT


def test_the_pixel_reference_is_scikit_learns_one_nearest_neighbour_on_the_same_episodes(prepared):
    (row,) = reference.reference_rows(DATASET)
    assert row["name"] == "pixel_1nn"
    protocol = digits_oneshot.ONESHOT
    for split, metric in (("test", "test/oneshot_accuracy"), ("val", "test/seen_classes_oneshot_accuracy")):
        x, y = data.load_split(DATASET, split)
        pixels = x.flatten(1).numpy()
        support, query, answer = oneshot.draw_episodes(y.numpy(), protocol["ways"], protocol["episodes"], protocol["seed"])
        correct = [KNeighborsClassifier(1).fit(pixels[support[e]], np.arange(protocol["ways"])).predict(pixels[query[e], None])[0]
                   == answer[e] for e in range(protocol["episodes"])]
        assert row[metric] == pytest.approx(np.mean(correct), abs=1e-6), split


def test_the_embedding_evaluation_scores_the_models_embeddings_on_the_same_episodes(prepared, tmp_path):
    from modules.siamese import SiameseNetwork

    experiment = load().experiments["siamese_digits"]
    torch.manual_seed(0)
    model = SiameseNetwork(data=data.DATASETS[DATASET].spec, optimizer=experiment.optimizer,
                           scheduler=experiment.scheduler, **experiment.model).eval()
    x, y = data.load_split(DATASET, "test")
    context = Context(experiment, x, y, data.load_meta(DATASET), tmp_path / "figures", tmp_path / "predictions.csv")
    context.figures.mkdir()
    results = evaluation.evaluate(model, context)
    x_val, y_val = data.load_split(DATASET, "val")
    with torch.no_grad():
        expected, actual, predicted = oneshot.oneshot_metrics(model.embed(x), y.numpy(), digits_oneshot.ONESHOT)
        seen = oneshot.oneshot_metrics(model.embed(x_val), y_val.numpy(), digits_oneshot.ONESHOT, "test/seen_classes_oneshot_accuracy")[0]
    assert results == {**expected, **seen} and set(seen) == {"test/seen_classes_oneshot_accuracy", "test/seen_classes_oneshot_accuracy_stderr"}
    rows = list(csv.DictReader(context.predictions.open()))
    assert [(int(r["actual"]), int(r["predicted"])) for r in rows] == list(zip(actual.tolist(), predicted.tolist()))
    assert (context.figures / "oneshot_confusion_matrix.png").exists()
