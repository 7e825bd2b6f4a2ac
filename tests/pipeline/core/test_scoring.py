"""Scoring generated images (pipeline.core.scoring) with the project's own scorer (pipeline.scorer):
the class histogram's KL against scipy, FID and KID against torchmetrics-independent computations of
what they must show, and the scorer stage's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import linalg, stats

from pipeline import baselines, data, files, scorer
from pipeline.core import scoring
from pipeline.params import ConfigError, load
from pipeline.prepare import prepare


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Prepared digits and the scorer stage's output in a temporary folder."""
    root = tmp_path_factory.mktemp("scoring")
    prepared, scorers = root / "prepared", root / "scorers"
    prepare("digits", load().data, prepared / "digits")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "PREPARED", prepared)
        patch.setattr(scorer, "SCORERS", scorers)
        patch.setattr(files, "ROOT", root)  # a stage writes only under the project's own folders
        assert scorer.main([]) == 0
    return prepared, scorers


@pytest.fixture
def digits(scored, monkeypatch):
    prepared, scorers = scored
    monkeypatch.setattr(data, "PREPARED", prepared)
    monkeypatch.setattr(scoring, "SCORERS", scorers)
    return data.load_split("digits", "train")[0], data.load_split("digits", "test")[0]


def test_class_kl_from_uniform_matches_scipy():
    classes = torch.tensor([0, 0, 0, 1, 2, 2, 5, 9, 9, 9, 9])
    p = np.bincount(classes.numpy(), minlength=10) / len(classes)
    assert scoring.class_kl_from_uniform(classes, 10) == pytest.approx(stats.entropy(p, np.full(10, 0.1)))
    assert scoring.class_kl_from_uniform(torch.arange(10).repeat(3), 10) == pytest.approx(0.0, abs=1e-12)
    assert scoring.class_kl_from_uniform(torch.zeros(7, dtype=torch.long), 10) == pytest.approx(np.log(10))


def test_scorer_stage_writes_weights_and_its_test_accuracy(scored):
    _, scorers = scored
    facts = json.loads((scorers / "digits.json").read_text())
    assert facts["test/accuracy"] > 0.95 and facts["features"] == 64
    assert (scorers / "digits.pt").exists() and not (scorers.parent / ".scorers.partial").exists()


def test_fid_is_the_frechet_distance_of_the_scorer_features(digits):
    train, test = digits
    network = scoring.load_scorer("digits")
    features = scoring.Features(network)
    samples = train[: len(test)]
    scores = scoring.sample_scores(samples, test, network)
    with torch.no_grad():
        a, b = features(test).double().numpy(), features(samples).double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert scores["fid"] == pytest.approx(expected, rel=1e-3)
    assert features(test[:5]).shape == (5, features.num_features)


def test_real_images_score_far_better_than_noise(digits):
    train, test = digits
    network = scoring.load_scorer("digits")
    real = scoring.sample_scores(train[: len(test)], test, network)
    noise = scoring.sample_scores(torch.randn_like(test), test, network)
    assert real["classes_covered"] == 10 and real["class_kl"] < 0.05
    assert real["fid"] < 5 < 10 * real["fid"] < noise["fid"]
    assert real["kid"] < noise["kid"]
    with pytest.raises(ValueError, match="numbers must match"):
        scoring.sample_scores(test[:10], test, network)


def test_reference_rows_put_the_gaussian_between_the_floor_and_noise(digits):
    floor, gaussian = baselines.generative_rows("digits")
    assert (floor["name"], gaussian["name"]) == ("train_images", "gaussian_pixels")
    assert floor["test/fid"] < gaussian["test/fid"]
    assert baselines.generative_rows("digits") == [floor, gaussian]  # seeded: the same rows each time


def test_missing_scorer_names_the_stage_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(scoring, "SCORERS", tmp_path / "scorers")
    with pytest.raises(ConfigError, match=r"scorers/digits.pt: missing; run `dvc repro scorer`"):
        scoring.load_scorer("digits")


def test_the_scorer_trains_on_the_image_datasets_prepare_makes():
    from pipeline.scorer import image_datasets

    assert image_datasets([]) == ["digits"]  # embedded only: nothing opted in is prepared
    assert image_datasets(["cora", "mnist"]) == ["digits", "mnist"]
    assert image_datasets(["cifar10", "fashion_mnist", "mnist"]) == ["cifar10", "digits", "fashion_mnist", "mnist"]
