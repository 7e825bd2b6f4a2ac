"""Read params.yaml, merge each experiment over `defaults`, validate strictly, return typed config.

`examples:` holds experiments that are disabled: validated exactly as experiments are (a dataset they
would download need not be opted in yet), never trained; `python -m pipeline.examples enable NAME`
moves one under `experiments:`.

Every error a user can make in params.yaml raises `ConfigError` with one line that names the
offending key and what is allowed. Validation runs before any stage writes a file or creates an
MLflow run.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import inspect
import pkgutil
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = ROOT / "params.yaml"

OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "lbfgs"]
SchedulerName = Literal["none", "step", "cosine", "onecycle"]
Precision = Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "64-true"]
Accelerator = Literal["cpu", "gpu", "cuda", "mps", "auto"]
Strategy = Literal["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"]

# Keys a family's constructor receives from the pipeline rather than from params.yaml.
INJECTED = ("data", "optimizer", "scheduler")


class ConfigError(ValueError):
    """A user error in params.yaml or on the command line, described in one line."""


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
            raise ConfigError(f"{path}.momentum: applies to sgd and rmsprop only, not {self.name!r}; set it to 0")
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
    deterministic: bool

    def check(self, path: str) -> None:
        _positive(self.devices, f"{path}.devices")
        _positive(self.num_nodes, f"{path}.num_nodes")
        _non_negative(self.gradient_clip_val, f"{path}.gradient_clip_val")
        _positive(self.accumulate_grad_batches, f"{path}.accumulate_grad_batches")

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def check_machine(self, path: str, environ: dict | None = None, launcher: str = "none") -> None:
        """What this machine and launch can run: checked by the train stage before anything starts
        (not by `prepare`, which may validate a GPU experiment on a CPU machine)."""
        import os
        import shutil

        import torch

        environ = os.environ if environ is None else environ
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        on_gpu = self.accelerator in ("gpu", "cuda") or (self.accelerator == "auto" and gpus > 0)
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
        _positive(self.batch_size, f"{path}.batch_size")
        _positive(self.max_epochs, f"{path}.max_epochs")
        for name in ("optimizer", "scheduler", "early_stopping", "trainer"):
            getattr(self, name).check(f"{path}.{name}")

    def flat(self) -> dict[str, Any]:
        """The resolved config as flat `a.b.c` keys, for MLflow params."""
        return _flatten(dataclasses.asdict(self))


@dataclass(frozen=True)
class DataConfig:
    """How prepare splits every embedded dataset: seeded, stratified for classification; and which
    datasets that come from the network (opt-in, e.g. Cora) it may download as well."""

    split_seed: int
    val_fraction: float
    test_fraction: float
    download: list[str] = field(default_factory=list)

    def check(self, path: str) -> None:
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0 < value < 1:
                raise ConfigError(f"{path}.{key}: must be between 0 and 1, got {value!r}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(f"{path}.test_fraction: val_fraction + test_fraction must stay below 0.9")
        from pipeline import data as datasets

        downloadable = [name for name, entry in datasets.DATASETS.items() if entry.download]
        for index, name in enumerate(self.download):
            if name not in downloadable:
                raise ConfigError(f"{path}.download[{index}]: unknown value {name!r}; allowed: {', '.join(downloadable)}")


@dataclass(frozen=True)
class Config:
    tracking_experiment: str
    data: DataConfig
    experiments: dict[str, ExperimentConfig]
    targets: dict[str, list[dict[str, Any]]]
    examples: dict[str, ExperimentConfig] = field(default_factory=dict)  # disabled: no DVC stages
    tracking_sweep: str = ""  # the MLflow tag `sweep` of every run this checkout trains (pipeline.sweep)


# ---------------------------------------------------------------------------------------------
# Loading


def load(path: Path | str = PARAMS_FILE, family_checks: bool = True) -> Config:
    """Load and validate the whole params file (every experiment), raising ConfigError. With
    family_checks=False, each experiment's checks against its family class (model config, tasks, monitors)
    are skipped: those import every family, so torch, Lightning and torchmetrics, which a stage that
    trains nothing (prepare) does not otherwise need; train and evaluate still make them."""
    path = Path(path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    top = ("tracking", "data", "defaults", "experiments", "examples", "targets")
    if not path.exists():
        raise ConfigError(f"{shown}: file not found")
    try:
        text = path.read_text()
        try:  # libyaml's parser when PyYAML has it: 2 ms instead of 19 ms for this file, in every stage
            raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:  # the pure-Python parser's message names the offending character
            raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{shown}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not a UTF-8 text file") from None
    if raw is None:
        raise ConfigError(f"{shown}: empty; it must map {', '.join(top)}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: must be a mapping of {', '.join(top)}, got a {type(raw).__name__}")
    _only_keys(raw, set(top), "")
    for key in ("tracking", "data", "defaults", "experiments"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{key}: missing or not a mapping")
    _only_keys(raw["tracking"], {"experiment_name", "sweep"}, "tracking")
    tracking_experiment = _coerce(raw["tracking"].get("experiment_name"), str, "tracking.experiment_name")
    sweep = raw["tracking"].get("sweep")
    sweep = check_sweep_name("" if sweep is None else str(sweep), "tracking.sweep")
    data = _build(DataConfig, raw["data"], "data")
    data.check("data")
    experiments = {
        name: experiment(name, raw["defaults"], spec, family_checks) for name, spec in raw["experiments"].items()
    }
    if not experiments:
        raise ConfigError("experiments: at least one experiment is needed")
    if not isinstance(raw.get("examples") or {}, dict):
        raise ConfigError("examples: must be a mapping of experiments (disabled until enabled)")
    examples = {
        name: experiment(name, raw["defaults"], spec, family_checks, section="examples")
        for name, spec in (raw.get("examples") or {}).items()
    }
    for name in examples:
        if name in experiments:
            raise ConfigError(f"examples.{name}: also the name of an experiment; an example needs a name of its own")
    from pipeline import data as datasets

    for name, config in experiments.items():
        if datasets.DATASETS[config.dataset].download and config.dataset not in data.download:
            raise ConfigError(f"experiments.{name}.dataset: {config.dataset!r} is downloaded from the network; "
                              f"opt in with data.download: [{config.dataset}]")
    targets = raw.get("targets") or {}
    for name, entries in targets.items():
        if name in examples:
            raise ConfigError(f"targets.{name}: an example, not an experiment; enable it first: "
                              f"python -m pipeline.examples enable {name}")
        if name not in experiments:
            raise ConfigError(f"targets.{name}: no such experiment; known: {', '.join(experiments)}")
        for index, target in enumerate(entries if isinstance(entries, list) else [None]):
            _check_target(target, f"targets.{name}[{index}]", experiments)
    return Config(tracking_experiment, data, experiments, targets, examples, sweep)


SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_sweep_name(name: str, key: str) -> str:
    """A sweep's name is an MLflow tag and a file name (sweeps/NAME.json): "" (no sweep) or up to 64
    letters, digits, '.', '_' and '-', starting with a letter or digit."""
    if name and not SWEEP_NAME.fullmatch(name):
        raise ConfigError(f"{key}: {name!r} is not a sweep name; allowed: up to 64 letters, digits, '.', '_' "
                          "and '-', starting with a letter or digit (or empty: no sweep)")
    return name


def load_experiment(name: str, path: Path | str = PARAMS_FILE) -> tuple[Config, ExperimentConfig]:
    config = load(path)
    if name in config.examples:
        raise ConfigError(f"{name!r} is an example, disabled; enable it first: python -m pipeline.examples enable {name}")
    if name not in config.experiments:
        raise ConfigError(f"unknown experiment {name!r}; params.yaml defines: {', '.join(config.experiments)}")
    return config, config.experiments[name]


def experiment(name: str, defaults: dict, spec: Any, family_checks: bool = True,
               section: str = "experiments") -> ExperimentConfig:
    """Merge one experiment over the defaults and validate it, its dataset and (with `family_checks`) its
    config against its family class; errors name the key under `section` (experiments or examples)."""
    from pipeline import data as datasets

    path = f"{section}.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: must be a mapping")
    merged = _merge(copy.deepcopy(defaults), spec)
    for key in ("family", "dataset"):
        if key not in merged:
            raise ConfigError(f"{path}.{key}: missing")
    families = available_families()
    if merged["family"] not in families:
        raise ConfigError(f"{path}.family: unknown family {merged['family']!r}; allowed: {', '.join(families)}")
    if merged["dataset"] not in datasets.DATASETS:
        raise ConfigError(
            f"{path}.dataset: unknown dataset {merged['dataset']!r}; allowed: {', '.join(datasets.DATASETS)}"
        )
    config = _build(ExperimentConfig, {"name": name, **merged}, path)
    config.check(path)
    if not family_checks:
        return config
    model_cls = family_class(config.family)
    spec_ = datasets.DATASETS[config.dataset].spec
    if spec_.task not in model_cls.TASKS:
        raise ConfigError(
            f"{path}: family {config.family!r} handles {'/'.join(model_cls.TASKS)} data, "
            f"but dataset {config.dataset!r} is {spec_.task}"
        )
    kind = datasets.DATASETS[config.dataset].kind
    if model_cls.GRAPH_INPUT != (kind == "graph"):
        graphs = ", ".join(name for name, entry in datasets.DATASETS.items() if entry.kind == "graph")
        raise ConfigError(
            f"{path}.dataset: family {config.family!r} needs a graph dataset ({graphs}), but dataset {config.dataset!r} is not one"
            if model_cls.GRAPH_INPUT else
            f"{path}.dataset: family {config.family!r} takes samples, but dataset {config.dataset!r} is one graph "
            f"(its families: {', '.join(f for f in families if getattr(family_class(f), 'GRAPH_INPUT', False))})"
        )
    if model_cls.IMAGE_INPUT and len(spec_.input_shape) != 3:
        raise ConfigError(
            f"{path}.dataset: family {config.family!r} needs image data (C, H, W), "
            f"but dataset {config.dataset!r} has samples of shape {spec_.input_shape}"
        )
    if model_cls.SEQUENCE_INPUT and len(spec_.input_shape) != 2 and spec_.task != "sequence":
        raise ConfigError(
            f"{path}.dataset: family {config.family!r} needs sequences (T steps, D features, or tokens), "
            f"but dataset {config.dataset!r} has samples of shape {spec_.input_shape}"
        )
    monitors = model_cls.monitors(spec_)
    if config.early_stopping.monitor not in monitors:
        raise ConfigError(
            f"{path}.early_stopping.monitor: unknown metric {config.early_stopping.monitor!r}; allowed: {', '.join(monitors)}"
        )
    model = model_kwargs(model_cls, config.model, f"{path}.model", spec_)
    try:
        model_cls.check_experiment(config)
    except ValueError as error:
        raise ConfigError(f"{path}.{error}") from None
    return dataclasses.replace(config, model=model)


_TARGET_FORMS = ({"metric", "at_least"}, {"metric", "at_most"},
                 {"metric", "baseline", "at_least_delta"}, {"metric", "baseline", "at_most_ratio"},
                 {"metric", "lowest_among"})


def _check_target(target: Any, path: str, experiments: dict) -> None:
    if not isinstance(target, dict) or set(target) not in _TARGET_FORMS:
        forms = "; ".join("{" + ", ".join(sorted(form)) + "}" for form in _TARGET_FORMS)
        raise ConfigError(f"{path}: a target is one of {forms}")
    for key, value in target.items():
        if key == "lowest_among":
            target[key] = _coerce(value, list[str], f"{path}.{key}")
            unknown = [name for name in target[key] if name not in experiments]
            if unknown or not target[key]:
                raise ConfigError(f"{path}.{key}: must list experiments of params.yaml; unknown: {', '.join(unknown) or '(empty list)'}")
        elif key not in ("metric", "baseline"):
            target[key] = _coerce(value, float, f"{path}.{key}")


# ---------------------------------------------------------------------------------------------
# Families: one file in modules/ each, its class in MODEL, its constructor's keyword-only
# arguments are its config.


def available_families() -> list[str]:
    import modules

    return sorted(m.name for m in pkgutil.iter_modules(modules.__path__) if not m.name.startswith("_"))


def family_class(family: str) -> type:
    return importlib.import_module(f"modules.{family}").MODEL


def model_kwargs(model_cls: type, given: Any, path: str, data=None) -> dict[str, Any]:
    """Check `given` against the family constructor's keyword-only, typed signature."""
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: must be a mapping")
    hints = typing.get_type_hints(model_cls.__init__)
    parameters = [
        p.name
        for p in inspect.signature(model_cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in INJECTED
    ]
    _only_keys(given, set(parameters), path)
    missing = [name for name in parameters if name not in given]
    if missing:
        raise ConfigError(f"{path}.{missing[0]}: missing (family needs: {', '.join(parameters)})")
    kwargs = {name: _coerce(given[name], hints[name], f"{path}.{name}") for name in parameters}
    try:
        model_cls.check_config(kwargs, data)
    except ValueError as error:
        raise ConfigError(f"{path}.{error}") from None
    return kwargs


# ---------------------------------------------------------------------------------------------
# Helpers

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _build(cls: type, mapping: Any, path: str):
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path}: must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _only_keys(mapping, set(fields), path)
    values = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name not in mapping:
            if f.default_factory is not dataclasses.MISSING:
                values[name] = f.default_factory()
                continue
            raise ConfigError(f"{key}: missing")
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], mapping[name], key)
        elif name == "model":
            values[name] = mapping[name]
        else:
            values[name] = _coerce(mapping[name], hints[name], key)
    return cls(**values)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return `value` as `annotation` (int, float, bool, str, Literal, list[...]) or raise ConfigError."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{key}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}")
        return value
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if annotation is float:
        # PyYAML (YAML 1.1) reads 1e-3 as a string; DVC's ruamel reads it as a float.
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported annotation {annotation!r}")


def _only_keys(mapping: dict, allowed: set[str], path: str) -> None:
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown key; allowed: {', '.join(sorted(allowed))}")


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _positive(value: float, key: str) -> None:
    if not value > 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")


def _non_negative(value: float, key: str) -> None:
    if value < 0:
        raise ConfigError(f"{key}: must be zero or positive, got {value!r}")


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
