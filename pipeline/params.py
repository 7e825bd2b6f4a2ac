"""Read params.yaml, merge each experiment over `defaults`, validate strictly, return typed config.

`examples:` holds experiments that are disabled: validated exactly as experiments are (a dataset they
would download need not be opted in yet), never trained; `python -m pipeline.examples enable NAME`
moves one under `experiments:`.

Every error a user can make in params.yaml raises `ConfigError` with one line that names the
offending key and what is allowed. Validation runs before any stage writes a file or creates an
MLflow run.

Names (experiments, examples, tracking.sweep, and the same names typed on the command line) become
folders (models/NAME, checkpoints/NAME), MLflow tags and words of dvc.yaml's shell commands, so they
match one pattern, NAME. Reading is bounded: no YAML anchors or aliases, a limit on the file's size,
its nesting and its number of YAML events, and every value a message quotes is cut short.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import inspect
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.base import ROOT, ConfigError, listed  # noqa: F401 (ROOT, ConfigError re-exported: most stages import them from here)
from pipeline.config import Config, DataConfig, ExperimentConfig, TrainerConfig, quoted
from pipeline.datasets import DATASETS
from pipeline.spec import KINDS

PARAMS_FILE = ROOT / "params.yaml"

# Keys a family's constructor receives from the pipeline rather than from params.yaml.
INJECTED = ("data", "optimizer", "scheduler")


# ---------------------------------------------------------------------------------------------
# Loading


TOP = ("tracking", "data", "defaults", "experiments", "examples", "targets")
MAX_BYTES = 1 << 20  # params.yaml is a few KiB
MAX_EVENTS = 100_000  # YAML events (values, keys, starts and ends of lists and mappings): a few thousand here
MAX_DEPTH = 32  # nesting of lists and mappings: 5 here; deeper would exhaust the recursion of copy and merge



def load(path: Path | str = PARAMS_FILE, family_checks: bool | frozenset[str] = True) -> Config:
    """Load and validate the whole params file (every experiment), raising ConfigError. Each experiment's
    checks against its family class (model config, tasks, monitors) import that family: with
    family_checks=False they are skipped, with a set of names made for those experiments only. A stage
    imports just the families it runs (its code dependencies, pipeline/codedeps.py), and a stage that
    trains nothing (prepare) not even torch."""
    path = Path(path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    raw = read_yaml(path, shown)
    if raw is None:
        raise ConfigError(f"{shown}: empty; it must map {', '.join(TOP)}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: must be a mapping of {', '.join(TOP)}, got a {type(raw).__name__}")
    _only_keys(raw, set(TOP), "")
    for key in ("tracking", "data", "defaults", "experiments"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{key}: missing or not a mapping")
    _only_keys(raw["tracking"], {"experiment_name", "sweep", "system_metrics"}, "tracking")
    tracking_experiment = _coerce(raw["tracking"].get("experiment_name"), str, "tracking.experiment_name")
    sweep = raw["tracking"].get("sweep")
    sweep = check_name("" if sweep is None else str(sweep), "tracking.sweep", "a sweep name", empty="no sweep")
    system_metrics = _coerce(raw["tracking"].get("system_metrics"), bool, "tracking.system_metrics")
    data = _build(DataConfig, raw["data"], "data")
    data.check("data")
    downloadable = [name for name, entry in DATASETS.items() if entry.download]
    for index, name in enumerate(data.download):
        if name not in downloadable:
            raise ConfigError(f"data.download[{index}]: unknown value {quoted(name)}; allowed: {', '.join(downloadable)}")
    if not isinstance(raw.get("examples") or {}, dict):
        raise ConfigError("examples: must be a mapping of experiments (disabled until enabled)")
    _check_names(raw)
    experiments = {
        name: experiment(name, raw["defaults"], spec, family_checks is True or name in (family_checks or ()))
        for name, spec in raw["experiments"].items()
    }
    if not experiments:
        raise ConfigError("experiments: at least one experiment is needed")
    examples = {
        name: experiment(name, raw["defaults"], spec, family_checks is True, section="examples")
        for name, spec in (raw.get("examples") or {}).items()
    }
    for name, config in experiments.items():
        if DATASETS[config.dataset].download and config.dataset not in data.download:
            raise ConfigError(f"experiments.{name}.dataset: {quoted(config.dataset)} is downloaded from the network; "
                              f"opt in with data.download: [{config.dataset}]")
    targets = raw.get("targets") or {}
    if not isinstance(targets, dict):
        raise ConfigError("targets: must be a mapping of experiments to lists of targets")
    for name, entries in targets.items():  # an example's targets are checked once it is enabled and run
        if name not in experiments and name not in examples:
            raise ConfigError(f"targets.{_key(name)}: no such experiment or example; known: {', '.join([*experiments, *examples])}")
        for index, target in enumerate(entries if isinstance(entries, list) else [None]):
            _check_target(target, f"targets.{name}[{index}]", experiments)
    threads = _build(TrainerConfig, raw["defaults"].get("trainer"), "defaults.trainer").threads  # checked in every experiment
    return Config(tracking_experiment=tracking_experiment, data=data, experiments=experiments, targets=targets,
                  threads=threads, examples=examples, tracking_sweep=sweep, tracking_system_metrics=system_metrics)


def read_yaml(path: Path, shown: Path | str) -> Any:
    """The params file's YAML, read within bounds: at most MAX_BYTES, MAX_EVENTS events and MAX_DEPTH
    levels, and no anchors or aliases, whose expansion is unbounded (a few lines of nested aliases
    stand for billions of values). The events are checked before anything is composed."""
    if not path.exists():
        raise ConfigError(f"{shown}: file not found")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)  # never more, whatever the file is (a device, a pipe)
        if len(data) > MAX_BYTES:
            raise ConfigError(f"{shown}: larger than 1 MiB; a params file holds a few KiB of settings")
        text = data.decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{shown}: unreadable ({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not a UTF-8 text file") from None
    fast = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        try:  # libyaml's parser when PyYAML has it: several times faster, and every stage reads this file
            _check_events(text, fast, shown)
            return yaml.load(text, Loader=fast)
        except yaml.YAMLError:  # the pure-Python parser's message names the offending character
            _check_events(text, yaml.SafeLoader, shown)
            return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{shown}: not valid YAML{where}: {problem}") from None


def _check_events(text: str, loader: type, shown: Path | str) -> None:
    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=loader), 1):
        mark = event.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias (*)" if isinstance(event, yaml.AliasEvent) else "anchor (&)"
            raise ConfigError(f"{shown}: YAML {kind} at {where}; params take no anchors or aliases: write the values out")
        if count > MAX_EVENTS:
            raise ConfigError(f"{shown}: more than {MAX_EVENTS} YAML values, keys, lists and mappings (at {where}); "
                              "a params file holds a few thousand")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"{shown}: lists and mappings nested more than {MAX_DEPTH} deep at {where}; "
                                  "params nest a few levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


# The one pattern of every name: a folder (models/NAME), an MLflow tag and a word of a shell command.
# No '/', no '..' as a whole name, no space, ';', '$' or quote, no leading '-' (an option to a command).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "up to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"


def check_name(name: Any, key: str, what: str, *, empty: str | None = None) -> str:
    """Return `name` if it matches NAME, else raise ConfigError naming `key`; `what` is the kind of name
    ("an experiment name"). With `empty` (what "" means), the empty string is allowed too."""
    if empty is not None and name == "":
        return name
    if not isinstance(name, str) or not NAME.fullmatch(name):
        also = f" (or empty: {empty})" if empty is not None else ""
        raise ConfigError(f"{key}: {quoted(name)} is not {what}; allowed: {NAME_RULE}{also}")
    return name


def _check_names(raw: dict) -> None:
    """Experiment and example names: NAME without '.', and distinct even where case is not (models/MLP
    and models/mlp are one folder on the file systems of macOS and Windows)."""
    experiments, seen = raw["experiments"], {}
    for section, what in (("experiments", "an experiment name"), ("examples", "an example name")):
        for name in raw.get(section) or {}:
            check_name(name, section, what)
            if "." in name:  # DVC reads the params of train@NAME at experiments.NAME, a path split at each '.'
                raise ConfigError(f"{section}: {quoted(name)} is not {what}: DVC splits the params path "
                                  f"{section}.NAME at each '.'; use '_' or '-' instead")
            if section == "examples" and name in experiments:
                raise ConfigError(f"examples.{name}: also the name of an experiment; an example needs a name of its own")
            if name.casefold() in seen:
                raise ConfigError(f"{section}.{name}: differs from {seen[name.casefold()]} only in case, and a "
                                  "case-insensitive file system (macOS, Windows) has one folder for both; rename one")
            seen[name.casefold()] = f"{section}.{name}"


def load_experiment(name: str, path: Path | str = PARAMS_FILE) -> tuple[Config, ExperimentConfig]:
    """The config and the experiment `name` (typed on the command line: checked before it is used)."""
    check_name(name, "experiment name", "an experiment name")
    config = load(path, family_checks=frozenset({name}))
    if name in config.examples:
        raise ConfigError(f"{quoted(name)} is an example, disabled; enable it first: python -m pipeline.examples enable {name}")
    if name not in config.experiments:
        raise ConfigError(f"unknown experiment {quoted(name)}; params.yaml defines: {', '.join(config.experiments)}")
    return config, config.experiments[name]


def experiment(name: str, defaults: dict, spec: Any, family_checks: bool = True,
               section: str = "experiments") -> ExperimentConfig:
    """Merge one experiment over the defaults and validate it, its dataset and (with `family_checks`) its
    config against its family class; errors name the key under `section` (experiments or examples)."""
    path = f"{section}.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: must be a mapping")
    merged = _merge(copy.deepcopy(defaults), spec)
    for key in ("family", "dataset"):
        if key not in merged:
            raise ConfigError(f"{path}.{key}: missing")
    families = available_families()  # a family and a dataset are file names too: only known ones pass
    if not isinstance(merged["family"], str) or merged["family"] not in families:
        raise ConfigError(f"{path}.family: unknown family {quoted(merged['family'])}; allowed: {', '.join(families)}")
    if not isinstance(merged["dataset"], str) or merged["dataset"] not in DATASETS:
        raise ConfigError(
            f"{path}.dataset: unknown dataset {quoted(merged['dataset'])}; allowed: {', '.join(DATASETS)}"
        )
    config = _build(ExperimentConfig, {"name": name, **merged}, path)
    config.check(path)
    if not family_checks:
        return config
    model_cls = family_class(config.family)
    spec_ = DATASETS[config.dataset].spec
    if spec_.task not in model_cls.TASKS:
        raise ConfigError(
            f"{path}: family {quoted(config.family)} handles {'/'.join(model_cls.TASKS)} data, "
            f"but dataset {quoted(config.dataset)} is {spec_.task}"
        )
    kind, wanted = DATASETS[config.dataset].kind, model_cls.DATA_KIND
    if kind != wanted:
        theirs = ", ".join(name for name, entry in DATASETS.items() if entry.kind == wanted)
        raise ConfigError(
            f"{path}.dataset: family {quoted(config.family)} learns from {KINDS[wanted]} ({theirs}), "
            f"but dataset {quoted(config.dataset)} holds {KINDS[kind]}"
        )
    if model_cls.IMAGE_INPUT and len(spec_.input_shape) != 3:
        raise ConfigError(
            f"{path}.dataset: family {quoted(config.family)} needs image data (C, H, W), "
            f"but dataset {quoted(config.dataset)} has samples of shape {spec_.input_shape}"
        )
    if model_cls.SEQUENCE_INPUT and len(spec_.input_shape) != 2 and spec_.task != "sequence":
        raise ConfigError(
            f"{path}.dataset: family {quoted(config.family)} needs sequences (T steps, D features, or tokens), "
            f"but dataset {quoted(config.dataset)} has samples of shape {spec_.input_shape}"
        )
    _check_optimization(model_cls, config, f"{path}.trainer")
    monitors = model_cls.monitors(spec_)
    if config.early_stopping.monitor not in monitors:
        raise ConfigError(
            f"{path}.early_stopping.monitor: unknown metric {quoted(config.early_stopping.monitor)}; allowed: {', '.join(monitors)}"
        )
    model = model_kwargs(model_cls, config.model, f"{path}.model", spec_)
    try:
        model_cls.check_experiment(config)
    except ValueError as error:
        raise ConfigError(f"{path}.{_cut(str(error))}") from None
    return dataclasses.replace(config, model=model)


def _check_optimization(model_cls, config: ExperimentConfig, path: str) -> None:
    """The Trainer settings and strategies a family's way of optimizing rules out (FamilyModule's
    MANUAL_OPTIMIZATION and OPTIMIZERS), refused here rather than by Lightning once the run exists."""
    family, trainer = quoted(config.family), config.trainer
    if model_cls.MANUAL_OPTIMIZATION:
        manual = f"family {family} steps its optimizers itself (manual optimization)"
        if trainer.gradient_clip_val:
            raise ConfigError(f"{path}.gradient_clip_val: {manual}, which Lightning cannot clip; set it to 0")
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError(f"{path}.accumulate_grad_batches: {manual} every batch; set it to 1")
        if trainer.strategy == "fsdp":  # Lightning #19685
            raise ConfigError(f"{path}.strategy: fsdp cannot train family {family}, which steps its optimizers itself "
                              "(manual optimization); allowed: auto, ddp, ddp_spawn")
    if model_cls.OPTIMIZERS > 1 and trainer.strategy == "deepspeed":  # Lightning #19773
        raise ConfigError(f"{path}.strategy: deepspeed takes one optimizer, family {family} has "
                          f"{model_cls.OPTIMIZERS}; allowed: auto, ddp, ddp_spawn")


_TARGET_FORMS = ({"metric", "at_least"}, {"metric", "at_most"},
                 {"metric", "baseline", "at_least_delta"}, {"metric", "baseline", "at_most_ratio"},
                 {"metric", "book", "at_least_delta"},  # the book's figure, printed beside ours
                 {"metric", "experiment", "at_least_delta"}, {"metric", "experiment", "at_most_ratio"},
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
        elif key == "experiment":  # another experiment's value is the reference
            target[key] = _coerce(value, str, f"{path}.{key}")
            if target[key] not in experiments:
                raise ConfigError(f"{path}.{key}: must name an experiment of params.yaml; unknown: {target[key]}")
        elif key in ("metric", "baseline"):  # a metric's name, or a baseline's in the report
            target[key] = _coerce(value, str, f"{path}.{key}")
        else:
            target[key] = _coerce(value, float, f"{path}.{key}")


# ---------------------------------------------------------------------------------------------
# Families: one file in modules/ each, its class in MODEL, its constructor's keyword-only
# arguments are its config.


def available_families() -> list[str]:
    import modules

    return listed(Path(modules.__file__).parent)


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
        raise ConfigError(f"{path}.{_cut(str(error))}") from None
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


MAX_INT = 2**53  # beyond it a float, hence torch and a metric's log, no longer holds every integer
MAX_TEXT = 256  # characters of a string value: a metric's name, a launcher argument, an MLflow experiment name


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return `value` as `annotation` (int, float, bool, str, Literal, list[...]) or raise ConfigError.
    Every value of every key passes here, so the bounds that hold for all keys are checked here: numbers
    finite, integers within MAX_INT, strings printable and at most MAX_TEXT characters."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if not any(value == choice and type(value) is type(choice) for choice in allowed):  # 1 is not true
            shown = (str(choice).lower() if isinstance(choice, bool) else str(choice) for choice in allowed)
            raise ConfigError(f"{key}: unknown value {quoted(value)}; allowed: {', '.join(shown)}")
        return value
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {quoted(value)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {quoted(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {quoted(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"{key}: must be an integer between -2**53 and 2**53, got {quoted(value)}")
        return value
    if annotation is float:
        # PyYAML (YAML 1.1) reads 1e-3 as a string; DVC's ruamel reads it as a float.
        written = isinstance(value, str) and _NUMBER.match(value.strip())
        if not written and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{key}: must be a number, got {quoted(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):  # NaN passes every `< 0` check, inf every `> 0` one
            raise ConfigError(f"{key}: must be a finite number, got {quoted(value)}")
        return number
    if annotation is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: must be a non-empty string, got {quoted(value)}")
        if len(value) > MAX_TEXT or not value.isprintable():
            raise ConfigError(f"{key}: must be at most {MAX_TEXT} printable characters (no control characters), "
                              f"got {quoted(value)}")
        return value
    raise TypeError(f"{key}: unsupported annotation {annotation!r}")


def _cut(message: str, limit: int = 300) -> str:
    """A family's own error message, cut: it may quote a value too."""
    return message if len(message) <= limit else f"{message[:limit - 3]}..."


def _key(key: Any) -> str:
    """A key of the user's file as a message shows it: as written when it is short and printable."""
    return key if isinstance(key, str) and len(key) <= 64 and key.isprintable() and key.strip() == key else quoted(key)


def _only_keys(mapping: dict, allowed: set[str], path: str) -> None:
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{_key(key)}" if path else _key(key)
            raise ConfigError(f"{where}: unknown key; allowed: {', '.join(sorted(allowed))}")


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base
