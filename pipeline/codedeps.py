"""The project files each stage's process imports, found from the code, so that no list of code
dependencies is kept by hand.

DVC cannot interpolate a list into a stage's deps, so the `codedeps` stage writes one small JSON file
per stage (and per family for train and evaluate) naming the files of that stage's import closure with
their hashes; each stage depends on its file. Editing a file then reruns exactly the stages whose
processes import it. The resume fingerprint hashes the same closure (`digest`).

Imports are read with `ast`, at any depth of a file (function-level imports count), so the closure is
what the process may import, whichever branch it takes. The dataset registry (pipeline/datasets/) imports
every file of its folder by listing it, which no import statement shows: those files count as imported
by it, so adding or editing a dataset reruns the stages that read the registry, prepare among them;
so do the baselines stage's reference files (pipeline/references/).
Likewise the evaluate stage imports the evaluation its family's kind names (`EVALUATION = "graph"` in a
class is pipeline/core/evaluation/graph.py): the name is read from the family's files, so a family's
evaluate stage depends on its own kind's evaluation only.
The stage also checks all of params.yaml first, and writes codedeps/chapters.json, each family's
chapter of the book (its CHAPTER): the report orders its sections by them without importing the
families, whose code would then be a dependency of the report.

It writes the params each stage reads too, under codedeps/params/ (an experiment's: its resolved config,
`defaults` merged with the experiment and checked, in params/experiments/NAME.json), and the stages depend
on those files instead of naming params. DVC parses params.yaml anew for every stage that names params in
it, twice per experiment; this way only this stage does, and an edit of `defaults` reruns only the
experiments whose resolved config it changes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import hashlib
import importlib
import json
from pathlib import Path

from pipeline.base import ROOT, listed

PACKAGES = ("pipeline", "modules")
OUT = ROOT / "codedeps"
CHAPTERS = "chapters.json"  # under OUT: each family's CHAPTER, for the report
PARAMS = "params"  # under OUT: the params each stage reads (dvc.yaml names these files, not params)
DISCOVERING = ("pipeline.datasets", "pipeline.references")  # packages that import each module of their folder not named with a leading _
EVALUATIONS = "pipeline.core.evaluation"  # imports its module named by the kind (EVALUATION), no import statement shows which

# Each stage's entry module. Train and evaluate also import their experiment's family by name
# (params.family_class), so they get one file per family (family_entries).
STAGES = {"prepare": "pipeline.prepare", "scorer": "pipeline.scorer", "baselines": "pipeline.baselines",
          "report": "pipeline.report"}


@functools.lru_cache(maxsize=None)  # the codedeps stage asks for each module once per closure, of 60 closures
def module_path(name: str, root: Path = ROOT) -> Path | None:
    """The project file that defines module `name`, or None for a module outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)  # a stage process reads each file once; the codedeps stage, for 37 closures
def imported_names(path: Path, root: Path = ROOT) -> frozenset[str]:
    """Every module name an import statement in `path` may load (relative imports resolved); for
    `from a import b`, both `a` and `a.b` (b may be a submodule)."""
    package = module_name(path, root) if path.name == "__init__.py" else module_name(path, root).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    if path.name == "__init__.py" and package in DISCOVERING:
        names.update(f"{package}.{name}" for name in listed(path.parent))
    return frozenset(names)


def closure(*entries: str, root: Path = ROOT) -> list[Path]:
    """The project files importing `entries` may execute, parent packages' __init__.py included."""
    seen: set[Path] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            path = module_path(".".join(parts[:depth]), root)
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_names(path, root))
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def named_kinds(path: Path) -> frozenset[str]:
    """The kinds that classes in `path` name with a class-level `EVALUATION = "kind"`."""
    return frozenset(
        statement.value.value
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))) if isinstance(node, ast.ClassDef)
        for statement in node.body
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
        and any(isinstance(target, ast.Name) and target.id == "EVALUATION" for target in statement.targets)
    )


def family_entries(family: str) -> dict[str, tuple[str, ...]]:
    """The modules the train and the evaluate stage of `family` start from: the stage's own, the family
    and, for evaluate, the evaluation of each kind the family's classes name."""
    kinds = sorted(set().union(*(named_kinds(path) for path in closure(f"modules.{family}"))))
    return {"train": ("pipeline.train", f"modules.{family}"),
            "evaluate": ("pipeline.evaluate", f"modules.{family}", *(f"{EVALUATIONS}.{kind}" for kind in kinds))}


def stage_entries() -> dict[str, tuple[str, ...]]:
    """Each dependency file's name (as under codedeps/) and the modules its stage's process starts from."""
    from pipeline.params import available_families

    entries = {name: (entry,) for name, entry in STAGES.items()}
    for family in available_families():
        entries.update({f"{stage}/{family}": modules for stage, modules in family_entries(family).items()})
    return entries


def files_of(*entries: str) -> dict[str, str]:
    """The closure's files, relative to the project, each with the sha256 of its bytes."""
    return {p.relative_to(ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in closure(*entries)}


def digest(*entries: str) -> str:
    """One hash of the closure's paths and contents (the resume fingerprint's share of the code)."""
    return hashlib.sha256(json.dumps(files_of(*entries), sort_keys=True).encode()).hexdigest()


def as_json(value) -> str:
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def reference_params(config) -> dict[str, dict]:
    """What each dataset's reference reads from the params (pipeline.references), for the datasets that have any."""
    # By name, not an import statement: the train stage imports this module for the resume fingerprint, and an
    # import here would put the references, and the evaluation code they call, in every train stage's closure.
    # This runs in the codedeps stage alone, which depends on all of pipeline/ and modules/.
    references = importlib.import_module("pipeline.references")
    datasets = sorted({experiment.dataset for experiment in config.experiments.values()})
    return {dataset: found for dataset in datasets if (found := references.reference_params(dataset, config))}


def stage_params(config) -> dict[str, object]:
    """The params each stage's process reads from the checked `config`, by its file's name under PARAMS."""
    return {
        "prepare": dataclasses.asdict(config.data),
        "scorer": {"download": config.data.download, "threads": config.threads},  # scikit-learn's BLAS threads
        "baselines": {"threads": config.threads, "references": reference_params(config)},
        "report": {"targets": config.targets, "tracking_experiment": config.tracking_experiment,
                   "experiments": {name: {"family": e.family, "dataset": e.dataset} for name, e in config.experiments.items()}},
        **{f"experiments/{name}": dataclasses.asdict(experiment) for name, experiment in config.experiments.items()},
    }


def contents(config=None) -> dict[str, str]:
    """Each stage's file under codedeps/ (its relative name) and the text it should hold now; CHAPTERS; and
    the stages' params under PARAMS, from `config` (params.yaml's, checked, by default)."""
    from pipeline.params import available_families, family_class, load

    config = config or load()
    chapters = {family: family_class(family).CHAPTER for family in available_families()}
    return {**{f"{name}.json": as_json(files_of(*entries)) for name, entries in stage_entries().items()},
            CHAPTERS: as_json(chapters),
            **{f"{PARAMS}/{name}.json": as_json(params) for name, params in stage_params(config).items()}}


def write_all(out: Path = OUT, config=None, wanted: dict[str, str] | None = None) -> list[str]:
    """Write codedeps/NAME.json for every stage and experiment (`wanted`: contents(config), if computed
    already); a file whose content is unchanged is left alone (its mtime too), one no stage needs any more
    is removed. Returns the names written."""
    from pipeline import files

    wanted = wanted or contents(config)
    written = []
    for name, text in sorted(wanted.items()):
        path = out / name
        if not path.is_file() or path.read_text() != text:
            files.write_text(path, text)
            written.append(name)
    for path in sorted(out.rglob("*.json")):
        if path.relative_to(out).as_posix() not in wanted:
            files.remove(path)
    return written


def main(argv: list[str] | None = None) -> int:
    from pipeline.params import load

    argparse.ArgumentParser(prog="python -m pipeline.codedeps", description=__doc__.splitlines()[0]).parse_args(argv)
    # The whole params file with every family's checks, as the first stage of every `dvc repro` (it depends
    # on params.yaml too): a mistake in any experiment stops the pipeline before any stage works, while
    # each later stage checks only the family it imports.
    wanted = contents(load())
    written = write_all(wanted=wanted)
    print(f"codedeps: {len(written)} of {len(wanted)} files changed" + (f" ({', '.join(written)})" if written else ""))
    return 0


if __name__ == "__main__":
    from pipeline import cli

    cli.run_and_exit(main)
