"""Resuming an interrupted training: its checkpoints, whether they may be resumed, and its MLflow run.

checkpoints/EXPERIMENT/ lies outside every DVC output, so DVC's deletion of a stage's outputs before
it reruns does not touch it. While an experiment trains it holds:

    resume.json    the MLflow run id and a fingerprint of what the training depends on
    last.ckpt      the whole training state at the end of every epoch
    requeue.ckpt   the state when SLURM asked the job to make room (SIGUSR1, `--signal=SIGUSR1@90`)
    interrupt.ckpt the state when the training was stopped by SIGTERM or SIGINT
    best.ckpt      the best epoch's state so far, under `checkpoint: best` (under `last`, last.ckpt's are kept)

and beside it checkpoints/EXPERIMENT.lock, which the training holds while it runs (one training of an
experiment at a time).

A training that finishes moves the kept weights into models/EXPERIMENT/best.ckpt and deletes the folder. A training
that starts and finds the folder with the same fingerprint (same params, family code and prepared
data) resumes from the newest checkpoint in it, into the same MLflow run; with another fingerprint it
starts afresh and says why. The decision is made once, in the process DVC started, and handed to
the processes a launcher starts through the environment (RESUME_ENV).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from pipeline import codedeps, files, forkserver
from pipeline.data import shown
from pipeline.config import ExperimentConfig
from pipeline.params import ROOT, ConfigError

CHECKPOINTS = ROOT / "checkpoints"
STATE_FILE = "resume.json"
RESUMABLE = ("requeue.ckpt", "interrupt.ckpt", "last.ckpt")
RESUME_ENV = "MEDL_RESUME"  # {"run_id": ..., "checkpoint": ... | null}, for launched processes
CLOCK_SLACK = 60.0  # seconds a clock update may move a process's creation time between two readings
PARENT_ENV = "MEDL_WATCHED_PARENT"  # "PID:CREATE_TIME" of the dvc process a training dies with
TOKEN_TAG = "resume.token"  # the tag that finds a run created just before a kill


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
    """What a checkpoint's training depends on: the experiment's params, every project file the train
    stage imports for its family (the same set as its DVC code dependencies) and the prepared data's
    description."""
    digest = hashlib.sha256(json.dumps(experiment.flat(), sort_keys=True).encode())
    digest.update(codedeps.digest(*codedeps.family_entries(experiment.family)["train"]).encode())
    meta = ROOT / "data" / "prepared" / experiment.dataset / "meta.json"
    digest.update(meta.read_bytes() if meta.exists() else b"")
    return digest.hexdigest()


def kept(experiment: ExperimentConfig) -> Path:
    """The checkpoint whose weights a finished training keeps: the best epoch's, or the last's."""
    return folder(experiment) / ("best.ckpt" if experiment.checkpoint == "best" else "last.ckpt")


def newest_checkpoint(where: Path) -> Path | None:
    found = [where / name for name in RESUMABLE if (where / name).is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns) if found else None


def begin(experiment: ExperimentConfig, start_run, find_run) -> tuple[Resume, str]:
    """Resume the experiment's interrupted training, or start a new one with `start_run(token)` -> run id.

    resume.json is written before the run is created, with a token the run carries as a tag, and again
    with the run id after: a kill between the two leaves a run that `find_run(token)` finds and the
    next training adopts, never a second run beside a RUNNING one. Returns the decision and a line
    saying what was decided."""
    where = folder(experiment)
    state = _read_state(where / STATE_FILE)
    expected = fingerprint(experiment)
    why_not, run = None, None
    if state is not None and state["run_id"] is None:  # killed around the run's creation
        run = find_run(state.get("token", ""))
        state["run_id"] = run and run.info.run_id
    if state is None:
        why_not = "" if not where.exists() else f"{shown(where / STATE_FILE)} is missing or unreadable"
    elif state["run_id"] is None:
        why_not = ""  # killed before its run was created: nothing to resume
    elif state.get("fingerprint") != expected:
        why_not = "its params, family code or prepared data changed since it was interrupted"
        _abandon(state["run_id"])
    elif run is None and (run := _active_run(state["run_id"])) is None:
        why_not = f"its MLflow run {state['run_id']} is not in the tracking store"
    if why_not is None:
        checkpoint = newest_checkpoint(where)
        if checkpoint is not None:
            _check_readable(checkpoint, experiment)
        _write_state(where, {**state, "run_id": run.info.run_id})
        _reopen_run(run, checkpoint)
        where_from = f"from {shown(checkpoint)}" if checkpoint else "from the start (no checkpoint was written yet)"
        return Resume(run.info.run_id, checkpoint), f"{experiment.name}: resuming {where_from}, MLflow run {run.info.run_id}"
    files.remove(where)
    where.mkdir(parents=True)
    state = {"run_id": None, "fingerprint": expected, "token": uuid.uuid4().hex, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    _write_state(where, state)
    try:
        run_id = start_run(state["token"])
    except ConfigError:  # refused before a run exists (the experiment is not this user's): nothing to resume
        files.remove(where)
        raise
    _write_state(where, {**state, "run_id": run_id})
    note = f"{experiment.name}: starting afresh, not resuming: {why_not}" if why_not else ""
    return Resume(run_id, None), note


def finish(experiment: ExperimentConfig) -> None:
    files.remove(folder(experiment))


def forget_unstarted(experiment: ExperimentConfig) -> bool:
    """After a crash: drop the resume state when no checkpoint was written (there is nothing to resume,
    and the next training starts a run of its own). Whether it was dropped."""
    if newest_checkpoint(folder(experiment)) is not None:
        return False
    files.remove(folder(experiment))
    return True


def _write_state(where: Path, state: dict) -> None:
    files.write_text(where / STATE_FILE, json.dumps(state, indent=2) + "\n")


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
    from mlflow.exceptions import MlflowException  # MLflow and tracking inside functions: as tracking.py

    from pipeline.core import tracking

    try:
        run = tracking.client().get_run(run_id)
    except MlflowException:
        return None
    return run if run.info.lifecycle_stage == "active" else None


def _abandon(run_id: str) -> None:
    """A run that will never be resumed (its experiment changed) is marked KILLED, not left RUNNING."""
    run = _active_run(run_id)
    if run is not None and run.info.status in ("RUNNING", "SCHEDULED"):
        from pipeline.core import tracking

        tracking.client().set_terminated(run_id, "KILLED")


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


class ResumeState(Callback):
    """What a checkpoint must hold, beyond Lightning's own state, for a resumed training to go on as an
    uninterrupted one: the random generators (Python, NumPy, torch's, the GPU's), so that dropout after a resume
    draws what it would have drawn, and the position in the epoch, so that a mid-epoch checkpoint
    resumes with the very next batch (the DataModule's sampler skips the batches done).

    Both come from the public batch hooks. Lightning numbers a resumed epoch's batches on from the
    checkpoint's position, so `batch_idx` counts the batches done before this one. Saved at an
    epoch's end, the random state is restored at once (the next epoch's data loader draws its seed
    from it, in both runs); saved before a batch (StopOnSignal, which comes after this callback),
    it is restored just before that batch, after the resumed epoch's loader was made."""

    def __init__(self):
        self._pending: dict | None = None  # random state to restore before the next batch
        self._position: tuple[int, int] | None = None  # (epoch, batches done) while a fit trains
        self._before_batch = False  # between this callback's batch start and the batch's end
        self._skip: tuple[int, int] | None = None  # a restored position for the sampler
        self.trainer: L.Trainer | None = None  # the fit it is part of (setup)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self.trainer = trainer

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self._position, self._before_batch = None, False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is not None:
            _set_random_state(self._pending)
            self._pending = None
        self._position, self._before_batch = (trainer.current_epoch, batch_idx), True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._position, self._before_batch = (trainer.current_epoch, batch_idx + 1), False

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if self._skip is not None and hasattr(sampler, "skip"):
            sampler.skip(*self._skip)
        self._skip = None

    def state_dict(self) -> dict:
        state = {
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2],
            "torch": torch.get_rng_state(),
            "before_batch": self._before_batch,
        }
        if torch.cuda.is_initialized():  # dropout and noise on a GPU draw from its generator, not the CPU's
            state["cuda"] = torch.cuda.get_rng_state()  # this process's device
        if self._position is not None and self.trainer is not None and self.trainer.training:  # not while validating
            state["epoch"], state["batches_done"] = self._position
        try:
            import numpy as np

            kind, keys, pos, has_gauss, cached = np.random.get_state()
            state["numpy"] = {"keys": torch.from_numpy(keys.astype("int64")), "pos": pos, "has_gauss": has_gauss, "cached": cached}
        except ImportError:
            pass
        return state

    def load_state_dict(self, state: dict) -> None:
        if "batches_done" in state:
            self._skip = (state["epoch"], state["batches_done"])
        if state.get("before_batch"):
            self._pending = state
        else:
            _set_random_state(state)


def _set_random_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
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


class Interrupted(Exception):
    """Training stopped by SIGTERM or SIGINT: after saving interrupt.ckpt when it was fitting, at once
    otherwise. The stage exits 128 + the signal's number, as a process killed by it would, so that no
    caller (DVC, SLURM, `timeout`) mistakes the stop for success."""

    def __init__(self, signum: int, saved: Path | None = None, where: str = ""):
        name = signal.Signals(signum).name
        kept = f"saved {shown(saved)}{where}, `dvc repro` resumes from there" if saved else "no checkpoint saved now"
        super().__init__(f"stopped by {name}; {kept}")
        self.signum = signum


def requeue(job: str) -> None:
    """`scontrol requeue JOB`, as Lightning's SLURM plugin does. SLURM stops the running job at once,
    so whatever must be written or printed before the requeued job starts comes first."""
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"scontrol requeue {job} failed: {result.stderr.strip()}")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal(Callback):
    """SIGTERM, SIGINT and (under SLURM) SIGUSR1, handled the same way: while fitting, the signal is
    noted and, before the next training batch, on every process at the same batch, the training state
    is saved and the fit stops: with `Interrupted` (interrupt.ckpt) or, for SLURM's warning before a
    time limit or preemption (`#SBATCH --signal=SIGUSR1@90`), with `Requeued` (requeue.ckpt), after
    which the stage requeues the job. Outside the fit (start-up, the final writes) SIGTERM and SIGINT
    raise `Interrupted` at once: every write there is atomic, and the state left behind resumes.

    Lightning's own SIGTERM handler stops after the current batch and exits with status 0; its SLURM
    handler saves wherever the signal lands, in the middle of a step. This one waits for the step to
    end, so that the resumed training is the uninterrupted one, and the stop is never a success."""

    def __init__(self, folder: Path, slurm: bool):
        self.folder = folder
        self.signals = (*STOP_SIGNALS, signal.SIGUSR1) if slurm else STOP_SIGNALS
        self.requested: int | None = None
        self.fitting = False

    def install(self) -> None:
        """Take the signals, from the start of the stage (before the Trainer: Lightning then leaves
        SIGUSR1 to this handler)."""
        for signum in self.signals:
            signal.signal(signum, self._request)

    def _request(self, signum, frame) -> None:
        if self.fitting and self.requested is None:
            self.requested = signum
        elif signum in STOP_SIGNALS:  # outside the fit, or a second signal: stop now
            raise Interrupted(signum)

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.fitting = True

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.install()  # again: the Trainer has just set its own SIGTERM handler

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        requested = self.requested or 0
        if trainer.world_size > 1:  # every process stops at the same batch if any was signalled
            flag = torch.tensor([requested], device=pl_module.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = int(flag.item())
        if not requested:
            return
        where = f" at epoch {trainer.current_epoch}, step {trainer.global_step}"
        if requested == signal.SIGUSR1:
            path = self.folder / "requeue.ckpt"
            trainer.save_checkpoint(path)
            job = os.environ.get("SLURM_JOB_ID", "")
            if os.environ.get("SLURM_ARRAY_JOB_ID"):
                job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
            raise Requeued(f"saved {shown(path)}{where}; requeueing SLURM job {job or '?'}, it resumes from there", job)
        path = self.folder / "interrupt.ckpt"
        trainer.save_checkpoint(path)
        raise Interrupted(requested, path, where)

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        self.fitting = False
        if self.requested in STOP_SIGNALS:  # it came after the last batch: the last epoch's checkpoint resumes
            raise Interrupted(self.requested, newest_checkpoint(self.folder))


# ---------------------------------------------------------------------------------------------
# One training of an experiment at a time, and none that outlives the dvc process that started it.

_HELD: list[int] = []  # lock file descriptors, held until the process (or the launcher it becomes) ends


def hold_lock(experiment: ExperimentConfig) -> None:
    """Hold checkpoints/EXPERIMENT.lock (an flock, released by the kernel when the process ends, however
    it ends). A second training of the same experiment, e.g. a `dvc repro` beside an orphaned one,
    stops at once with one line naming the holder."""
    path = CHECKPOINTS / f"{experiment.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(f"experiments.{experiment.name}: already training ({holder}); wait for it to end, "
                          f"or stop it, then rerun") from None
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    # the command's process, which the user sees and may stop (a fork server's child is not it)
    os.pwrite(fd, f"process {forkserver.client_pid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
    os.set_inheritable(fd, True)  # a launcher this process becomes (exec) keeps holding it
    _HELD.append(fd)


def watch_parent(experiment: ExperimentConfig) -> None:
    """Under DVC, stop this training (as SIGTERM does) when the dvc process that started it ends, e.g.
    killed by SIGTERM: DVC does not pass the signal on, and an orphaned training would go on writing
    beside the next `dvc repro`. The dvc process is the nearest ancestor that is not the shell DVC runs
    the stage's command with; processes a launcher starts watch the same one (PARENT_ENV)."""
    import psutil  # a dependency of DVC

    from pipeline import forkserver

    watched = os.environ.get(PARENT_ENV)
    if watched is None:
        if not os.environ.get("DVC_STAGE"):  # not started by DVC: a user's own shell, nohup, sbatch
            return
        # the command's process: under the fork server this process's parent is the server's
        parent = psutil.Process(forkserver.client_pid()).parent()
        while parent is not None and parent.name() in ("sh", "dash", "bash", "zsh", "fish") and "-c" in parent.cmdline():
            parent = parent.parent()
        if parent is None:
            return
        watched = f"{parent.pid}:{parent.create_time()}"
        os.environ[PARENT_ENV] = watched
    if not re.fullmatch(r"\d+:\d+(\.\d+)?", watched):  # set by this function, but the environment is the user's
        raise ConfigError(f"{PARENT_ENV}: must be PID:CREATE_TIME, got {watched[:40]!r}; unset it and rerun")
    pid, created = int(watched.split(":")[0]), float(watched.split(":")[1])
    try:
        # The creation time is the boot time plus the process's start since boot, and the boot time moves
        # with every update of the system clock: compared loosely, once (a reused pid differs by far more).
        process = psutil.Process(pid)
        if abs(process.create_time() - created) > CLOCK_SLACK:
            process = None
    except psutil.NoSuchProcess:
        process = None

    def alive() -> bool:
        # is_running compares the start since boot, which the clock does not move. A dvc that has exited
        # but is not yet reaped by its own parent is a zombie: ended all the same.
        try:
            return process is not None and process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def watch() -> None:
        while alive():
            time.sleep(1.0)
        print(f"{experiment.name}: the dvc process that started this training ({pid}) has ended; stopping",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
