"""The launcher prefix of the train and evaluate commands, from params: none, torchrun or srun.

`python -m pipeline.train EXPERIMENT` (DVC's command; likewise pipeline.evaluate) validates
everything, then, when the experiment names a launcher and this process was not started by it,
replaces itself with

    torchrun --nproc-per-node DEVICES --nnodes NUM_NODES [args] -m pipeline.train EXPERIMENT
    srun --nodes NUM_NODES --ntasks-per-node DEVICES [args] python -m pipeline.train EXPERIMENT

so `dvc repro` stays the orchestrator. Lightning detects torchelastic and SLURM from the
environment the launcher sets; SLURM needs --ntasks-per-node equal to the Trainer's devices.
"""

from __future__ import annotations

import os
import shutil
import sys

from pipeline.config import ExperimentConfig
from pipeline.params import ConfigError

LAUNCHED = "MEDL_LAUNCHED_BY"  # set in the launched processes' environment: no second launch


def command(experiment: ExperimentConfig, python: str = sys.executable, module: str = "pipeline.train") -> list[str] | None:
    """The launcher command running `module` for `experiment`, or None when this process runs it itself."""
    launcher, trainer = experiment.launcher, experiment.trainer
    train = ["-m", module, experiment.name]
    if launcher.name == "none" or os.environ.get(LAUNCHED):
        return None
    if launcher.name == "torchrun":
        # torchrun is torch.distributed.run; through this interpreter it needs nothing on PATH.
        return [python, "-m", "torch.distributed.run", f"--nproc-per-node={trainer.devices}",
                f"--nnodes={trainer.num_nodes}", *launcher.args, *train]
    return ["srun", f"--nodes={trainer.num_nodes}", f"--ntasks-per-node={trainer.devices}", *launcher.args,
            python, *train]


def check(experiment: ExperimentConfig, path: str) -> None:
    launcher, trainer = experiment.launcher, experiment.trainer
    if launcher.name == "srun" and not os.environ.get(LAUNCHED):
        if shutil.which("srun") is None:
            raise ConfigError(f"{path}.name: srun, but srun is not on PATH (SLURM is not installed here); allowed here: none, torchrun")
        if "SLURM_JOB_ID" not in os.environ:
            raise ConfigError(f"{path}.name: srun runs inside a SLURM allocation: submit with sbatch (see the README's "
                              "'Run on a cluster'), or use none or torchrun here")
    if launcher.name == "torchrun" and trainer.num_nodes > 1 and not any(
        a.startswith(("--rdzv-endpoint", "--rdzv_endpoint", "--master-addr", "--master_addr")) for a in launcher.args
    ):
        raise ConfigError(f"{path}.args: torchrun on {trainer.num_nodes} nodes needs --rdzv-endpoint=HOST:PORT "
                          "(or --master-addr) in args")
    if launcher.name != "none" and trainer.strategy == "ddp_spawn":
        raise ConfigError(f"{path}.name: {launcher.name} starts the processes itself; strategy ddp_spawn would spawn "
                          "more: use ddp or auto")


def check_experiment(experiment: ExperimentConfig) -> None:
    """What train and evaluate check before any work: the launcher, then what this machine can run."""
    path = f"experiments.{experiment.name}"
    check(experiment, f"{path}.launcher")
    experiment.trainer.check_machine(f"{path}.trainer", launcher=experiment.launcher.name)
    check_determinism(experiment, f"{path}.trainer.deterministic")


def check_determinism(experiment: ExperimentConfig, path: str) -> None:
    """With deterministic: true, PyTorch raises at the first operation that has no deterministic CUDA
    kernel, mid-training; refused here instead, for a family that declares one (its
    NONDETERMINISTIC_ON_CUDA), naming the setting that lets it run."""
    from pipeline.params import family_class

    needs = family_class(experiment.family).NONDETERMINISTIC_ON_CUDA
    if needs and experiment.trainer.deterministic is True and experiment.trainer.uses_cuda():
        raise ConfigError(f"{path}: family {experiment.family} uses {needs}, which has no deterministic CUDA kernel; "
                          "set deterministic: warn to train it on a GPU (two runs may then differ), or accelerator: cpu")


def launch(experiment: ExperimentConfig, module: str = "pipeline.train") -> None:
    """Replace this process with the launcher (the same PID, so DVC waits for the whole job)."""
    cmd = command(experiment, module=module)
    if cmd is None:
        return
    env = {**os.environ, LAUNCHED: experiment.launcher.name}
    print("launching:", " ".join(cmd), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)
