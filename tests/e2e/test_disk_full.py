"""A full disk, a damaged tracking store, and checkpoints that stay whole (issue 20, items 3, 6, 10).

Each machine error ends a stage with one line naming the file and what to do, exit 2 (pipeline.cli),
and leaves nothing half-written that a later run would trust. The full disks are real: a tmpfs of a
few MiB mounted for the test and filled, which needs root in a container that allows `mount`; those
tests are skipped, with the reason, where it does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import env, python
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from pipeline import cli, files
from pipeline.core import resume
from pipeline.core.trainer import LearningCurve, build_trainer
from pipeline.params import load_experiment


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A filesystem of `size` (mount's units: 2m) at `where` while the block runs."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command: a small full filesystem cannot be made here")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()}): needs root where mount is permitted")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def disk(tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as where:
        yield where


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` but `leave` bytes (in whole pages); returns the filler file, to delete to free the space."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(bytes(4096))
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


# ---------------------------------------------------------------------------------------------
# Checkpoints: written beside their final name, last.ckpt a file of the latest epoch (items 3, 6)


class Toy(L.LightningModule):
    """val/loss is `losses[epoch]`; each checkpoint carries `padding` bytes more."""

    def __init__(self, losses: list[float]):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.losses = losses
        self.padding = 0

    def training_step(self, batch, _):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, _):
        self.log("val/loss", self.losses[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["padding"] = torch.zeros(self.padding, dtype=torch.uint8)


def fit_like_the_pipeline(folder: Path, model, epochs: int, checkpoint: str = "best"):
    """`model` fitted by a Trainer with the pipeline's checkpoint callbacks and checkpoint writer
    (pipeline.core.trainer.build_trainer's), `checkpoint` best by val/loss or last; no logger, no progress bar."""
    _, experiment = load_experiment("mlp_digits")
    experiment = dataclasses.replace(experiment, checkpoint=checkpoint, max_epochs=epochs, early_stopping=dataclasses.replace(
        experiment.early_stopping, monitor="val/loss", mode="min", patience=0))
    built = build_trainer(experiment, folder, "http://127.0.0.1:9", None, LearningCurve())  # never asked: no logger below
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, plugins=[built.strategy.checkpoint_io],
                        callbacks=[callback for callback in built.callbacks if isinstance(callback, ModelCheckpoint)])
    batches = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)
    trainer.fit(model, batches, batches)
    return trainer


def epoch_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def test_a_checkpoint_is_never_written_under_tmpdir(tmp_path, monkeypatch):
    unusable = tmp_path / "no_such_tmpdir"  # another filesystem on a cluster; here, a folder nothing can write to
    monkeypatch.setenv("TMPDIR", str(unusable))
    monkeypatch.setattr(tempfile, "tempdir", str(unusable))
    fit_like_the_pipeline(tmp_path / "checkpoints", Toy([3.0, 1.0]), epochs=2)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best.ckpt", "last.ckpt"]
    assert not unusable.exists()


def test_last_ckpt_holds_the_latest_epoch_after_one_that_did_not_improve(tmp_path):
    folder = tmp_path / "checkpoints"
    fit_like_the_pipeline(folder, Toy([3.0, 1.0, 2.0, 2.5]), epochs=4)  # best at epoch 1, then worse twice
    assert not (folder / "last.ckpt").is_symlink()
    assert epoch_of(folder / "last.ckpt") == 3
    assert epoch_of(folder / "best.ckpt") == 1


def test_checkpoint_last_writes_one_file_an_epoch_and_keeps_it(tmp_path, monkeypatch):
    # Without a monitor the kept weights are the last epoch's: a second file of the same state would be
    # serialized and synced again every epoch.
    folder = tmp_path / "checkpoints"
    saved = []
    monkeypatch.setattr(files, "replacing", recording(files.replacing, saved))
    fit_like_the_pipeline(folder, Toy([3.0, 1.0, 2.0]), epochs=3, checkpoint="last")
    assert sorted(os.listdir(folder)) == ["last.ckpt"]
    assert [path.name for path in saved] == ["last.ckpt"] * 3
    assert epoch_of(folder / "last.ckpt") == 2
    _, experiment = load_experiment("mlp_digits")
    monkeypatch.setattr(resume, "CHECKPOINTS", tmp_path / "checkpoints")
    assert resume.kept(dataclasses.replace(experiment, checkpoint="last")) == tmp_path / "checkpoints" / "mlp_digits" / "last.ckpt"
    assert resume.kept(dataclasses.replace(experiment, checkpoint="best")) == tmp_path / "checkpoints" / "mlp_digits" / "best.ckpt"


def recording(replacing, saved: list):
    """files.replacing, noting each path it writes."""
    def record(path, size=None):
        saved.append(Path(path))
        return replacing(path, size)
    return record


def test_a_checkpoint_save_that_finds_the_disk_full_keeps_the_previous_one_whole(disk, tmp_path):
    folder = disk / "checkpoints"
    model = Toy([3.0])
    trainer = fit_like_the_pipeline(folder, model, epochs=1)
    previous = (folder / "last.ckpt").read_bytes()
    fill(disk, leave=8192)
    model.padding = 256 << 10  # a checkpoint bigger than the space left, even with the old one's freed
    with pytest.raises(Exception) as raised:
        trainer.save_checkpoint(folder / "last.ckpt")
    assert (folder / "last.ckpt").read_bytes() == previous  # not cut short, as by a copy from $TMPDIR
    assert sorted(os.listdir(folder)) == ["best.ckpt", "last.ckpt"]  # no temporary file left
    assert isinstance(raised.value, files.DiskFull)
    assert re.fullmatch(r".*/disk/checkpoints/last\.ckpt: no space left on device \(2\d\d\.\d KiB to write, \d+\.\d KiB "
                        r"free there\); free some space, then rerun: nothing was replaced", str(raised.value))


# ---------------------------------------------------------------------------------------------
# Stages on a full disk (item 6)


def test_train_on_a_full_checkpoint_disk_stops_in_one_line_and_resumes_once_there_is_space(project, disk):
    python("-m", "pipeline.prepare", cwd=project)
    (project / "checkpoints").symlink_to(disk, target_is_directory=True)  # the user's checkpoints on a small disk
    filler = fill(disk, leave=16 << 10)  # room for the resume state, not for a checkpoint
    result = python("-m", "pipeline.train", "mlp_digits", cwd=project, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # Lightning resolves the checkpoint folder's symlinks: the line names the file on the disk that is full
    assert re.fullmatch(rf"error: {re.escape(os.path.realpath(disk))}/mlp_digits/(best|last)\.ckpt: no space left on device "
                        r"\([\d.]+ KiB to write, [\d.]+ KiB free there\); free some space, then rerun: nothing was replaced",
                        result.stderr.strip().splitlines()[-1]), result.stderr[-2000:]
    assert not list((disk / "mlp_digits").glob("*.ckpt")) and not list((disk / "mlp_digits").glob(".*"))
    assert not (project / "models" / "mlp_digits").exists()
    filler.unlink()
    python("-m", "pipeline.train", "mlp_digits", cwd=project)
    assert (project / "models" / "mlp_digits" / "best.ckpt").is_file()


def test_a_full_disk_under_the_tracking_store_is_one_line(project, disk):
    python("-m", "pipeline.prepare", cwd=project)
    store = disk / "mlflow.db"
    tracking = {"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    subprocess.run([sys.executable, "-c", "from pipeline.core import tracking; tracking.client()"], cwd=project,
                   env={**env(), **tracking}, check=True, capture_output=True)
    fill(disk)
    result = subprocess.run([sys.executable, "-m", "pipeline.train", "mlp_digits"], cwd=project, env={**env(), **tracking},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"error: {store}: no space left on device (database or disk is full); free some space, then rerun"]


# ---------------------------------------------------------------------------------------------
# A damaged tracking store (item 10)


def snapshot(project: Path) -> dict[str, bytes]:
    """Every file of the copy with its content, but the locks (the store's, an experiment's): files made
    to be taken, not outputs."""
    return {str(p.relative_to(project)): p.read_bytes() for p in project.rglob("*") if p.is_file() and p.suffix != ".lock"}


def test_a_damaged_store_stops_train_in_one_line_with_nothing_written(project):
    python("-m", "pipeline.prepare", cwd=project)
    python("-c", "from pipeline.core import tracking; tracking.client()", cwd=project)  # a real store, empty
    real = (project / "mlflow.db").read_bytes()
    damages = {"file is not a database": os.urandom(64 << 10),
               "database disk image is malformed": real[: len(real) // 2]}  # cut short by a full disk or a copy
    for message, content in damages.items():
        (project / "mlflow.db").write_bytes(content)
        before = snapshot(project)
        result = python("-m", "pipeline.train", "mlp_digits", cwd=project, check=False)
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.splitlines() == [
            f"error: mlflow.db: not a readable MLflow store ({message}); move it aside (mv mlflow.db mlflow.db.damaged) "
            "to start a new store, or restore it from a backup"]
        assert snapshot(project) == before


# ---------------------------------------------------------------------------------------------
# pipeline.cli.run: the machine's errors however deep a library wraps them, and no other error


def failing(error: BaseException):
    def main(argv):
        raise error
    return main


def wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    """`outer` raised from `inner`, as a library re-raises."""
    try:
        try:
            raise inner
        except BaseException as caught:
            raise outer from caught
    except BaseException as raised:
        return raised


def test_a_full_disk_deep_in_a_library_is_one_line_naming_the_file(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(files, "ROOT", tmp_path)
    copy = OSError(errno.ENOSPC, "No space left on device")
    copy.filename, copy.filename2 = str(tmp_path / "checkpoints" / "x" / "best.ckpt"), str(tmp_path / "models" / "x" / "best.ckpt")
    cases = {
        wrapped(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "plots" / "a.csv")), RuntimeError("save failed")):
            "plots/a.csv",
        wrapped(copy, RuntimeError("copy failed")): "models/x/best.ckpt",  # a copy's destination, not its source
        OSError(errno.EDQUOT, "Disk quota exceeded", "/elsewhere/file"): "/elsewhere/file",
    }
    for error, named in cases.items():
        assert cli.run(failing(error), []) == 2
        assert capsys.readouterr().err == f"error: {named}: no space left on device; free some space, then rerun\n"


def test_a_store_error_deep_in_a_library_names_the_store(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(files, "ROOT", tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/runs/mlflow.db")
    full = wrapped(sqlite3.OperationalError("database or disk is full"), RuntimeError("(sqlite3.OperationalError) ..."))
    assert cli.run(failing(full), []) == 2
    assert capsys.readouterr().err == "error: runs/mlflow.db: no space left on device (database or disk is full); free some space, then rerun\n"
    damaged = wrapped(sqlite3.DatabaseError("file is not a database"), RuntimeError("MlflowException"))
    assert cli.run(failing(damaged), []) == 2
    assert capsys.readouterr().err == (
        "error: runs/mlflow.db: not a readable MLflow store (file is not a database); move it aside "
        "(mv runs/mlflow.db runs/mlflow.db.damaged) to start a new store, or restore it from a backup\n")
    for other in (wrapped(sqlite3.OperationalError("database is locked"), RuntimeError("busy")), RuntimeError("a bug"),
                  OSError(errno.EACCES, "Permission denied", "/x")):  # not the machine's: their tracebacks stay
        with pytest.raises(type(other)):
            cli.run(failing(other), [])

