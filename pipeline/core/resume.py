"""Resuming an interrupted training: its checkpoints, whether they may be resumed, and its MLflow run.

checkpoints/EXPERIMENT/ lies outside every DVC output, so DVC's deletion of a stage's outputs before
it reruns does not touch it. While an experiment trains it holds:

    resume.json    the MLflow run id and a fingerprint of what the training depends on
    last.ckpt      the whole training state at the end of every epoch (Lightning's save_last)
    requeue.ckpt   the state when SLURM asked the job to make room (SIGUSR1, `--signal=SIGUSR1@90`)
    best.ckpt      the weights kept so far (`checkpoint: last` or `best`)

A training that finishes moves best.ckpt into models/EXPERIMENT/ and deletes the folder. A training
that starts and finds the folder with the same fingerprint (same params, family code and prepared
data) resumes from the newest checkpoint in it, into the same MLflow run; with another fingerprint it
starts afresh and says why. The decision is made once, in the process DVC started, and handed to
the processes a launcher starts through the environment (RESUME_ENV).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from pipeline.data import shown
from pipeline.params import ROOT, ConfigError, ExperimentConfig

CHECKPOINTS = ROOT / "checkpoints"
STATE_FILE = "resume.json"
RESUMABLE = ("requeue.ckpt", "last.ckpt")
RESUME_ENV = "MEDL_RESUME"  # {"run_id": ..., "checkpoint": ... | null}, for launched processes


@dataclass(frozen=True)
class Resume:
    run_id: str
    checkpoint: Path | None  # None: train from the start

    def export(self) -> None:
        """Hand the decision to processes started from this one (torchrun, srun, Lightning's DDP)."""
        os.environ[RESUME_ENV] = json.dumps({"run_id": self.run_id, "checkpoint": self.checkpoint and str(self.checkpoint)})

    @staticmethod
    def inherited() -> Resume | None:
        raw = os.environ.get(RESUME_ENV)
        if not raw:
            return None
        value = json.loads(raw)
        return Resume(value["run_id"], value["checkpoint"] and Path(value["checkpoint"]))


def folder(experiment: ExperimentConfig) -> Path:
    return CHECKPOINTS / experiment.name


def fingerprint(experiment: ExperimentConfig) -> str:
    """What a checkpoint's training depends on: the experiment's params, its family's code, the
    shared training code and the prepared data's description."""
    digest = hashlib.sha256(json.dumps(experiment.flat(), sort_keys=True).encode())
    for path in (
        ROOT / "modules" / f"{experiment.family}.py",
        ROOT / "modules" / "linear_regression.py",  # imported by other families (a dependency of every train stage)
        ROOT / "pipeline" / "core" / "supervised.py",
        ROOT / "data" / "prepared" / experiment.dataset / "meta.json",
    ):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def newest_checkpoint(where: Path) -> Path | None:
    found = [where / name for name in RESUMABLE if (where / name).is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns) if found else None


def begin(experiment: ExperimentConfig, start_run) -> tuple[Resume, str]:
    """Resume the experiment's interrupted training, or start a new one with `start_run()` -> run id.

    Returns the decision and a line saying what was decided."""
    where = folder(experiment)
    state = _read_state(where / STATE_FILE)
    expected = fingerprint(experiment)
    why_not, run = None, None
    if state is None:
        why_not = "" if not where.exists() else f"{shown(where / STATE_FILE)} is missing or unreadable"
    elif state.get("fingerprint") != expected:
        why_not = "its params, family code or prepared data changed since it was interrupted"
    elif (run := _active_run(state["run_id"])) is None:
        why_not = f"its MLflow run {state['run_id']} is not in the tracking store"
    if why_not is None:
        checkpoint = newest_checkpoint(where)
        if checkpoint is not None:
            _check_readable(checkpoint, experiment)
        _reopen_run(run, checkpoint)
        where_from = f"from {shown(checkpoint)}" if checkpoint else "from the start (no checkpoint was written yet)"
        return Resume(state["run_id"], checkpoint), f"{experiment.name}: resuming {where_from}, MLflow run {state['run_id']}"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    run_id = start_run()
    state = {"run_id": run_id, "fingerprint": expected, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    tmp = where / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(where / STATE_FILE)
    note = f"{experiment.name}: starting afresh, not resuming: {why_not}" if why_not else ""
    return Resume(run_id, None), note


def finish(experiment: ExperimentConfig) -> None:
    shutil.rmtree(folder(experiment), ignore_errors=True)


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
        return state if isinstance(state, dict) and {"run_id", "fingerprint"} <= state.keys() else None
    except (OSError, ValueError):
        return None


def _check_readable(checkpoint: Path, experiment: ExperimentConfig) -> None:
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise ConfigError(
            f"{shown(checkpoint)}: unreadable checkpoint ({type(error).__name__}); to train from the start instead, "
            f"delete {shown(checkpoint.parent)} and run `dvc repro train@{experiment.name}`"
        ) from None


def _active_run(run_id: str):
    """The MLflow run, if the tracking store has it and it is not deleted; else None."""
    from mlflow.exceptions import MlflowException

    from pipeline.core import tracking

    try:
        run = tracking.client().get_run(run_id)
    except MlflowException:
        return None
    return run if run.info.lifecycle_stage == "active" else None


def _reopen_run(run, checkpoint: Path | None) -> None:
    from pipeline.core import tracking

    client, run_id = tracking.client(), run.info.run_id
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "resume.count", str(int(run.data.tags.get("resume.count", "0")) + 1))
    client.set_tag(run_id, "resume.checkpoint", str(shown(checkpoint)) if checkpoint else "none")
    if os.environ.get("SLURM_JOB_ID"):
        client.set_tag(run_id, "slurm.job_id", os.environ["SLURM_JOB_ID"])


# ---------------------------------------------------------------------------------------------
# Callbacks: what a checkpoint must hold beyond Lightning's own state for a resumed training to
# continue exactly as an uninterrupted one; and SLURM's requeue signal.


class RandomState(Callback):
    """The random generators (Python, NumPy, torch) in every checkpoint, so that dropout after a
    resume draws what it would have drawn. Saved at an epoch's end, the state is restored at once
    (the next epoch's data loader draws its seed from it, in both runs); saved before a batch (a
    requeue), it is restored just before that batch, after the resumed epoch's loader was made."""

    def __init__(self):
        self._pending: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        progress = self._trainer.fit_loop.epoch_loop.batch_progress.current
        state = {
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2],
            "torch": torch.get_rng_state(),
            "before_batch": progress.ready > progress.completed,
        }
        try:
            import numpy as np

            kind, keys, pos, has_gauss, cached = np.random.get_state()
            state["numpy"] = {"keys": torch.from_numpy(keys.astype("int64")), "pos": pos, "has_gauss": has_gauss, "cached": cached}
        except ImportError:
            pass
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("before_batch"):
            self._pending = state
        else:
            _set_random_state(state)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is not None:
            _set_random_state(self._pending)
            self._pending = None


def _set_random_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        numpy = state["numpy"]
        np.random.set_state(("MT19937", numpy["keys"].numpy().astype("uint32"), numpy["pos"], numpy["has_gauss"], numpy["cached"]))


class Requeued(Exception):
    """Training stopped after saving requeue.ckpt because SLURM asked for the job's resources; the
    caller records that, then calls `requeue(job)` (which ends this job: SLURM kills it on requeue)."""

    def __init__(self, message: str, job: str):
        super().__init__(message)
        self.job = job


def requeue(job: str) -> None:
    """`scontrol requeue JOB`, as Lightning's SLURM plugin does. SLURM stops the running job at once,
    so whatever must be written or printed before the requeued job starts comes first."""
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"scontrol requeue {job} failed: {result.stderr.strip()}")


class RequeueOnSignal(Callback):
    """SLURM's warning before a time limit or preemption (SIGUSR1, from `#SBATCH --signal=SIGUSR1@90`
    or `scancel --signal=USR1`): before the next training batch, on every process at the same
    batch, save requeue.ckpt and stop with `Requeued`; the train stage then requeues the job. The
    requeued job's train stage resumes from requeue.ckpt.

    Lightning's own handler saves wherever the signal lands, in the middle of a step; this one waits
    for the step to end so that the resumed training is the uninterrupted one."""

    def __init__(self, path: Path, signum: int = signal.SIGUSR1):
        self.path, self.signum = path, signum
        self.requested = False

    def install(self) -> None:
        """Take the signal (before the Trainer starts, so Lightning leaves it to this handler)."""
        signal.signal(self.signum, self._request)

    def _request(self, signum, frame) -> None:
        self.requested = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        requested = self.requested
        if trainer.world_size > 1:  # every process stops at the same batch if any was signalled
            flag = torch.tensor([int(requested)], device=pl_module.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        if not requested:
            return
        trainer.save_checkpoint(self.path)
        job = os.environ.get("SLURM_JOB_ID", "")
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        raise Requeued(f"saved {shown(self.path)} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                       f"requeueing SLURM job {job or '?'}, it resumes from there", job)
