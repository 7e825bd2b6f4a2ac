"""The default SQLite store: created in `<store>.partial` with per-commit fsync off, then renamed into
place; the result is the store MLflow makes in place (same tables, columns, indexes and schema
revision), with SQLite's default journal, and a stale `.partial` of an interrupted creation is
replaced. The run that trained a model is found by its checkpoint's md5; a model whose run is in
another store is named before it is evaluated. A tracking
URI is shown without its credentials; a test metric is logged once per run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from mlflow import MlflowClient

from pipeline.core import tracking


def schema(path) -> tuple[dict, list, str]:
    """Each table's columns (name, type, not null, default, primary key) and indexes (name, columns),
    the Alembic revision, the journal mode. Not the CREATE statements' text: Alembic's table rebuilds
    write a table's constraints in an order that varies from run to run."""
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        shape = {
            table: (
                sorted(row[1:] for row in db.execute(f'PRAGMA table_info("{table}")')),
                sorted((index[1], tuple(c[2] for c in db.execute(f'PRAGMA index_info("{index[1]}")')))
                       for index in db.execute(f'PRAGMA index_list("{table}")')),
            )
            for table in tables
        }
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    return shape, revision, journal


def test_a_new_store_is_the_one_mlflow_creates_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default experiment keeps ./mlruns: the same for both stores
    ours = tmp_path / "ours" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ours}")
    client = tracking.client()
    run = client.create_run(tracking.experiment_id(client, "a"))
    client.log_metric(run.info.run_id, "test/accuracy", 0.5)

    theirs = tmp_path / "theirs" / "mlflow.db"
    theirs.parent.mkdir()
    MlflowClient(f"sqlite:///{theirs}").search_experiments(max_results=1)

    objects, revision, journal = schema(ours)
    assert (objects, revision) == schema(theirs)[:2] and len(objects) > 20 and revision
    assert journal == "delete"  # the creation's journal_mode and synchronous were that connection's only
    assert sorted(p.name for p in ours.parent.iterdir()) == ["mlflow.db", "mlflow.db.lock"]  # no .partial left
    assert MlflowClient(f"sqlite:///{ours}").get_metric_history(run.info.run_id, "test/accuracy")[0].value == 0.5


def test_a_partial_store_left_by_an_interrupted_creation_is_replaced(tmp_path, monkeypatch):
    database = tmp_path / "mlflow.db"
    (tmp_path / "mlflow.db.partial").write_bytes(b"SQLite format 3\x00 cut short")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    client = tracking.client()
    from mlflow.entities import ViewType

    assert [e.name for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)] == ["Default"]  # created whole
    assert not (tmp_path / "mlflow.db.partial").exists()


def _trained_run(client, checkpoint, name="mlp_digits", status="FINISHED") -> str:
    """A run as a training leaves it: tagged with its experiment and its checkpoint's md5."""
    run_id = client.create_run(tracking.experiment_id(client, "a"), tags={"experiment": name}).info.run_id
    client.set_tag(run_id, tracking.MODEL_TAG, tracking.md5(checkpoint))
    client.set_terminated(run_id, status)
    return run_id


def test_the_run_that_trained_a_model_is_found_by_the_checkpoints_md5(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = tracking.client()
    checkpoint, other = tmp_path / "best.ckpt", tmp_path / "other.ckpt"
    checkpoint.write_bytes(b"weights")
    other.write_bytes(b"other weights")
    first = _trained_run(client, checkpoint)
    time.sleep(0.01)
    newest = _trained_run(client, checkpoint)  # the same model trained again (training is deterministic)
    _trained_run(client, other)
    _trained_run(client, checkpoint, name="cnn_digits")  # another experiment's identical file
    time.sleep(0.01)
    _trained_run(client, checkpoint, status="FAILED")  # failed after tagging: not a model's run
    assert first != newest
    assert tracking.find_model_run("a", "mlp_digits", checkpoint).info.run_id == newest


def test_a_model_trained_into_another_store_is_named_before_evaluating(tmp_path, monkeypatch):
    import json

    from pipeline.params import ConfigError

    monkeypatch.setattr(tracking, "RUNS", tmp_path / "runs")
    trained_into = tmp_path / "theirs" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{trained_into}")
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"weights")
    run_id = _trained_run(tracking.client(), checkpoint)
    assert tracking.find_model_run("a", "mlp_digits", checkpoint).info.run_id == run_id  # its own store: fine

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'ours.db'}")
    digest = tracking.md5(checkpoint)
    message = (rf"^.*best\.ckpt: no finished MLflow run of experiment mlp_digits with tag model\.md5={digest} in the store "
               rf"sqlite:///.*/ours\.db; point MLFLOW_TRACKING_URI at the store the model was trained into, or run "
               rf"`dvc repro -f train@mlp_digits` to train into this one$")
    with pytest.raises(ConfigError, match=message):
        tracking.find_model_run("a", "mlp_digits", checkpoint)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mlp_digits.json").write_text(json.dumps({"tracking_uri": "http://ann:secret@host:5000"}))
    with pytest.raises(ConfigError, match=r"ours\.db \(this checkout trained into http://\*\*\*@host:5000\);") as raised:
        tracking.find_model_run("a", "mlp_digits", checkpoint)
    assert "secret" not in str(raised.value) and "ann" not in str(raised.value)


@pytest.mark.parametrize(("uri", "shown"), [
    ("http://user:password@host:5000/path", "http://***@host:5000/path"),
    ("https://token@host", "https://***@host"),
    ("http://user:pa/ss#w@rd@host:5000", "http://***@host:5000"),  # unencoded / and # in the password
    ("postgresql://mlflow:hunter2@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
    ("http://host/?token=abc&experiment=1&API_KEY=k&x-amz-signature=s&password&p=%2F",
     "http://host/?token=***&experiment=1&API_KEY=***&x-amz-signature=***&password=***&p=%2F"),
    ("http://host?access%5Ftoken=abc#top", "http://host?access%5Ftoken=***#top"),
    ("sqlite:////repo/mlflow.db", "sqlite:////repo/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_redacted_hides_userinfo_and_secret_query_values(uri, shown):
    assert tracking.redacted(uri) == shown


def test_each_test_metric_is_logged_once_per_run_unless_its_value_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = tracking.client()
    run_id = client.create_run(tracking.experiment_id(client, "a")).info.run_id
    results = {"test/accuracy": 0.9583333333333334, "test/nll": float("nan")}

    assert tracking.log_new_values(client, run_id, results) == results
    assert tracking.log_new_values(client, run_id, results) == {}  # the same model evaluated again
    changed = {**results, "test/accuracy": 0.9611111111111111}  # the evaluation code changed
    assert tracking.log_new_values(client, run_id, changed) == {"test/accuracy": 0.9611111111111111}

    accuracy = [m.value for m in client.get_metric_history(run_id, "test/accuracy")]
    assert accuracy == [0.9583333333333334, 0.9611111111111111]
    assert len(client.get_metric_history(run_id, "test/nll")) == 1


def test_a_stage_process_runs_no_mlflow_telemetry_unless_the_user_asks():
    """MLflow's telemetry fetches its settings from the network and, where that fails, removes a variable from
    os.environ in its thread while a request to a tracking server may be reading it (which then fails). The
    pipeline package turns it off before MLflow is imported; a user's own setting wins. A bare environment:
    MLflow also turns it off under pytest or a CI's variables."""
    bare = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    code = "import pipeline, mlflow.telemetry; print(mlflow.telemetry.get_telemetry_client() is None)"
    for extra, off in (({}, "True"), ({"MLFLOW_DISABLE_TELEMETRY": "false"}, "False")):
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**bare, **extra}, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().splitlines()[-1] == off, (extra, result.stdout)
