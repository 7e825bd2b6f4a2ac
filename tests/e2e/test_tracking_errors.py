"""The tracking store end to end: credentials refused by a server are named as such, and never printed;
a repository moved or copied with its mlflow.db stops before it writes into the old one; evaluating
again logs no second value of a test metric and leaves no stale figure."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import env, python, running_mlflow_server

EXPERIMENT = "linear_diabetes"  # the quickest to train
STORE_EXPERIMENT = "mathematical-engineering-of-deep-learning"  # params.yaml's tracking.experiment


def snapshot(project: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and modification time; not the lock files (the training's, the store's), which a
    stage that stops at once may still take."""
    return {str(p.relative_to(project)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in project.rglob("*") if p.is_file() and p.suffix != ".lock"}


def stage(project: Path, *args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=project, env={**env(), **(extra_env or {})},
                          capture_output=True, text=True, timeout=600)


def trained(project: Path) -> Path:
    python("-m", "pipeline.prepare", cwd=project)
    python("-m", "pipeline.train", EXPERIMENT, cwd=project)
    return project


@contextlib.contextmanager
def refusing_server(status: int):
    """A loopback HTTP server that answers every request with `status` (401: who are you; 403: not you),
    as a tracking server behind authentication does for credentials it does not accept."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def refuse(self) -> None:
            body = b"You are not authenticated."
            self.send_response(status)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = refuse

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def refused_line(shown_uri: str, status: int) -> str:
    return (f"error: MLFLOW_TRACKING_URI={shown_uri}: the tracking server refused the credentials (HTTP {status}); "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN, to credentials it accepts")


def test_refused_credentials_are_named_and_never_printed(project):
    trained(project)
    before = snapshot(project)
    with refusing_server(401) as address:
        for args in (["pipeline.train", EXPERIMENT], ["pipeline.evaluate", EXPERIMENT]):
            in_uri = stage(project, *args, extra_env={"MLFLOW_TRACKING_URI": f"http://ann:s3cret-pw@{address}/?token=t0ken"})
            in_env = stage(project, *args, extra_env={"MLFLOW_TRACKING_URI": f"http://{address}",
                                                      "MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": "s3cret-pw"})
            assert (in_uri.returncode, in_env.returncode) == (2, 2), in_uri.stderr[-2000:] + in_env.stderr[-2000:]
            assert in_uri.stderr.strip().splitlines() == [refused_line(f"http://***@{address}/?token=***", 401)]
            assert in_env.stderr.strip().splitlines() == [refused_line(f"http://{address}", 401)]
            for result in (in_uri, in_env):
                assert "s3cret-pw" not in result.stdout + result.stderr and "t0ken" not in result.stdout + result.stderr
    assert snapshot(project) == before


def test_a_server_that_refuses_these_credentials_is_named_as_such(monkeypatch):
    from pipeline.core import tracking
    from pipeline.params import ConfigError

    with refusing_server(403) as address:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{address}")
        with pytest.raises(ConfigError, match=f"^{re.escape(refused_line(f'http://{address}', 403)[len('error: '):])}$"):
            tracking.check_reachable()


@pytest.mark.slow
def test_wrong_credentials_for_a_real_basic_auth_server(project, tmp_path):
    """`mlflow server --app-name basic-auth`, which needs MLflow's auth extra (Flask-WTF)."""
    pytest.importorskip("flask_wtf", reason="mlflow server --app-name basic-auth needs `pip install mlflow[auth]`")
    root = tmp_path / "server"
    root.mkdir()
    config = root / "basic_auth.ini"  # its own user database, apart from the tracking store
    config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'auth.db'}\n"
                      "admin_username = admin\nadmin_password = the-admin-pw\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    server_env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests-only"}
    with running_mlflow_server(root, "--app-name", "basic-auth", "--workers", "1", extra_env=server_env) as address:
        python("-m", "pipeline.prepare", cwd=project)
        before = snapshot(project)
        result = stage(project, "pipeline.train", EXPERIMENT, extra_env={"MLFLOW_TRACKING_URI": f"http://admin:wrong-pw@{address}"})
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [refused_line(f"http://***@{address}", 401)]
        assert snapshot(project) == before


def moved_line(old: Path) -> str:
    return (f"error: mlflow.db: its MLflow experiment '{STORE_EXPERIMENT}' keeps artifacts in {old / 'mlruns'}, not in this "
            "repository's mlruns/ (the repository was moved or copied); move mlflow.db and mlruns/ aside to start "
            "a new store here, or set MLFLOW_TRACKING_URI to the store you mean")


def test_a_copied_or_moved_repository_stops_before_writing_into_the_old_one(project, tmp_path):
    original = trained(project).resolve()
    copy = Path(shutil.copytree(original, tmp_path / "copy", symlinks=True)).resolve()
    store = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    experiment_id = store.get_experiment_by_name(STORE_EXPERIMENT).experiment_id
    runs = len(store.search_runs([experiment_id]))
    before, original_before = snapshot(copy), snapshot(original)
    for args in (["pipeline.train", EXPERIMENT], ["pipeline.evaluate", EXPERIMENT]):
        result = stage(copy, *args)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [moved_line(original)]
    assert snapshot(copy) == before and snapshot(original) == original_before  # no run, no artifact, anywhere
    assert len(store.search_runs([experiment_id])) == runs

    moved = original.rename(tmp_path / "moved")  # the old location is gone
    result = stage(moved, "pipeline.evaluate", EXPERIMENT)
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [moved_line(original)])
    assert not original.exists()

    (copy / "mlflow.db").rename(copy / "mlflow.db.moved-aside")  # as the message says: a new store here
    (copy / "mlruns").rename(copy / "mlruns.moved-aside")
    python("-m", "pipeline.train", EXPERIMENT, cwd=copy)
    python("-m", "pipeline.evaluate", EXPERIMENT, cwd=copy)
    assert any((copy / "mlruns").rglob("best.ckpt"))


def test_evaluating_again_logs_no_second_value_and_replaces_the_figures_whole(project):
    trained(project)
    python("-m", "pipeline.evaluate", EXPERIMENT, cwd=project)
    figures = project / "plots" / "figures" / EXPERIMENT
    (figures / "stale.png").write_bytes(b"a figure an older evaluation drew")
    python("-m", "pipeline.evaluate", EXPERIMENT, cwd=project)

    run_id = json.loads((project / "runs" / f"{EXPERIMENT}.json").read_text())["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    results = json.loads((project / "metrics" / f"{EXPERIMENT}.json").read_text())
    assert results and {key: [m.value for m in client.get_metric_history(run_id, key)] for key in results} == {
        key: [value] for key, value in results.items()
    }
    assert sorted(p.name for p in figures.iterdir()) == ["learning_curve.png", "predicted_vs_actual.png"]
    assert sorted(p.name for p in figures.parent.iterdir()) == [EXPERIMENT]  # no staging folder left

    def folder(path: Path) -> dict:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.iterdir()}

    kept = folder(figures)
    (project / "plots" / "learning_curves" / f"{EXPERIMENT}.csv").unlink()  # evaluate fails after the family's figures
    failed = python("-m", "pipeline.evaluate", EXPERIMENT, cwd=project, check=False)
    assert failed.returncode != 0
    assert folder(figures) == kept  # not one file rewritten
    assert sorted(p.name for p in figures.parent.iterdir()) == [EXPERIMENT]
