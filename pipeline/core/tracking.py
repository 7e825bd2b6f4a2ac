"""MLflow: where the store is, one run per training of an experiment, its tags and params.

The default store is the SQLite file mlflow.db at the repository root, as an absolute path.
`dvc exp run --temp` and `--queue` execute in copies under <repo>/.dvc/tmp/exps/; their runs go to
the store of the repository they were started from. MLFLOW_TRACKING_URI overrides the default.

A tracking URI may carry credentials (`http://user:password@host`, `?token=...`): whatever this
project prints or writes shows it through `redacted`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.params import ROOT

RUNS = ROOT / "runs"  # runs/EXPERIMENT.json: the last training's summary (summary_file); no DVC output, ignored by git
MODEL_TAG = "model.md5"  # the tag of the run that trained a checkpoint: its md5 (find_model_run)
SECRET_NAME = re.compile(r"token|pass|pwd|key|secret|auth|credential|sig", re.IGNORECASE)
CREDENTIALS_REFUSED = (401, 403)  # Unauthorized: no or wrong credentials; Forbidden: not these


def store_root(root: Path = ROOT) -> Path:
    """The repository whose mlflow.db this checkout logs to (the outer one inside a DVC exp copy)."""
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def redacted(uri: str) -> str:
    """`uri` safe to print or store: its userinfo (`user:password@`) becomes `***@`, and so does the
    value of each query parameter whose name looks secret (token, password, key, secret, auth, ...).

    Split by hand, not by urllib.parse.urlsplit: a password with an unencoded `/` or `#` would end
    urlsplit's netloc early and stay in the path, printed; here everything up to the last `@` before
    the query goes."""
    address, question, query = uri.partition("?")
    scheme, slashes, rest = address.partition("://")
    if slashes and "@" in rest:
        address = f"{scheme}://***@{rest.rpartition('@')[2]}"
    if not question:
        return address
    query, hash_mark, fragment = query.partition("#")
    fields = [field.partition("=") for field in query.split("&")]
    query = "&".join(f"{name}=***" if SECRET_NAME.search(urllib.parse.unquote_plus(name)) else name + equals + value
                     for name, equals, value in fields)
    return f"{address}?{query}{hash_mark}{fragment}"


def check_reachable(timeout: float = 10.0) -> None:
    """Fail at once, before any work, when the store cannot be used: a tracking server
    (MLFLOW_TRACKING_URI) that does not answer (MLflow itself would retry for minutes, and only
    once a run is created) or refuses the credentials; the default store when it belongs to
    another copy of the repository (check_store_location)."""
    from mlflow.exceptions import MlflowException  # MLflow inside functions: a stage's checks run before it loads

    from pipeline.params import ConfigError

    uri = tracking_uri()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        check_store_location()
        return
    if not uri.startswith(("http://", "https://")):
        return
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(timeout)))
    try:
        client().search_experiments(max_results=1)
    except MlflowException as error:
        status = error.get_http_status_code()
        if status in CREDENTIALS_REFUSED:
            raise ConfigError(
                f"MLFLOW_TRACKING_URI={redacted(uri)}: the tracking server refused the credentials (HTTP {status}); "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN, to credentials it accepts"
            ) from None
        raise _no_answer(uri, error) from None
    except Exception as error:
        raise _no_answer(uri, error) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _no_answer(uri: str, error: Exception):
    from pipeline.params import ConfigError

    return ConfigError(
        f"MLFLOW_TRACKING_URI={redacted(uri)}: the tracking server does not answer ({type(error).__name__}); "
        "start it, or unset MLFLOW_TRACKING_URI to track into the local mlflow.db"
    )


def check_store_location() -> None:
    """Fail when the default store keeps this project's artifacts outside this repository.

    experiment_id() gives each experiment it creates the absolute location `<repository>/mlruns`.
    A repository moved or copied with its mlflow.db would still write artifacts there: into the
    other copy, or into a folder that no longer exists. MLflow itself never picks a location named
    mlruns (it appends the experiment id), so an experiment whose location is a folder named mlruns
    is one of this project's."""
    from pipeline.params import ConfigError

    database = store_root() / "mlflow.db"
    if not database.exists():
        return  # a new store: experiment_id() will give it this repository's folder
    here = store_root() / "mlruns"
    for experiment in client().search_experiments(max_results=1000):
        location = urllib.parse.urlsplit(experiment.artifact_location)
        if location.scheme != "file":
            continue
        folder = Path(urllib.request.url2pathname(location.path))
        if folder.name == "mlruns" and folder != here:
            shown = database.relative_to(ROOT) if database.is_relative_to(ROOT) else database
            raise ConfigError(
                f"{shown}: its MLflow experiment {experiment.name!r} keeps artifacts in {folder}, not in this "
                f"repository's mlruns/ (the repository was moved or copied); move {shown} and mlruns/ aside to start "
                "a new store here, or set MLFLOW_TRACKING_URI to the store you mean"
            )


_READY: set[str] = set()  # SQLite stores this process has seen created


def client():
    """An MlflowClient of the store. A SQLite store is created (its schema migrated) by one process at
    a time, under an exclusive lock on `<store>.lock`: MLflow's own first-use creation races when
    several stages start at once."""

    from mlflow import MlflowClient

    # MLflow logs a SQLite error's traceback, then raises it: pipeline.cli reports it in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    uri = tracking_uri()
    if not uri.startswith("sqlite:///") or uri in _READY:
        return MlflowClient(uri)

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
    start-up in a fresh clone (BENCHMARKS.md); an interrupted creation leaves no store that looks complete.

    MLflow gives every new store an experiment `Default`, which this project never logs to: it is deleted
    (MLflow keeps it in the store as deleted, so it is not made again), and the UI lists the project's
    experiment alone."""
    from mlflow import MlflowClient
    from mlflow.entities import Experiment
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    partial = database.with_name(database.name + ".partial")
    partial.unlink(missing_ok=True)

    def unsynced(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA synchronous = OFF")  # this connection's setting: not kept in the file
        dbapi_connection.execute("PRAGMA journal_mode = MEMORY")

    event.listen(Engine, "connect", unsynced)
    try:
        fresh = MlflowClient(f"sqlite:///{partial}")  # creates the schema
        fresh.delete_experiment(fresh.get_experiment_by_name(Experiment.DEFAULT_EXPERIMENT_NAME).experiment_id)
    finally:
        event.remove(Engine, "connect", unsynced)
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    partial.rename(database)


def summary_file(name: str) -> Path:
    """Where the last training of experiment `name` in this checkout wrote its summary: MLflow run id,
    seconds, throughput, parameter count, registered version."""
    return RUNS / f"{name}.json"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def find_model_run(tracking_experiment: str, name: str, checkpoint: Path):
    """The MLflow run that trained `checkpoint` (models/NAME/best.ckpt): the newest FINISHED run of
    experiment `name` whose tag model.md5 is the checkpoint's md5, in the store. Found by content, not
    by a run id kept beside the model, so a checkout that pulled the model (`dvc pull`) finds the run
    on the tracking server the team shares. A clear error, before any work, when the store has none
    (the model was trained into another store)."""
    from pipeline.params import ConfigError

    digest = md5(checkpoint)
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(tracking_experiment)
    runs = found and mlflow_client.search_runs(
        [found.experiment_id],
        f"tags.experiment = '{name}' and tags.`{MODEL_TAG}` = '{digest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if runs:
        return runs[0]
    shown = checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint
    summary = summary_file(name)
    trained_into = ""
    if summary.exists():
        uri = json.loads(summary.read_text()).get("tracking_uri")
        trained_into = f" (this checkout trained into {redacted(uri)})" if isinstance(uri, str) else ""
    raise ConfigError(
        f"{shown}: no finished MLflow run of experiment {name} with tag {MODEL_TAG}={digest} in the store "
        f"{redacted(tracking_uri())}{trained_into}; point MLFLOW_TRACKING_URI at the store the model was trained "
        f"into, or run `dvc repro -f train@{name}` to train into this one"
    )


def check_writable(run, tracking_experiment: str) -> None:
    """Fail before any work when these credentials may read `run` but not write to it (a tracking server
    with MLflow's basic-auth app): evaluate would otherwise predict, then fail to log. The probe sets the
    run's `experiment` tag to the value it already has, so it changes nothing."""
    from mlflow.exceptions import MlflowException

    try:
        client().set_tag(run.info.run_id, "experiment", run.data.tags["experiment"])
    except MlflowException as error:
        if error.get_http_status_code() == 403:
            raise write_refused(tracking_experiment) from None
        raise


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


def start_run(experiment_name: str, experiment, chapter: int, sweep: str = "", extra_tags: dict[str, str] | None = None) -> str:
    """Create the run for one training of `experiment` (an ExperimentConfig) and log its params; `sweep`
    (params.yaml's tracking.sweep), if any, becomes the tag the runs of one sweep share; `extra_tags`
    are set with the run's creation (a tag that finds the run again, see find_run)."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    stage = f"train@{experiment.name}"
    tags = {
        "mlflow.source.git.commit": git_commit(),
        # The command that trains this run again: the UI's Source column and run page show it
        "mlflow.source.name": f"dvc repro {stage}" if os.environ.get("DVC_STAGE") else f"python -m pipeline.train {experiment.name}",
        "mlflow.source.type": "LOCAL",
        "mlflow.note.content": f"{experiment.name}: the {experiment.family} family (chapter {chapter} of Mathematical "
                               f"Engineering of Deep Learning) trained on the {experiment.dataset} dataset by the DVC stage {stage}.",
        "mlflow.runName": experiment.name,
        "experiment": experiment.name,
        "dvc.stage": stage,
        "family": experiment.family,
        "dataset": experiment.dataset,
        "book.chapter": str(chapter),
    }
    if sweep:
        tags["sweep"] = sweep
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    tags.update(extra_tags or {})
    try:
        run = mlflow_client.create_run(experiment_id(mlflow_client, experiment_name), run_name=experiment.name, tags=tags)
    except MlflowException as error:
        if error.get_http_status_code() == 403:  # credentials accepted (check_reachable), this experiment not theirs
            raise write_refused(experiment_name) from None
        raise
    params = [Param(key, json.dumps(value) if isinstance(value, list) else str(value)) for key, value in experiment.flat().items()]
    mlflow_client.log_batch(run.info.run_id, params=params)
    return run.info.run_id


def write_refused(experiment_name: str):
    """The one line for a tracking server that lets these credentials read but not write this experiment."""
    from pipeline.params import ConfigError

    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user {user} (MLFLOW_TRACKING_USERNAME)" if user else "these credentials"
    return ConfigError(
        f"MLFLOW_TRACKING_URI={redacted(tracking_uri())}: {who} may not write to MLflow experiment {experiment_name!r} "
        "(params.yaml tracking.experiment_name; HTTP 403); ask the server's admin for EDIT permission on it, or set "
        "tracking.experiment_name to an experiment you may write to"
    )


def find_run(experiment_name: str, tag: str, value: str):
    """The active run of the MLflow experiment whose tag `tag` is `value` (a token: letters and digits), or None."""
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(experiment_name)
    if found is None or not value:
        return None
    runs = mlflow_client.search_runs([found.experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    return runs[0] if runs else None


def log_new_values(mlflow_client, run_id: str, values: dict[str, float], step: int = 0) -> dict[str, float]:
    """Log each of `values` unless the run's history of that metric already holds it; what was logged.

    An evaluation is deterministic: evaluating the same model again gives the same values, which the
    run keeps once. A different value (the evaluation code changed) is a new point of its history."""
    from mlflow.entities import Metric

    def same(a: float, b: float) -> bool:
        return a == b or (math.isnan(a) and math.isnan(b))

    new = {key: value for key, value in values.items()
           if not any(same(float(value), point.value) for point in mlflow_client.get_metric_history(run_id, key))}
    if new:
        now = int(time.time() * 1000)
        mlflow_client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in new.items()])
    return new


def log_metric_once(run_id: str, key: str, value: float, step: int = 0) -> bool:
    """Log `key` unless the run already has a value of it (a training that finished, was stopped before
    its stage ended, and finishes again); whether it was logged."""
    mlflow_client = client()
    if mlflow_client.get_metric_history(run_id, key):
        return False
    mlflow_client.log_metric(run_id, key, value, step=step)
    return True
