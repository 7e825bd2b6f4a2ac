"""The MLflow UI, as the README tells a user to open it, in headless Chromium against a real `mlflow server` on a
store the project created: the experiments page lists the project's experiment alone, and the README's address
of the experiment shows its runs table with the run in it. MLflow 3 opens an experiment in its GenAI view
(traces, no runs) unless the address asks for the machine-learning view; the plain address is checked too, so
that the day MLflow changes this the README's address can be simplified."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, browser, running_mlflow_server

pytestmark = pytest.mark.slow

README_ADDRESS = re.compile(r"http://127\.0\.0\.1:5000/(#/experiments/(\d+)\?workflowType=machine_learning)")


def rendered(url: str, profile: Path) -> str:
    """The page's DOM once the React app has fetched and drawn it (virtual time runs while it waits)."""
    result = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0 and "<body" in result.stdout, result.stderr[-2000:]
    return result.stdout


def test_the_readme_address_opens_the_experiment_on_its_runs(tmp_path, monkeypatch):
    from pipeline.core import tracking
    from pipeline.params import load

    browser()
    found = README_ADDRESS.search((ROOT / "README.md").read_text())
    assert found, "the README gives no address of the experiment's runs"
    fragment, number = found.groups()
    root = tmp_path / "server"
    root.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'store.db'}")  # the server's store (conftest)
    config = load(family_checks=False)
    run_id = tracking.start_run(config.tracking_experiment, config.experiments["cnn_digits"], 6)
    client = tracking.client()
    assert client.get_run(run_id).info.experiment_id == number  # the number the README gives, in a new store
    client.log_metric(run_id, "val/loss", 0.5, step=0)

    with running_mlflow_server(root, "--workers", "1") as address:
        listed = rendered(f"http://{address}/#/experiments", tmp_path / "profile-list")
        assert f'href="#/experiments/{number}"' in listed and config.tracking_experiment in listed
        assert re.findall(r'href="#/experiments/(\d+)"', listed) == [number]  # no Default beside it
        runs = rendered(f"http://{address}/{fragment}", tmp_path / "profile-runs")
        assert ">cnn_digits<" in runs
        plain = rendered(f"http://{address}/#/experiments/{number}", tmp_path / "profile-plain")
        assert ">cnn_digits<" not in plain and "workflowType=genai" in plain
