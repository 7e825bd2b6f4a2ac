"""Sweeps: runs tagged with params.yaml's tracking.sweep, collected from a real SQLite MLflow store by
`python -m pipeline.sweep NAME` into configurations with each test metric's mean and standard
deviation over seeds (checked against numpy), and the report's table of them."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from pipeline import report, sweep
from pipeline.core import tracking
from pipeline.params import ConfigError, load_experiment

# (learning rate, seed) -> test accuracy, test F1 logged for that run
RESULTS = {
    (1e-3, 0): (0.95, 0.94), (1e-3, 1): (0.97, 0.96), (1e-3, 2): (0.96, 0.95),
    (3e-3, 0): (0.90, 0.89), (3e-3, 1): (0.92, 0.93),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A SQLite store holding the runs of RESULTS, made once for this file's tests."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        _train_runs()
    return tmp_path


@pytest.fixture
def store(runs, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{runs / 'mlflow.db'}")
    monkeypatch.setattr(sweep, "SWEEPS", runs / "sweeps")
    return runs


def _train_runs():
    config, experiment = load_experiment("mlp_digits")
    client = tracking.client()

    def train(lr, seed, metrics, name="grid"):
        config_ = dataclasses.replace(
            experiment, seed=seed, optimizer=dataclasses.replace(experiment.optimizer, lr=lr)
        )
        run_id = tracking.start_run(config.tracking_experiment, config_, 5, sweep=name)
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        time.sleep(0.01)  # distinct start times: the latest of two equal runs is the one kept
        return run_id

    train(1e-3, 0, {"test/accuracy": 0.10, "test/f1": 0.10})  # superseded by the rerun below
    for (lr, seed), (accuracy, f1) in RESULTS.items():
        train(lr, seed, {"test/accuracy": accuracy, "test/f1": f1})
    train(1e-2, 0, {"val/loss": 1.0})  # trained, not yet evaluated: left out
    train(1e-3, 0, {"test/accuracy": 0.0}, name="other")  # another sweep


def test_a_sweep_is_its_configurations_with_mean_and_std_over_seeds(store, capsys):
    assert sweep.main(["grid"]) == 0
    found = json.loads((store / "sweeps" / "grid.json").read_text())
    assert found["sweep"] == "grid"
    [(name, mlp)] = found["experiments"].items()
    assert name == "mlp_digits"
    assert mlp["axes"] == ["optimizer.lr"]  # the seed varies too, but it is what is averaged over
    assert mlp["incomplete"] == 1
    by_lr = {float(c["params"]["optimizer.lr"]): c for c in mlp["configurations"]}
    assert sorted(by_lr) == [1e-3, 3e-3]
    for lr, configuration in by_lr.items():
        seeds = sorted(seed for (lr_, seed) in RESULTS if lr_ == lr)
        assert configuration["seeds"] == [str(seed) for seed in seeds]
        for index, metric in enumerate(("test/accuracy", "test/f1")):
            values = np.array([RESULTS[(lr, seed)][index] for seed in seeds])
            summary = configuration["metrics"][metric]
            assert summary["n"] == len(seeds)
            assert summary["mean"] == pytest.approx(values.mean())
            assert summary["std"] == pytest.approx(values.std(ddof=1))
    assert "mlp_digits: 5 run(s) in 2 configuration(s), varying optimizer.lr" in capsys.readouterr().out

    lines = report.sweep_section(store / "sweeps")
    assert "### Sweep `grid`: mlp_digits" in lines
    assert "| optimizer.lr | seeds | test/accuracy | test/f1 |" in lines
    low = np.array([RESULTS[(1e-3, seed)][0] for seed in range(3)])
    row = next(line for line in lines if line.startswith("| 0.001 |"))
    assert row.startswith(f"| 0.001 | 0, 1, 2 | {low.mean():.4f} ± {low.std(ddof=1):.4f} |")


def test_a_lone_seed_has_no_std_and_the_table_shows_its_value(store):
    sweep.main(["other"])
    [configuration] = json.loads((store / "sweeps" / "other.json").read_text())["experiments"]["mlp_digits"]["configurations"]
    assert configuration["metrics"]["test/accuracy"] == {"mean": 0.0, "std": None, "n": 1}
    assert "| none | 0 | 0.0000 |" not in report.sweep_section(store / "sweeps")  # no axis column at all
    assert "| 0 | 0.0000 |" in report.sweep_section(store / "sweeps")


def test_an_unknown_sweep_names_the_ones_there(store):
    with pytest.raises(ConfigError, match=r"^sweep 'nope': no run in MLflow experiment .* has the tag sweep=nope; "
                                          r"sweeps there: grid, other$"):
        sweep.main(["nope"])
    assert not (store / "sweeps" / "nope.json").exists()


def test_a_bad_sweep_name_is_a_one_line_error(store):
    with pytest.raises(ConfigError, match=r"^sweep name: 'a/b' is not a sweep name; allowed: "):
        sweep.main(["a/b"])


def test_no_sweep_folder_no_section(tmp_path):
    assert report.sweep_section(tmp_path / "missing") == []


def test_the_html_report_shows_the_same_sweep_table(store):
    from pipeline import html_report

    sweep.main(["grid"])
    page = "\n".join(html_report._sweeps(report.sweep_tables(store / "sweeps")))
    assert '<h3 id="sweep-grid-mlp_digits">Sweep <code>grid</code>: mlp_digits</h3>' in page
    low = np.array([RESULTS[(1e-3, seed)][0] for seed in range(3)])
    assert f"<tr><td>0.001</td><td>0, 1, 2</td><td>{low.mean():.4f} ± {low.std(ddof=1):.4f}</td>" in page


def test_the_best_configurations_version_gets_the_alias(store, capsys):
    """Each run registered as a version of mlp_digits, as trainings register theirs: the alias `best`
    goes to the version of the best seed of the configuration with the best mean accuracy (lr 1e-3)."""
    client = tracking.client()
    experiment = client.get_experiment_by_name(load_experiment("mlp_digits")[0].tracking_experiment)
    runs = sweep._runs(client, experiment.experiment_id, "grid")
    if not client.search_registered_models("name = 'mlp_digits'"):
        client.create_registered_model("mlp_digits")
        for run in sorted(runs, key=lambda r: r.info.start_time):
            client.create_model_version("mlp_digits", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    assert sweep.main(["grid"]) == 0
    accuracy = {run.info.run_id: run.data.metrics.get("test/accuracy") for run in runs}
    best_seed = next(run_id for run_id, value in accuracy.items() if value == RESULTS[(1e-3, 1)][0])
    version = client.get_model_version_by_alias("mlp_digits", sweep.ALIAS)
    assert version.run_id == best_seed
    assert f"mlp_digits: models:/mlp_digits@best is version {version.version} (run {best_seed}, test/accuracy mean" in capsys.readouterr().out


def test_a_run_without_a_registered_version_gets_no_alias(store, capsys):
    assert sweep.main(["other"]) == 0  # its one run is never registered (runs made before models were logged)
    assert "has no registered model version" in capsys.readouterr().out
