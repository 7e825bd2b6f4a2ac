"""Concurrency through DVC's own queue: `dvc exp run --queue` four times, `dvc queue start -j 2`.
A file of its own (not in tests/test_pipeline_e2e.py) so that pytest-xdist runs it beside that file."""

from __future__ import annotations

import pytest

from conftest import dvc, git_init, run

pytestmark = pytest.mark.slow

QUEUED = ("linear_diabetes", "logistic_breast_cancer", "softmax_digits", "lstm_ar_series")


@pytest.fixture(scope="module")
def queue_project(tmp_path_factory):
    """A git copy of the project on the shrunk QUEUED experiments, reproduced and committed, so that
    each queued experiment reruns only its own stages and the report."""
    from conftest import copy_project, shrink_params

    project = copy_project(tmp_path_factory.mktemp("queue") / "project")
    shrink_params(project / "params.yaml", keep=QUEUED)
    git_init(project)
    dvc("repro", cwd=project)
    run(["git", "add", "-A"], cwd=project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "reproduced"], cwd=project)
    return project


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_four_queued_dvc_experiments_run_two_at_a_time_into_one_store(queue_project, store, request):
    """Concurrency through DVC: four queued experiments, two workers, each in its own temporary copy,
    all logging into the repository's SQLite store, or into a real `mlflow server`: every run
    complete, one MLflow experiment."""
    import time

    from mlflow import MlflowClient

    project = queue_project
    extra_env, uri = {}, f"sqlite:///{project / 'mlflow.db'}"  # the queued copies log to the repository's store
    if store == "server":
        uri = request.getfixturevalue("mlflow_server")
        extra_env = {"MLFLOW_TRACKING_URI": uri}
    epochs = {"sqlite": 4, "server": 5}[store]  # new values: no queued experiment is a cached one
    queued = list(QUEUED)
    names = [f"{store}-{name.replace('_', '-')}" for name in queued]
    for name, exp_name in zip(queued, names):
        dvc("exp", "run", "--queue", "--name", exp_name, "-S", f"experiments.{name}.max_epochs={epochs}", cwd=project)
    dvc("queue", "start", "-j", "2", cwd=project, extra_env=extra_env)
    deadline = time.monotonic() + 900
    while True:  # the workers stop by themselves once the queue is empty
        status = dvc("queue", "status", cwd=project).stdout
        ours = [line for line in status.splitlines() if any(n in line for n in names)]
        if len(ours) == len(names) and not any(w in line for line in ours for w in ("Queued", "Running")):
            break
        if time.monotonic() > deadline:
            # (a stop request waits in DVC's broker for the next workers: send it only when giving up)
            dvc("queue", "stop", "--kill", cwd=project, check=False)
            raise AssertionError(f"queued experiments still running after 900 s:\n{status}")
        time.sleep(2)
    assert all("Success" in line for line in ours), status

    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "mathematical-engineering-of-deep-learning"]
    runs = client.search_runs([experiment.experiment_id], f"tags.`dvc.exp_name` LIKE '{store}-%'")
    assert sorted(r.data.tags["experiment"] for r in runs) == sorted(queued)
    for run_ in runs:
        assert run_.info.status == "FINISHED"
        assert run_.data.params["max_epochs"] == str(epochs)
        assert len(client.get_metric_history(run_.info.run_id, "val/loss")) == epochs
        assert any(key.startswith("test/") for key in run_.data.metrics)  # evaluate logged into the same run
        assert {a.path for a in client.list_artifacts(run_.info.run_id)} >= {"checkpoint", "config.json", "figures"}
