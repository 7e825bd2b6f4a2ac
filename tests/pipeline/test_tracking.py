"""The default SQLite store: created in `<store>.partial` with per-commit fsync off, then renamed into
place; the result is the store MLflow makes in place (same tables, indexes and schema revision), with
SQLite's default journal, and a stale `.partial` of an interrupted creation is replaced."""

from __future__ import annotations

import sqlite3

from mlflow import MlflowClient

from pipeline.core import tracking


def schema(path) -> tuple[list, list, str]:
    with sqlite3.connect(path) as db:
        objects = sorted(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall(), key=str)
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    return objects, revision, journal


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
    assert client.search_experiments()[0].name == "Default"
    assert not (tmp_path / "mlflow.db.partial").exists()
