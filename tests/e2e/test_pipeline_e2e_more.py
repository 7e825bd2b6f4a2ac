"""tests/e2e/test_pipeline_e2e.py's checks on the other half of conftest.E2E_EXPERIMENTS, with a `dvc repro`
of its own: a file of its own so that pytest-xdist runs the two repros at once. Then DVC's own
experiment commands and its queue on this half."""

from __future__ import annotations

import json
import re

import pytest
from conftest import dvc, python, run
from test_pipeline_e2e import (  # noqa: F401  (collected here too, on this file's `repro`)
    clean_repro,
    test_each_stage_imported_only_files_of_its_derived_code_dependencies,
    test_every_model_is_rebuilt_by_load_from_checkpoint_alone_in_a_fresh_process,
    test_metrics_files_have_the_task_keys,
    test_mlflow_holds_one_complete_run_per_experiment,
    test_repro_runs_every_stage_in_order,
    test_stages_print_progress_and_a_summary_line_only,
    test_the_run_summarys_throughput_is_the_fits_work_over_its_seconds,
    test_tracking_credentials_never_reach_the_store_the_outputs_or_the_logs,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    """One full `dvc repro` of the second half, shared by the tests of this file."""
    from conftest import E2E_HALVES

    return clean_repro(tmp_path_factory.mktemp("e2e-more") / "project", experiments=E2E_HALVES[1])


def test_report_has_a_row_per_experiment(repro):
    project, params, _ = repro
    report = (project / "reports" / "comparison.md").read_text()
    for name in params["experiments"]:
        assert f"| {name} | model |" in report
    assert (project / "reports" / "comparison.png").stat().st_size > 1000


def test_dvc_experiment_commands_work_on_our_params_metrics_and_plots(repro):
    project, params, _ = repro
    dvc("exp", "run", "-S", "experiments.gcn_sbm.max_epochs=3", cwd=project)
    shown = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    workspace = next(row for row in shown if row["rev"] == "workspace")
    # params.yaml is dvc.yaml's top-level params file: no stage names params, yet every param is shown
    assert workspace["data"]["params"]["params.yaml"]["data"]["experiments"]["gcn_sbm"]["max_epochs"] == 3
    changed = json.loads(dvc("params", "diff", "--json", cwd=project).stdout)
    assert changed["params.yaml"]["experiments.gcn_sbm.max_epochs"]["new"] == 3, changed
    metrics = json.loads(dvc("metrics", "show", "--json", cwd=project).stdout)
    assert "metrics/dqn_cartpole.json" in json.dumps(metrics)
    diff = dvc("metrics", "diff", "HEAD", "--json", cwd=project)
    assert json.loads(diff.stdout) is not None
    plots = dvc("plots", "show", "--json", cwd=project)
    rendered = json.loads(plots.stdout)
    assert "errors" not in rendered, rendered.get("errors")
    for name in params["experiments"]:
        for kind in ("learning_curves", "validation", "predictions"):
            assert f"plots/{kind}/{name}.csv" in rendered["data"]
        assert f"plots/figures/{name}/learning_curve.png" in rendered["data"]
    html = dvc("plots", "show", "-o", "dvc_plots", cwd=project)
    assert (project / "dvc_plots" / "index.html").exists(), html.stdout
    assert "dvc_plots" not in run(["git", "status", "--porcelain"], cwd=project).stdout  # ignored, never committed
    # DVC's page loads Vega from a CDN: the README says so, naming the host
    hosts = set(re.findall(r'<script src="https://([^/"]+)/', (project / "dvc_plots" / "index.html").read_text()))
    assert hosts and all(host in (project / "README.md").read_text() for host in hosts), hosts


SWEPT, SEEDS = "gcn_sbm", (1, 2)  # last in this file: it commits the workspace


def test_a_queued_sweep_runs_two_at_a_time_into_the_store_and_the_report(repro):
    """A sweep as the README runs it: a grid of `-S` values queued with `dvc exp run --queue` (here
    over seeds), `dvc queue start -j 2` running two at a time, each in its own temporary copy, both
    logging into the repository's SQLite store (the default store is an absolute path, so the queue's
    copies log into it) with the sweep's tag; every run complete and evaluated. Then
    `python -m pipeline.sweep` and `dvc repro`, which reruns only the report, now with the sweep's
    mean and standard deviation over the seeds (checked against the runs' own metrics). Concurrent
    writers to a real `mlflow server` are tests/e2e/test_concurrency.py's."""
    import statistics
    import time

    from mlflow import MlflowClient

    project, _, _ = repro
    # The queue copies the committed workspace: commit the reproduced state, so that each queued
    # experiment reruns only its own stages and the report.
    run(["git", "add", "-A"], cwd=project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "reproduced"], cwd=project)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    sweep, epochs = "queued", 4  # a new value: no queued experiment is a cached one
    queued = dvc("exp", "run", "--queue", "-S", f"tracking.sweep={sweep}", "-S", f"experiments.{SWEPT}.max_epochs={epochs}",
                 "-S", f"++experiments.{SWEPT}.seed={','.join(map(str, SEEDS))}", cwd=project).stdout
    names = re.findall(r"Queued experiment '([^']+)'", queued)
    assert len(names) == len(SEEDS), queued  # the grid: one queued experiment per seed
    dvc("queue", "start", "-j", "2", cwd=project)
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
    runs = client.search_runs([experiment.experiment_id], f"tags.sweep = '{sweep}'")
    assert sorted(r.data.params["seed"] for r in runs) == [str(seed) for seed in SEEDS]
    assert sorted(r.data.tags["dvc.exp_name"] for r in runs) == sorted(names)
    for run_ in runs:
        assert run_.data.tags["experiment"] == SWEPT
        assert run_.info.status == "FINISHED"
        assert run_.data.params["max_epochs"] == str(epochs)
        assert len(client.get_metric_history(run_.info.run_id, "val/loss")) == epochs
        assert any(key.startswith("test/") for key in run_.data.metrics)  # evaluate logged into the same run
        assert {a.path for a in client.list_artifacts(run_.info.run_id)} >= {"checkpoint", "config.json", "figures"}

    collected = python("-m", "pipeline.sweep", sweep, cwd=project)
    assert f"{SWEPT}: {len(SEEDS)} run(s) in 1 configuration(s)" in collected.stdout
    repro_again = dvc("repro", cwd=project).stdout
    assert "Running stage 'report'" in repro_again
    assert "Running stage 'train@" not in repro_again and "Running stage 'evaluate@" not in repro_again
    report = (project / "reports" / "comparison.md").read_text()
    assert f"### Sweep `{sweep}`: {SWEPT}" in report
    accuracy = [r.data.metrics["test/accuracy"] for r in sorted(runs, key=lambda r: r.data.params["seed"])]
    row = f"| {', '.join(map(str, SEEDS))} | {statistics.mean(accuracy):.4f} ± {statistics.stdev(accuracy):.4f} |"
    assert row in report, report[report.index("## Sweeps"):]
