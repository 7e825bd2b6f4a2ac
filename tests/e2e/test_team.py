"""A team's setup, for real: team/tracking_server.py's server (PostgreSQL, artifacts proxied by the server,
MLflow's basic-auth app), its admin adding users and granting them an experiment through MLflow's
AuthServiceClient as the README shows, and a DVC remote on a shared folder between two clones.

Users: ann and ben get EDIT on the experiments they train into; eve is never granted anything (she may
read, the server's default, and not write)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_project, dvc, git_init, run, serving, shrink_params
from slurm_cluster import free_port
from test_concurrency import EXPERIMENT_NAME, EXPERIMENTS, check_runs, train_at_once
from test_tracking_errors import refused_line, snapshot, stage

from team import tracking_server

pytestmark = pytest.mark.slow

SECRET = uuid.uuid4().hex  # made at run time: no password is in this file, so none can leak from it
ADMIN = ("admin", f"admin-{SECRET}")
USERS = {name: f"{name}-{SECRET}" for name in ("ann", "ben", "eve")}


@dataclass
class TeamServer:
    uri: str
    folder: Path  # the script's FOLDER
    log: Path  # the script's output, the server's and PostgreSQL's messages

    def user_env(self, name: str, password: str | None = None) -> dict[str, str]:
        """What a user sets (README, Team setup)."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": name,
                "MLFLOW_TRACKING_PASSWORD": password or USERS[name]}

    def grant(self, experiment_name: str, *users: str) -> str:
        """As the admin: the experiment (created if new), EDIT on it for `users`; its id."""
        from mlflow import MlflowClient
        from mlflow.exceptions import RestException
        from mlflow.server import get_app_client

        client = MlflowClient(self.uri)
        found = client.get_experiment_by_name(experiment_name)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment_name)
        auth = get_app_client("basic-auth", tracking_uri=self.uri)
        for user in users:
            try:
                auth.grant_user_permission(user, "experiment", experiment_id, "EDIT")
            except RestException as error:  # granted by an earlier test of this file: EDIT, as every grant here
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        return experiment_id


@pytest.fixture(scope="module")
def team_server():
    """team/tracking_server.py started once for this file; the admin's credentials in this process's
    environment while it runs (the in-process MLflow clients below act as the admin)."""
    if tracking_server.find_postgres() is None:
        pytest.skip("PostgreSQL unavailable: initdb and postgres are neither on PATH nor in /usr/lib/postgresql/*/bin; "
                    "install Debian's postgresql (.ci/run does, as root)")
    # Outside pytest's folders: when the tests run as root, PostgreSQL runs as the postgres user, who may
    # not enter them (0700). Short, too: the cluster's socket path must fit in 107 characters.
    base = Path(tempfile.mkdtemp(prefix="medl-team-"))
    base.chmod(0o711)
    port = free_port()
    command = [sys.executable, str(ROOT / "team" / "tracking_server.py"), str(base / "server"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    try:
        with serving(command, port, base / "script.log", ROOT, {tracking_server.ADMIN_PASSWORD: ADMIN[1]}):
            server = TeamServer(f"http://127.0.0.1:{port}", base / "server", base / "script.log")
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
                patch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
                from mlflow.server import get_app_client

                auth = get_app_client("basic-auth", tracking_uri=server.uri)
                for name, password in USERS.items():
                    auth.create_user(name, password)
                yield server
        assert re.search(r"^tracking server ready: MLFLOW_TRACKING_URI=http://127\.0\.0\.1:\d+;", server.log.read_text(), re.M)
    finally:
        shutil.rmtree(base)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A shrunk copy of the project with its data prepared, shared by the tests that train in it."""
    project = copy_project(tmp_path_factory.mktemp("team") / "project")
    shrink_params(project / "params.yaml")
    run([sys.executable, "-m", "pipeline.prepare"], cwd=project)
    return project


def test_four_trainings_at_once_lose_nothing_and_their_artifacts_come_through_the_server(team_server, prepared, tmp_path):
    from mlflow import MlflowClient

    team_server.grant(EXPERIMENT_NAME, "ann")
    raw = yaml.safe_load((prepared / "params.yaml").read_text())

    results = train_at_once(prepared, team_server.user_env("ann"))

    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(team_server.uri)
    check_runs(client, prepared, raw)  # each run FINISHED, with every param, its whole curve, its artifacts
    assert not (prepared / "mlflow.db").exists() and not (prepared / "mlruns").exists()
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied: clients hold no store credentials
    for run_info in client.search_runs([experiment.experiment_id]):
        name = run_info.info.run_name
        fetched = Path(client.download_artifacts(run_info.info.run_id, "checkpoint/best.ckpt", str(tmp_path)))
        assert fetched.read_bytes() == (prepared / "models" / name / "best.ckpt").read_bytes(), name
        fetched.unlink()
    # where the server stored them (the logged models hold copies of their own, under models/)
    kept = [p for p in team_server.folder.joinpath("artifacts").rglob("best.ckpt") if p.parent.name == "checkpoint"]
    assert len(kept) == len(EXPERIMENTS)


def test_a_wrong_password_is_one_line_naming_the_variables(team_server, prepared):
    before = snapshot(prepared)
    wrong = f"not-{SECRET}"
    result = stage(prepared, "pipeline.train", "linear_diabetes", extra_env=team_server.user_env("ann", wrong))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [refused_line(team_server.uri, 401)]
    assert wrong not in result.stdout + result.stderr
    assert snapshot(prepared) == before


def write_refused_line(uri: str, user: str) -> str:
    return (f"error: MLFLOW_TRACKING_URI={uri}: user {user} (MLFLOW_TRACKING_USERNAME) may not write to MLflow "
            f"experiment '{EXPERIMENT_NAME}' (params.yaml tracking.experiment_name; HTTP 403); ask the server's admin "
            "for EDIT permission on it, or set tracking.experiment_name to an experiment you may write to")


def test_a_user_without_permission_cannot_write_to_the_experiment(team_server, prepared):
    from mlflow import MlflowClient

    experiment_id = team_server.grant(EXPERIMENT_NAME)  # exists; eve has no grant on it
    client = MlflowClient(team_server.uri)
    runs = len(client.search_runs([experiment_id]))
    before = snapshot(prepared)

    result = stage(prepared, "pipeline.train", "mlp_digits", extra_env=team_server.user_env("eve"))

    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [write_refused_line(team_server.uri, "eve")]
    assert USERS["eve"] not in result.stdout + result.stderr
    assert snapshot(prepared) == before  # no resume state, no model, no curve
    assert len(client.search_runs([experiment_id])) == runs


def test_a_user_without_permission_cannot_evaluate_into_the_experiment(team_server, prepared):
    """Found before any work: no prediction made, no file written, not a traceback after the work."""
    from mlflow import MlflowClient

    team_server.grant(EXPERIMENT_NAME, "ann")
    trained = stage(prepared, "pipeline.train", "linear_diabetes", extra_env=team_server.user_env("ann"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    client = MlflowClient(team_server.uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    [run] = client.search_runs([experiment_id], "attributes.run_name = 'linear_diabetes'", max_results=1)
    before = snapshot(prepared)

    result = stage(prepared, "pipeline.evaluate", "linear_diabetes", extra_env=team_server.user_env("eve"))

    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [write_refused_line(team_server.uri, "eve")]
    assert snapshot(prepared) == before  # no metrics, no plots
    after = client.get_run(run.info.run_id).data
    assert (after.tags, after.metrics) == (run.data.tags, run.data.metrics)  # the probe changed nothing


def test_the_server_never_prints_a_password(team_server):
    from mlflow import MlflowClient

    MlflowClient(team_server.uri).search_experiments()  # the server has logged requests by now
    text = team_server.log.read_text() + (team_server.folder / "postgres.log").read_text()
    assert ADMIN[1] not in text and not any(password in text for password in USERS.values())


# ---------------------------------------------------------------------------------------------
# A DVC remote on a shared folder, as clusters share a filesystem

REMOTE_EXPERIMENT = "linear_diabetes"  # the quickest to train
REMOTE_MLFLOW = "team-dvc-remote"  # the MLflow experiment of this test's runs, apart from the ones above


def git(*args: str, cwd: Path) -> str:
    return run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd).stdout


def test_a_clone_pulls_what_another_pushed_and_evaluates_into_the_same_mlflow_run(team_server, tmp_path):
    from mlflow import MlflowClient

    experiment_id = team_server.grant(REMOTE_MLFLOW, "ann", "ben")
    remote = tmp_path / "shared" / "dvc-remote"
    a = copy_project(tmp_path / "a")
    params = shrink_params(a / "params.yaml", keep=(REMOTE_EXPERIMENT,))
    params["tracking"]["experiment_name"] = REMOTE_MLFLOW
    (a / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_init(a)

    # Clone A: ann reproduces the pipeline, pushes the cached outputs and commits the rest (dvc.lock, metrics, ...).
    dvc("repro", cwd=a, extra_env=team_server.user_env("ann"))
    dvc("remote", "add", "-d", "shared", str(remote), cwd=a)
    dvc("push", cwd=a)
    git("add", "-A", cwd=a)
    git("commit", "-qm", "trained", cwd=a)

    # Clone B: ben clones A, pulls the outputs; nothing is stale, nothing reruns.
    b = tmp_path / "b"
    run(["git", "clone", "-q", str(a), str(b)], cwd=tmp_path)
    assert not (b / "models").exists()
    dvc("pull", cwd=b)
    assert (b / "models" / REMOTE_EXPERIMENT / "best.ckpt").read_bytes() == (a / "models" / REMOTE_EXPERIMENT / "best.ckpt").read_bytes()
    status = dvc("status", cwd=b)
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
    again = dvc("repro", cwd=b, extra_env=team_server.user_env("ben"))
    assert "Running stage" not in again.stdout, again.stdout

    # B's evaluation finds A's run on the server and writes into it: the tag evaluate sets comes back.
    client = MlflowClient(team_server.uri)
    [trained] = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{REMOTE_EXPERIMENT}'")
    assert trained.data.tags["dvc.evaluated"] == "true"
    client.delete_tag(trained.info.run_id, "dvc.evaluated")
    dvc("repro", "-f", "-s", f"evaluate@{REMOTE_EXPERIMENT}", cwd=b, extra_env=team_server.user_env("ben"))
    [evaluated] = client.search_runs([experiment_id])  # no second run
    assert evaluated.info.run_id == trained.info.run_id and evaluated.data.tags["dvc.evaluated"] == "true"
    metrics = json.loads((b / "metrics" / f"{REMOTE_EXPERIMENT}.json").read_text())
    assert metrics == json.loads((a / "metrics" / f"{REMOTE_EXPERIMENT}.json").read_text())
    assert metrics and {key: evaluated.data.metrics[key] for key in metrics} == metrics
    assert not (b / "mlflow.db").exists() and not (a / "mlflow.db").exists()
    assert sorted(os.listdir(remote / "files" / "md5")), "the remote holds nothing"
