"""MLflow: where the store is, one run per training of an experiment, its tags and params.

The default store is the SQLite file mlflow.db at the repository root, as an absolute path.
`dvc exp run --temp` and `--queue` execute in copies under <repo>/.dvc/tmp/exps/; their runs go to
the store of the repository they were started from. MLFLOW_TRACKING_URI overrides the default.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pipeline.params import ROOT

RUN_FILE = "run.json"


def store_root(root: Path = ROOT) -> Path:
    """The repository whose mlflow.db this checkout logs to (the outer one inside a DVC exp copy)."""
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def check_reachable(timeout: float = 10.0) -> None:
    """Fail at once, before any training, when MLFLOW_TRACKING_URI names a server that does not
    answer (MLflow itself would retry for minutes, and only once a run is created)."""
    from pipeline.params import ConfigError

    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(timeout)))
    try:
        client().search_experiments(max_results=1)
    except Exception as error:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer ({type(error).__name__}); "
            "start it, or unset MLFLOW_TRACKING_URI to track into the local mlflow.db"
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_READY: set[str] = set()  # SQLite stores this process has seen created


def client():
    """An MlflowClient of the store. A SQLite store is created (its schema migrated) by one process at
    a time, under an exclusive lock on `<store>.lock`: MLflow's own first-use creation races when
    several stages start at once."""
    from mlflow import MlflowClient

    uri = tracking_uri()
    if not uri.startswith("sqlite:///") or uri in _READY:
        return MlflowClient(uri)
    import fcntl

    database = Path(uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            _create_sqlite_store(database)
        mlflow_client = MlflowClient(uri)
        mlflow_client.search_experiments(max_results=1)  # upgrades the schema of an older MLflow's store
    _READY.add(uri)
    return mlflow_client


def _create_sqlite_store(database: Path) -> None:
    """A new store: MLflow creates its schema (about 70 Alembic migrations, some 1,700 statements) in
    `<store>.partial` with SQLite's per-commit fsync off, then the file is synced once and renamed into
    place. About half a second faster than MLflow creating it in place, which is the first training's
    start-up in a fresh clone (BENCHMARKS.md); an interrupted creation leaves no store that looks complete."""
    from mlflow import MlflowClient
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    partial = database.with_name(database.name + ".partial")
    partial.unlink(missing_ok=True)

    def unsynced(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA synchronous = OFF")  # this connection's setting: not kept in the file
        dbapi_connection.execute("PRAGMA journal_mode = MEMORY")

    event.listen(Engine, "connect", unsynced)
    try:
        MlflowClient(f"sqlite:///{partial}").search_experiments(max_results=1)  # creates the schema
    finally:
        event.remove(Engine, "connect", unsynced)
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    partial.rename(database)


def check_run(run_file: Path, experiment_name: str) -> None:
    """Fail at once, before evaluating, when the MLflow run that run.json names is not in this store: a
    model trained into another store (models/ copied or pulled from another checkout) would otherwise
    be evaluated and then fail to log its metrics."""
    from mlflow.exceptions import MlflowException

    from pipeline.params import ConfigError, ROOT

    run = json.loads(run_file.read_text())
    try:
        client().get_run(run["mlflow_run_id"])
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        shown = run_file.relative_to(ROOT) if run_file.is_relative_to(ROOT) else run_file
        raise ConfigError(
            f"{shown}: MLflow run {run['mlflow_run_id']} is not in the store {tracking_uri()} (it was trained into "
            f"{run.get('tracking_uri', 'another store')}); point MLFLOW_TRACKING_URI at that store, or run "
            f"`dvc repro -f train@{experiment_name}` to train into this one"
        ) from None


def experiment_id(mlflow_client, name: str) -> str:
    """Get or create the MLflow experiment; a concurrent creator winning the race is fine."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # With the default store, artifacts live beside mlflow.db (not in a DVC exp copy that is deleted).
    location = None if os.environ.get("MLFLOW_TRACKING_URI") else (store_root() / "mlruns").as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run(experiment_name: str, experiment, chapter: int, sweep: str = "") -> str:
    """Create the run for one training of `experiment` (an ExperimentConfig) and log its params; `sweep`
    (params.yaml's tracking.sweep), if any, becomes the tag the runs of one sweep share."""
    from mlflow.entities import Param

    mlflow_client = client()
    tags = {
        "mlflow.source.git.commit": git_commit(),
        "mlflow.runName": experiment.name,
        "experiment": experiment.name,
        "dvc.stage": f"train@{experiment.name}",
        "family": experiment.family,
        "dataset": experiment.dataset,
        "book.chapter": str(chapter),
    }
    if sweep:
        tags["sweep"] = sweep
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    run = mlflow_client.create_run(experiment_id(mlflow_client, experiment_name), run_name=experiment.name, tags=tags)
    params = [Param(key, json.dumps(value) if isinstance(value, list) else str(value)) for key, value in experiment.flat().items()]
    mlflow_client.log_batch(run.info.run_id, params=params)
    return run.info.run_id
