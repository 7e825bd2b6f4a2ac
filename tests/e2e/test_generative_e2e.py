"""The real `dvc repro` of every generative experiment of params.yaml at toy size, in a throw-away
copy of the project: the scorer stage, each experiment's sample scores and plots, the report's
generative section with its reference rows and sample grids, the sample grid in the MLflow run."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import copy_project, dvc, git_init, shrink_params

from pipeline.core.generative import GenerativeModule
from pipeline.params import family_class, load

pytestmark = pytest.mark.slow

GENERATIVE = tuple(name for name, e in load().experiments.items() if issubclass(family_class(e.family), GenerativeModule))
# One experiment per family through the real stages (tests/e2e/test_experiments.py trains every one in-process).
E2E = tuple({load().experiments[name].family: name for name in reversed(GENERATIVE)}.values())
SAMPLE_KEYS = {"test/fid", "test/kid", "test/classes_covered", "test/class_kl"}


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("generative") / "project")
    params = shrink_params(project / "params.yaml", keep=E2E)
    git_init(project)
    result = dvc("repro", cwd=project)
    return project, params, result


def test_params_yaml_has_the_generative_experiments():
    assert {"linear_ae_digits", "ae_digits", "denoising_ae_digits", "vae_digits", "gan_digits", "ddpm_digits"} <= set(GENERATIVE)
    assert sorted(E2E) == ["ddpm_digits", "gan_digits", "linear_ae_digits", "vae_digits"]


def test_every_generative_experiment_scores_its_samples(repro):
    project, params, _ = repro
    test_size = json.loads((project / "data" / "prepared" / "digits" / "meta.json").read_text())["sizes"]["test"]
    for name in params["experiments"]:
        metrics = json.loads((project / "metrics" / f"{name}.json").read_text())
        assert SAMPLE_KEYS <= set(metrics), name
        assert metrics["test/fid"] > 0 and 1 <= metrics["test/classes_covered"] <= 10
        with (project / "plots" / "predictions" / f"{name}.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == test_size and {row["actual"] for row in rows} == {"generated"}
        assert {int(row["predicted"]) for row in rows} <= set(range(10))
        assert (project / "plots" / "figures" / name / "samples.png").stat().st_size > 0
    ae = json.loads((project / "metrics" / "linear_ae_digits.json").read_text())
    assert ae["test/mse_over_pca"] == pytest.approx(ae["test/mse"] / ae["test/pca_mse"], rel=1e-4)
    assert "test/neg_elbo" in json.loads((project / "metrics" / "vae_digits.json").read_text())


def test_report_has_the_generative_table_reference_rows_and_grids(repro):
    project, params, _ = repro
    report = (project / "reports" / "comparison.md").read_text()
    assert "## Generative models" in report
    for row in ("| train_images | baseline |", "| gaussian_pixels | baseline |"):
        assert row in report
    for name in params["experiments"]:
        assert f"| {name} | model |" in report
        assert f"![{name} samples](../plots/figures/{name}/samples.png)" in report
    assert (project / "reports" / "generative.png").stat().st_size > 0
    assert json.loads((project / "scorers" / "digits.json").read_text())["test/accuracy"] > 0.95


def test_the_mlflow_run_holds_the_sample_grid_and_scores(repro):
    from mlflow import MlflowClient

    project, params, _ = repro
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for name in params["experiments"]:
        run_id = json.loads((project / "runs" / f"{name}.json").read_text())["mlflow_run_id"]
        run = client.get_run(run_id)
        assert SAMPLE_KEYS <= set(run.data.metrics), name
        assert run.data.tags["book.chapter"] in ("3", "8")
        assert "figures/samples.png" in [a.path for a in client.list_artifacts(run_id, "figures")]
