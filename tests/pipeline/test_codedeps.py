"""Each stage's code dependencies are derived from its imports (pipeline/codedeps.py), not kept by hand:
the closure follows every import statement, dvc.yaml names no code file but the derived ones, and the
committed codedeps/ files are current. tests/e2e/test_pipeline_e2e.py checks them against what each stage's
process really imported."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline import codedeps, references
from pipeline.core import resume
from pipeline.datasets import DATASETS
from pipeline.params import ROOT, load, load_experiment


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_closure_follows_imports_at_any_depth_relative_ones_and_parent_packages(tmp_path):
    write(tmp_path, {
        "pipeline/__init__.py": "",
        "pipeline/core/__init__.py": "",
        "pipeline/entry.py": "import json\nfrom pipeline.core import helper\n\ndef later():\n    from . import lazy\n",
        "pipeline/core/helper.py": "from .. import shared\n",
        "pipeline/shared.py": "import torch\n",
        "pipeline/lazy.py": "",
        "pipeline/unused.py": "",
        "modules/__init__.py": "",
        "modules/family.py": "from pipeline import shared\n",
    })
    found = [p.relative_to(tmp_path).as_posix() for p in codedeps.closure("pipeline.entry", root=tmp_path)]
    assert found == ["pipeline/__init__.py", "pipeline/core/__init__.py", "pipeline/core/helper.py",
                     "pipeline/entry.py", "pipeline/lazy.py", "pipeline/shared.py"]
    found = [p.relative_to(tmp_path).as_posix() for p in codedeps.closure("modules.family", root=tmp_path)]
    assert found == ["modules/__init__.py", "modules/family.py", "pipeline/__init__.py", "pipeline/shared.py"]


def test_the_dataset_registry_depends_on_every_dataset_file_of_its_folder(tmp_path):
    """pipeline/datasets/__init__.py imports its folder's files by listing them: a new file is in the closure
    of whatever imports the registry, a shared `_` file only through the datasets that import it."""
    write(tmp_path, {
        "pipeline/__init__.py": "",
        "pipeline/prepare.py": "from pipeline.datasets import DATASETS\n",
        "pipeline/datasets/__init__.py": "",
        "pipeline/datasets/toy.py": "from pipeline.datasets import _shared\n",
        "pipeline/datasets/_shared.py": "",
        "pipeline/datasets/_unused.py": "",
    })
    found = [p.relative_to(tmp_path).as_posix() for p in codedeps.closure("pipeline.prepare", root=tmp_path)]
    assert found == ["pipeline/__init__.py", "pipeline/datasets/__init__.py", "pipeline/datasets/_shared.py",
                     "pipeline/datasets/toy.py", "pipeline/prepare.py"]


def test_dvc_yaml_names_no_code_file_but_the_derived_ones():
    """Only the codedeps stage reads the code folders; every other stage's code is its codedeps/ file."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        deps = (stage.get("do") or stage)["deps"]
        code = [d for d in deps if d.split("/")[0] in codedeps.PACKAGES]
        if name == "codedeps":
            assert sorted(code) == sorted(codedeps.PACKAGES)
        else:
            assert code == [], f"{name}: code kept by hand: {code}"
            assert any(d.startswith("codedeps/") for d in deps), name


def test_no_stage_names_params_each_depends_on_its_params_file():
    """DVC parses params.yaml anew for every stage that names params, and copies every value it names into
    dvc.lock, which it parses and rewrites after each stage: no stage names params. codedeps depends on the
    whole file; every other stage on the file under codedeps/params/ that holds what its process reads.
    params.yaml is a top-level params file, so `dvc exp show` and `dvc params diff` still show every param."""
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert dvc_yaml["params"] == ["params.yaml"]
    written = {f"codedeps/{codedeps.PARAMS}/{name}.json" for name in codedeps.stage_params(load(family_checks=False))}
    for name, stage in dvc_yaml["stages"].items():
        stage = stage.get("do") or stage
        assert "params" not in stage, f"{name}: names params, which makes DVC parse params.yaml again"
        if name == "codedeps":
            assert "params.yaml" in stage["deps"]
            continue
        own = [d.replace("${key}", "softmax_digits") for d in stage["deps"] if d.startswith(f"codedeps/{codedeps.PARAMS}/")]
        assert len(own) == 1 and own[0] in written, f"{name}: {own}"


def test_an_experiments_params_file_is_its_resolved_config_and_changes_with_it_alone(tmp_path):
    """Editing one experiment changes its file only; editing `defaults` changes the files of the experiments
    whose resolved config it changes, not that of one which sets the key itself."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["experiments"] = {name: raw["experiments"][name] for name in ("softmax_digits", "mlp_digits", "cnn_digits")}
    raw["targets"] = {}
    for name in ("softmax_digits", "cnn_digits"):
        raw["experiments"][name].pop("batch_size", None)  # from defaults
    raw["experiments"]["mlp_digits"]["batch_size"] = 32  # its own

    def files(params: dict) -> dict[str, str]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        config = load(tmp_path / "params.yaml", family_checks=False)
        return {name: codedeps.as_json(value) for name, value in codedeps.stage_params(config).items()}

    before = files(raw)
    resolved = json.loads(before["experiments/cnn_digits"])
    assert resolved["batch_size"] == raw["defaults"]["batch_size"] and resolved["model"] == raw["experiments"]["cnn_digits"]["model"]
    raw["experiments"]["cnn_digits"]["optimizer"]["lr"] = 0.5
    after = files(raw)
    assert [name for name in before if before[name] != after[name]] == ["experiments/cnn_digits"]
    raw["defaults"]["batch_size"] += 1
    again = files(raw)
    assert sorted(name for name in after if after[name] != again[name]) == ["experiments/cnn_digits", "experiments/softmax_digits"]


def test_the_committed_codedeps_files_are_current():
    """What the codedeps stage would write now is what is committed (else a fresh clone's `dvc status`
    would not be clean)."""
    committed = {p.relative_to(ROOT / "codedeps").as_posix(): p.read_text() for p in (ROOT / "codedeps").rglob("*.json")}
    assert codedeps.contents() == committed, "run `python -m pipeline.codedeps` (or `dvc repro codedeps`) and commit codedeps/"


def test_every_stages_closure_is_what_the_standard_librarys_modulefinder_finds():
    """An independent computation: modulefinder reads the compiled bytecode, not the syntax tree."""
    import modulefinder

    for name, entries in codedeps.stage_entries().items():
        finder = modulefinder.ModuleFinder(path=[str(ROOT)])  # project modules only: torch and the rest stay unread
        for entry in entries:
            finder.import_hook(entry)
        if "pipeline.datasets" in finder.modules:  # the registry imports its folder's files by name, unseen by modulefinder
            for dataset in DATASETS:
                finder.import_hook(f"pipeline.datasets.{dataset}")
        if "pipeline.references" in finder.modules:  # so does the report's folder of reference rows
            for dataset in references.DATASETS:
                finder.import_hook(f"pipeline.references.{dataset}")
        found = sorted(Path(m.__file__) for m in finder.modules.values() if m.__file__)
        assert found == codedeps.closure(*entries), name


def test_editing_a_shared_file_touches_only_the_families_that_import_it():
    def users(path: str) -> set[str]:
        return {name for name in codedeps.stage_entries()
                if path in json.loads((ROOT / "codedeps" / f"{name}.json").read_text())}

    # every family stacking affine layers builds them with modules/_feedforward.py; GraphSAGE through the GCN;
    # GAT takes its activations from it; the Siamese spatial transformer its localization network; the transformer encoder-decoder
    # through the transformer (its attention formula and positions)
    stacks = {"mlp", "autoencoder", "vae", "gan", "dqn", "ppo", "transformer", "ddpm", "gcn", "sage", "gat", "reinforce", "seq2seq_transformer", "gin", "siamese"}
    assert users("modules/_feedforward.py") == {f"{kind}/{family}" for kind in ("train", "evaluate") for family in stacks}
    # the MLP family itself only by the families built on it or sharing its config checks; not by those that share its layers
    assert users("modules/mlp.py") == {f"{kind}/{family}" for kind in ("train", "evaluate") for family in ("mlp", "gcn", "sage", "gat")}


def test_the_resume_fingerprint_hashes_the_train_stages_code_closure(tmp_path, monkeypatch):
    _, experiment = load_experiment("mlp_digits")
    before = resume.fingerprint(experiment)
    files = codedeps.files_of(*codedeps.family_entries("mlp")["train"])
    assert "pipeline/core/trainer.py" in files and "modules/mlp.py" in files
    original = Path.read_bytes

    def edited(path: Path) -> bytes:  # as if modules/mlp.py had changed on disk
        return original(path) + (b"# edited\n" if path == ROOT / "modules" / "mlp.py" else b"")

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert resume.fingerprint(experiment) != before
    _, cnn = load_experiment("cnn_digits")
    monkeypatch.undo()
    unchanged = resume.fingerprint(cnn)
    monkeypatch.setattr(Path, "read_bytes", edited)
    assert resume.fingerprint(cnn) == unchanged  # the CNN family does not import modules/mlp.py


def test_the_projects_modules_import_one_way_with_no_cycle():
    """base <- spec <- datasets/, params, files, data <- modules/ <- pipeline/core <- the stage entry points: an import at any
    depth of a file counts, so a cycle hidden inside a function fails too."""
    graph = {}
    for path in sorted(p for package in codedeps.PACKAGES for p in (ROOT / package).rglob("*.py")):
        imported = (codedeps.module_path(name) for name in codedeps.imported_names(path))
        graph[path] = {p for p in imported if p is not None and p != path and p.name != "__init__.py"}
    done: set[Path] = set()

    def visit(path: Path, trail: list[Path]) -> None:
        if path in trail:
            cycle = trail[trail.index(path):] + [path]
            raise AssertionError("import cycle: " + " -> ".join(p.relative_to(ROOT).as_posix() for p in cycle))
        if path not in done:
            for imported in sorted(graph[path]):
                visit(imported, trail + [path])
            done.add(path)

    for path in graph:
        visit(path, [])


# Lightning's loop objects and the private attributes of Lightning, PyTorch and the standard library
# that this project once reached into; each ties the code to one library version.
INTERNALS = {"fit_loop", "epoch_loop", "batch_progress", "predict_loop", "_trainer", "_should_update",
             "_current_fx_name", "_run_exitfuncs"}
ALLOWED: set[tuple[str, str]] = set()  # (file, name) pairs allowed to reach in: none


def test_no_project_code_or_test_reaches_into_library_internals():
    import ast

    found = []
    for path in sorted(p for folder in ("pipeline", "modules", "tests") for p in (ROOT / folder).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in INTERNALS and (name, node.attr) not in ALLOWED:
                found.append(f"{name}:{node.lineno} .{node.attr}")
    assert found == []
