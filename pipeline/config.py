"""The typed config that params.yaml becomes (pipeline.params reads, merges and checks the file):
what a family's constructor, the Trainer and the stages take. Each type checks its own values,
with one-line errors naming the key.

The spec layer: it imports nothing of the project but pipeline.base, so a family that takes its
optimizer's config does not depend on how params.yaml is read.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.base import ConfigError

OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "lbfgs"]
SchedulerName = Literal["none", "step", "cosine", "onecycle"]
Precision = Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "64-true"]
Accelerator = Literal["cpu", "gpu", "cuda", "mps", "auto"]
Strategy = Literal["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"]
Deterministic = Literal[True, False, "warn"]  # warn: Lightning's deterministic="warn", for an op with no deterministic kernel

MAX_THREADS = 1024
MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds; Lightning's seed_everything draws a random one beyond
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 2**20


# ---------------------------------------------------------------------------------------------
# Typed config


@dataclass(frozen=True)
class OptimizerConfig:
    """Chapter 4's optimizers."""

    name: OptimizerName
    lr: float
    weight_decay: float
    momentum: float
    nesterov: bool

    def check(self, path: str) -> None:
        _positive(self.lr, f"{path}.lr")
        _non_negative(self.weight_decay, f"{path}.weight_decay")
        _non_negative(self.momentum, f"{path}.momentum")
        if self.momentum and self.name not in ("sgd", "rmsprop"):
            raise ConfigError(f"{path}.momentum: applies to sgd and rmsprop only, not {quoted(self.name)}; set it to 0")
        if self.nesterov and not (self.name == "sgd" and self.momentum > 0):
            raise ConfigError(f"{path}.nesterov: needs name: sgd with momentum > 0")
        if self.weight_decay and self.name == "lbfgs":
            raise ConfigError(f"{path}.weight_decay: not supported by lbfgs; set it to 0")


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning-rate schedule per epoch (step, cosine) or per step (onecycle), after an optional linear warmup."""

    name: SchedulerName
    step_size: int
    gamma: float
    warmup_epochs: int

    def check(self, path: str) -> None:
        _positive(self.step_size, f"{path}.step_size")
        _positive(self.gamma, f"{path}.gamma")
        _non_negative(self.warmup_epochs, f"{path}.warmup_epochs")
        if self.warmup_epochs and self.name == "onecycle":
            raise ConfigError(f"{path}.warmup_epochs: must be 0 with onecycle, which has its own warmup")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when `monitor` has not improved for `patience` epochs (0: never stop early)."""

    monitor: str
    mode: Literal["min", "max"]
    patience: int

    def check(self, path: str) -> None:
        _non_negative(self.patience, f"{path}.patience")


@dataclass(frozen=True)
class TrainerConfig:
    """Lightning Trainer settings."""

    accelerator: Accelerator
    devices: int  # per node; the batch size is per device
    num_nodes: int
    strategy: Strategy
    precision: Precision
    gradient_clip_val: float
    accumulate_grad_batches: int
    sync_batchnorm: bool
    compile: bool
    deterministic: Deterministic
    threads: int  # intra-op CPU threads (torch.set_num_threads): results depend on it, so it is a param
    ema_decay: float  # 0 = off; else the weights kept are an exponential moving average of the iterates

    def check(self, path: str) -> None:
        _positive(self.threads, f"{path}.threads")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"{path}.ema_decay: must be in [0, 1) (0 = off), got {self.ema_decay}")
        if self.ema_decay and self.strategy in ("fsdp", "deepspeed"):  # Lightning's WeightAveraging: no sharded models
            raise ConfigError(f"{path}.ema_decay: Lightning averages whole models only, not {self.strategy}'s shards; "
                              "allowed with ema_decay: auto, ddp, ddp_spawn")
        _at_most(self.threads, MAX_THREADS, f"{path}.threads", str(MAX_THREADS))
        _positive(self.devices, f"{path}.devices")
        _positive(self.num_nodes, f"{path}.num_nodes")
        _non_negative(self.gradient_clip_val, f"{path}.gradient_clip_val")
        _positive(self.accumulate_grad_batches, f"{path}.accumulate_grad_batches")

    def uses_cuda(self) -> bool:
        """Whether the Trainer will run on CUDA GPUs: asked for, or `auto` on a machine that has one."""
        import torch

        return self.accelerator in ("gpu", "cuda") or (self.accelerator == "auto" and torch.cuda.is_available()
                                                        and torch.cuda.device_count() > 0)

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def check_machine(self, path: str, environ: dict | None = None, launcher: str = "none") -> None:
        """What this machine and launch can run: checked by the train stage before anything starts
        (not by `prepare`, which may validate a GPU experiment on a CPU machine)."""

        import torch

        environ = os.environ if environ is None else environ
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        on_gpu = self.uses_cuda()
        if self.accelerator in ("gpu", "cuda") and gpus == 0:
            raise ConfigError(f"{path}.accelerator: {self.accelerator}, but this machine has no CUDA GPU; allowed here: cpu, auto")
        if self.accelerator == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"{path}.accelerator: mps, but MPS is not available here; allowed here: cpu, auto")
        if on_gpu and self.devices > gpus:
            raise ConfigError(f"{path}.devices: {self.devices} per node, but this machine has {gpus} GPU(s)")
        cores = os.cpu_count() or 1
        if not on_gpu and self.accelerator != "mps" and self.devices > cores:
            raise ConfigError(f"{path}.devices: {self.devices} CPU processes per node, but this machine has {cores} core(s)")
        if not on_gpu and self.precision == "16-mixed":
            raise ConfigError(f"{path}.precision: 16-mixed needs a CUDA GPU; on cpu: 32-true, bf16-mixed, bf16-true, 64-true")
        if on_gpu and self.precision.startswith("bf16") and not torch.cuda.is_bf16_supported(including_emulation=False):
            major, minor = torch.cuda.get_device_capability()
            raise ConfigError(f"{path}.precision: {self.precision} needs a GPU with bfloat16 (compute capability 8.0 or "
                              f"newer), this one has {major}.{minor}; use 16-mixed")
        if not on_gpu and self.sync_batchnorm and self.world_size > 1:  # PyTorch refuses it at the first batch
            raise ConfigError(f"{path}.sync_batchnorm: PyTorch's SyncBatchNorm runs on CUDA GPUs only; false on cpu")
        if not on_gpu and self.strategy == "fsdp":
            raise ConfigError(f"{path}.strategy: fsdp needs a CUDA GPU; on cpu: auto, ddp, ddp_spawn")
        if self.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(f"{path}.strategy: deepspeed is not installed (pip install deepspeed); allowed: auto, ddp, ddp_spawn, fsdp")
        launched = launcher != "none" or any(key in environ for key in ("SLURM_NTASKS", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"))
        if self.num_nodes > 1 and not launched:
            raise ConfigError(
                f"{path}.num_nodes: {self.num_nodes} nodes need a launcher that starts the processes of every node "
                "(srun or torchrun; see the README's 'Run on a cluster'); 1 without one"
            )
        if self.compile and not on_gpu and shutil.which("g++") is None and shutil.which("c++") is None:
            raise ConfigError(f"{path}.compile: true needs a C++ compiler (g++) for torch.compile on cpu; false without one")


@dataclass(frozen=True)
class LauncherConfig:
    """What starts the train stage's processes: nothing (Lightning itself), torchrun, or srun."""

    name: Literal["none", "torchrun", "srun"]
    args: list[str]  # extra arguments for the launcher, before the training command


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    family: str
    dataset: str
    seed: int
    batch_size: int
    max_epochs: int
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    early_stopping: EarlyStoppingConfig
    trainer: TrainerConfig
    launcher: LauncherConfig
    checkpoint: Literal["best", "last"]
    model: dict[str, Any] = field(default_factory=dict)

    def check(self, path: str) -> None:
        _seed(self.seed, f"{path}.seed")
        _positive(self.batch_size, f"{path}.batch_size")
        _at_most(self.batch_size, MAX_BATCH_SIZE, f"{path}.batch_size", "1048576 (2**20) samples per device")
        _positive(self.max_epochs, f"{path}.max_epochs")
        _at_most(self.max_epochs, MAX_EPOCHS, f"{path}.max_epochs", "100000 (this project's bound on epochs)")
        for name in ("optimizer", "scheduler", "early_stopping", "trainer"):
            getattr(self, name).check(f"{path}.{name}")
        if self.optimizer.name == "lbfgs" and self.trainer.precision == "16-mixed":  # Lightning refuses it at fit
            raise ConfigError(f"{path}.trainer.precision: 16-mixed scales the loss, which L-BFGS's line search cannot "
                              "take (optimizer lbfgs); allowed with lbfgs: 32-true, 64-true, bf16-mixed, bf16-true")

    def flat(self) -> dict[str, Any]:
        """The resolved config as flat `a.b.c` keys, for MLflow params."""
        return _flatten(dataclasses.asdict(self))


@dataclass(frozen=True)
class DataConfig:
    """How prepare splits every embedded dataset: seeded, stratified for classification; and which
    datasets that come from the network (opt-in, e.g. Cora) it may download as well (params.load checks
    those names against the registry)."""

    split_seed: int
    val_fraction: float
    test_fraction: float
    download: list[str] = field(default_factory=list)

    def check(self, path: str) -> None:
        _seed(self.split_seed, f"{path}.split_seed")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0 < value < 1:
                raise ConfigError(f"{path}.{key}: must be between 0 and 1, got {quoted(value)}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(f"{path}.test_fraction: val_fraction + test_fraction must stay below 0.9")


@dataclass(frozen=True)
class Config:
    tracking_experiment: str
    data: DataConfig
    experiments: dict[str, ExperimentConfig]
    targets: dict[str, list[dict[str, Any]]]
    threads: int  # defaults.trainer.threads: the intra-op CPU threads of the stages that train no experiment
    examples: dict[str, ExperimentConfig] = field(default_factory=dict)  # disabled: no DVC stages
    tracking_sweep: str = ""  # the MLflow tag `sweep` of every run this checkout trains (pipeline.sweep)
    tracking_system_metrics: bool = False  # MLflow's system metrics (CPU, memory, GPU) in every training's run


def quoted(value: Any, limit: int = 60) -> str:
    """`value`'s repr for a message, cut to `limit` characters: a value can be as long as the file."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _positive(value: float, key: str) -> None:
    if not value > 0:
        raise ConfigError(f"{key}: must be positive, got {quoted(value)}")


def _non_negative(value: float, key: str) -> None:
    if not value >= 0:
        raise ConfigError(f"{key}: must be zero or positive, got {quoted(value)}")


def _at_most(value: int, high: int, key: str, bound: str) -> None:
    if value > high:
        raise ConfigError(f"{key}: must be at most {bound}, got {quoted(value)}")


def _seed(value: int, key: str) -> None:
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{key}: must be between 0 and 2**32 - 1 (a seed numpy and Lightning accept), got {quoted(value)}")


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
