"""A training stopped at any moment, by SIGKILL, SIGTERM, SIGINT, a crash or the end of the dvc process that
started it, resumes or finishes cleanly when its stage runs again: one MLflow run, ending FINISHED, with every
metric once, and never two trainings of one experiment at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import checkpoint_epoch, copy_project, dvc, env, git_init, python, shrink_params

pytestmark = pytest.mark.slow

EXPERIMENT = "softmax_digits"
EPOCHS = 3
LONG = 150  # epochs enough that a signal sent after epoch 1 lands mid-training on a loaded runner


def make_project(path: Path, epochs: int = EPOCHS, experiment: str = EXPERIMENT) -> Path:
    project = copy_project(path)
    raw = shrink_params(project / "params.yaml", epochs=epochs, keep=(experiment,))
    raw["experiments"][experiment]["max_epochs"] = epochs
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    python("-m", "pipeline.prepare", cwd=project)
    return project


def runs(project: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


def assert_finished_once(project: Path, experiment: str = EXPERIMENT, epochs: int = EPOCHS) -> None:
    """One run, FINISHED, every epoch's metrics once, the model and curves in place, no resume state left."""
    client, found = runs(project)
    assert [r.info.status for r in found] == ["FINISHED"], [(r.info.run_id, r.info.status) for r in found]
    [run] = found
    summary = json.loads((project / "runs" / f"{experiment}.json").read_text())
    assert summary["mlflow_run_id"] == run.info.run_id and summary["epochs_trained"] == epochs
    assert (project / "models" / experiment / "best.ckpt").is_file()
    for key in ("val/loss", "train/loss", "train/seconds"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), f"{key}: duplicated steps {sorted(steps)}"
    for key in ("val/loss", "train/loss"):  # MLflow's step is the epoch, each epoch once
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(epochs)), key
    curve = (project / "plots" / "learning_curves" / f"{experiment}.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in curve[1:]] == [str(e) for e in range(epochs)]
    assert not (project / "checkpoints" / experiment).exists()


# A SIGKILL injected at one moment of the train stage: just before or after a function of the pipeline, MLflow or
# Lightning runs (a fresh training writes resume.json first before its run is created).
KILL_WRAPPER = """
import importlib, os, signal, sys
module, name, when, experiment = sys.argv[1:5]
owner = importlib.import_module(module)
for part in name.split(".")[:-1]:
    owner = getattr(owner, part)
original = getattr(owner, name.split(".")[-1])
def wrapped(*args, **kwargs):
    if when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    if when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, name.split(".")[-1], wrapped)
sys.argv = ["pipeline.train", experiment]
from pipeline import cli, train
cli.run_and_exit(train.main)
"""

KILL_POINTS = {
    "before-the-run-is-created": ("pipeline.core.resume", "_write_state", "after"),
    "right-after-the-run-row-appears": ("mlflow.tracking.client", "MlflowClient.create_run", "after"),
    "after-the-found-run-is-reopened": ("pipeline.core.resume", "_reopen_run", "after"),
    "after-the-first-epoch-is-saved": ("lightning.pytorch.callbacks", "ModelCheckpoint.on_train_epoch_end", "after"),
    "after-the-last-epoch-before-the-run-is-finalized": ("lightning.pytorch.loggers", "MLFlowLogger.finalize", "before"),
    "after-the-model-is-staged-before-the-curves": ("pipeline.core.trainer", "LearningCurve.write", "before"),
    "after-the-model-is-in-place": ("pipeline.core.resume", "finish", "before"),
}


def test_a_kill_at_each_moment_then_a_rerun_finishes_in_one_run(tmp_path):
    """Each training is killed at a later moment than the one before, so each must first recover from the
    previous kill; the last runs to the end."""
    project = make_project(tmp_path / "project")
    for point, (module, name, when) in KILL_POINTS.items():
        killed = subprocess.run([sys.executable, "-c", KILL_WRAPPER, module, name, when, EXPERIMENT], cwd=project,
                                env=env(), capture_output=True, text=True, timeout=600)
        assert killed.returncode == -signal.SIGKILL, f"{point}:\n{killed.stderr[-3000:]}"

    again = python("-m", "pipeline.train", EXPERIMENT, cwd=project)

    assert "Traceback" not in again.stderr
    assert_finished_once(project)


def test_a_crash_before_the_first_checkpoint_leaves_a_failed_run_and_nothing_to_resume(tmp_path):
    project = make_project(tmp_path / "project")
    crash = ("import sys; from pipeline import cli, datamodules, train\n"
             "def out_of_memory(*args, **kwargs): raise MemoryError('simulated')\n"
             f"datamodules.make_datamodule = out_of_memory; sys.argv = ['pipeline.train', '{EXPERIMENT}']\n"
             "cli.run_and_exit(train.main)")
    crashed = subprocess.run([sys.executable, "-c", crash], cwd=project, env=env(), capture_output=True, text=True,
                             timeout=600)
    assert crashed.returncode == 1 and "MemoryError: simulated" in crashed.stderr
    _, found = runs(project)
    assert [r.info.status for r in found] == ["FAILED"]
    assert not (project / "checkpoints" / EXPERIMENT).exists()  # no resume.json pointing at it

    python("-m", "pipeline.train", EXPERIMENT, cwd=project)
    _, found = runs(project)
    assert sorted(r.info.status for r in found) == ["FAILED", "FINISHED"]


def start_training(project: Path, *command: str) -> subprocess.Popen:
    return subprocess.Popen(list(command) or [sys.executable, "-m", "pipeline.train", EXPERIMENT], cwd=project, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_epoch(project: Path, process: subprocess.Popen, epoch: int = 1, experiment: str = EXPERIMENT) -> None:
    last = project / "checkpoints" / experiment / "last.ckpt"
    deadline = time.monotonic() + 300
    while checkpoint_epoch(last) < epoch:
        assert process.poll() is None, f"training ended first:\n{process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} within 300 s"
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_with_a_line_a_non_zero_status_and_a_killed_resumable_run(tmp_path, signum):
    project = make_project(tmp_path / "project", epochs=LONG)
    training = start_training(project)
    wait_for_epoch(project, training)
    training.send_signal(signum)
    _, stderr = training.communicate(timeout=120)

    assert training.returncode == 128 + signum, stderr[-3000:]
    name = signal.Signals(signum).name
    assert stderr.strip().splitlines()[-1].startswith(
        f"{EXPERIMENT}: stopped by {name}; saved checkpoints/{EXPERIMENT}/interrupt.ckpt at epoch "), stderr[-3000:]
    assert "Traceback" not in stderr
    _, [run] = runs(project)
    assert run.info.status == "KILLED"
    assert (project / "checkpoints" / EXPERIMENT / "interrupt.ckpt").is_file()
    assert not (project / "models" / EXPERIMENT).exists()

    again = subprocess.run([sys.executable, "-m", "pipeline.train", EXPERIMENT], cwd=project, env=env(),
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{EXPERIMENT}: resuming from checkpoints/{EXPERIMENT}/interrupt.ckpt" in again.stdout
    assert_finished_once(project, epochs=LONG)


def test_a_second_training_of_the_same_experiment_is_refused_with_the_holder_named(tmp_path):
    # Far more epochs than the first can train while the second starts: it is stopped in `finally`.
    project = make_project(tmp_path / "project", epochs=LONG * 20)
    first = start_training(project)
    try:
        wait_for_epoch(project, first)
        second = python("-m", "pipeline.train", EXPERIMENT, cwd=project, check=False)
        assert second.returncode == 2
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"error: experiments.{EXPERIMENT}: already training (process {first.pid} on "), line
        assert line.endswith("wait for it to end, or stop it, then rerun")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    _, found = runs(project)
    assert len(found) == 1


def test_a_training_dies_with_the_dvc_process_that_started_it_and_the_next_repro_resumes(tmp_path):
    import psutil

    project = make_project(tmp_path / "project", epochs=LONG)
    git_init(project)
    repro = start_training(project, sys.executable, "-m", "dvc", "repro", f"train@{EXPERIMENT}")
    wait_for_epoch(project, repro)
    # Match the python process itself: without SHELL, DVC runs the stage through /bin/sh, which stays
    # between dvc and python (it does not exec a command line that ends in a comment).
    [trainer] = [p for p in psutil.Process(repro.pid).children(recursive=True)
                 if p.cmdline()[1:3] == ["-m", "pipeline.train"]]
    repro.send_signal(signal.SIGTERM)  # to dvc alone, as `kill PID` does; DVC does not pass it on
    repro.communicate(timeout=60)
    trainer.wait(timeout=60)  # it stops by itself, rather than training on as an orphan
    _, [run] = runs(project)
    assert run.info.status == "KILLED"

    again = dvc("repro", f"train@{EXPERIMENT}", cwd=project)
    assert f"{EXPERIMENT}: resuming from checkpoints/{EXPERIMENT}/interrupt.ckpt" in again.stdout
    assert_finished_once(project, epochs=LONG)


def test_a_model_too_large_for_memory_is_refused_before_any_run(tmp_path):
    project = make_project(tmp_path / "project", experiment="mlp_digits")
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["experiments"]["mlp_digits"]["model"]["hidden_sizes"] = [100_000_000]
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    result = python("-m", "pipeline.train", "mlp_digits", cwd=project, check=False)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: experiments.mlp_digits.model: ") and " parameters need " in line, line
    assert line.endswith("make the model smaller")
    assert not (project / "mlflow.db").exists() and not (project / "checkpoints" / "mlp_digits").exists()
