"""Stage entry points on bad input: exit 2, one line naming the key or file, nothing written,
no MLflow run created."""

from __future__ import annotations

import pytest
import yaml
from conftest import alias_bomb, dump, python


def snapshot(project):
    return sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())


def test_typo_in_params_stops_train_before_anything_is_written(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["experiments"]["mlp_digits"]["optimizer"]["lerning_rate"] = 0.1
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    before = snapshot(project)
    for stage in (["pipeline.prepare"], ["pipeline.train", "mlp_digits"], ["pipeline.train", "softmax_digits"]):
        result = python("-m", *stage, cwd=project, check=False)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines == [
            "error: experiments.mlp_digits.optimizer.lerning_rate: unknown key; "
            "allowed: lr, momentum, name, nesterov, weight_decay"
        ]
    assert snapshot(project) == before
    assert not (project / "mlflow.db").exists()


def test_missing_prepared_data_names_the_stage_to_run(project):
    before = snapshot(project)
    result = python("-m", "pipeline.train", "softmax_digits", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: data/prepared/digits/train.pt: prepared dataset missing; run `dvc repro prepare` to build it"
    )
    assert snapshot(project) == before
    assert not (project / "mlflow.db").exists()


def test_unknown_experiment_and_missing_checkpoint(project):
    result = python("-m", "pipeline.train", "nope", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown experiment 'nope'; params.yaml defines: linear_diabetes")
    result = python("-m", "pipeline.evaluate", "cnn_digits", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: models/cnn_digits/best.ckpt: missing; run `dvc repro train@cnn_digits` to build it"
    )


def test_unreachable_tracking_server_stops_train_and_evaluate_before_any_work(project):
    import subprocess
    import sys
    import time

    from conftest import env, free_port

    port = free_port()  # a loopback port nobody listens on
    python("-m", "pipeline.prepare", cwd=project)
    before = snapshot(project)
    uri = f"http://127.0.0.1:{port}"
    for stage in (["pipeline.train", "mlp_digits"], ["pipeline.evaluate", "mlp_digits"]):
        if stage[0] == "pipeline.evaluate":  # evaluate needs a trained model first: make one, locally
            python("-m", "pipeline.train", "mlp_digits", cwd=project)
            before = snapshot(project)
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", *stage], cwd=project, env={**env(), "MLFLOW_TRACKING_URI": uri},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [
            f"error: MLFLOW_TRACKING_URI={uri}: the tracking server does not answer (MlflowException); "
            "start it, or unset MLFLOW_TRACKING_URI to track into the local mlflow.db"
        ]
        assert time.monotonic() - start < 60  # not MLflow's minutes of retries
        assert snapshot(project) == before


# Params files that are not even a mapping: raw text and the pinned message.
BAD_FILES = [
    ("", r"^params\.yaml: empty; it must map tracking, data, defaults, experiments, examples, targets$"),
    ("experiments: [\n", r"^params\.yaml: not valid YAML at line 2, column 1: expected the node content, but found '<stream end>'$"),
    ("defaults:\n  seed: 0\n experiments: {}\n", r"^params\.yaml: not valid YAML at line 3, column \d+: .+$"),
    ("defaults:\n\tseed: 0\n", r"^params\.yaml: not valid YAML at line 2, column 1: found character '\\t' that cannot start any token$"),
    ("- tracking\n- data\n",
     r"^params\.yaml: must be a mapping of tracking, data, defaults, experiments, examples, targets, got a list$"),
    ("just words\n",
     r"^params\.yaml: must be a mapping of tracking, data, defaults, experiments, examples, targets, got a str$"),
    (alias_bomb(), r"^params\.yaml: YAML anchor \(&\) at line 1, column 5; params take no anchors or aliases: write the values out$"),
    ("experiments: {a: *a}\n", r"^params\.yaml: YAML alias \(\*\) at line 1, column 18; "),
    ("experiments: " + "[" * 33 + "]" * 33 + "\n", r"^params\.yaml: lists and mappings nested more than 32 deep at line 1, "),
]


# Runs every case through the first stage of `dvc repro`, codedeps (which checks the whole params file),
# then the train stage's entry point (`cli.run(train.main, [EXPERIMENT])`, what `python -m pipeline.train`
# exits with), in one process of the copy, so the imports are paid once; the two tests above do the same
# through real `python -m` processes.
DRIVER = """
import contextlib, io, json, sys
from pathlib import Path
from pipeline import cli, codedeps, train

def snapshot():
    return sorted(str(p) for p in Path(".").rglob("*") if p.is_file())

results = []
for text in json.loads(Path(sys.argv[1]).read_text()):
    Path("params.yaml").write_text(text)
    before, err = snapshot(), io.StringIO()
    with contextlib.redirect_stderr(err):  # as `dvc repro` runs them: codedeps checks all of params.yaml first
        code = cli.run(codedeps.main, []) or cli.run(train.main, ["mlp_digits"])
    results.append({"code": code, "stderr": err.getvalue(), "changed": snapshot() != before,
                    "mlflow_db": Path("mlflow.db").exists()})
Path(sys.argv[2]).write_text(json.dumps(results))
"""


def _cases():
    from params_cases import BAD_EDITS

    for index, (edit, message) in enumerate(BAD_EDITS):
        yield pytest.param(edit, message, id=f"edit{index:02d}")
    for index, (text, message) in enumerate(BAD_FILES):
        yield pytest.param(text, message, id=f"file{index}")


CASES = list(_cases())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Each case's exit code, stderr and whether anything changed, from one prepared copy."""
    import copy
    import json

    from conftest import copy_project, shrink_params

    root = tmp_path_factory.mktemp("bad-input")
    project = copy_project(root / "project")
    good = shrink_params(project / "params.yaml")
    python("-m", "pipeline.prepare", cwd=project)
    texts = []
    for case in CASES:
        bad = case.values[0]
        if isinstance(bad, str):
            texts.append(bad)
        else:
            raw = copy.deepcopy(good)
            bad(raw)
            texts.append(dump(raw))
    (root / "cases.json").write_text(json.dumps(texts))
    python("-c", DRIVER, str(root / "cases.json"), str(root / "results.json"), cwd=project)
    return dict(zip((case.id for case in CASES), json.loads((root / "results.json").read_text())))


@pytest.mark.parametrize(("bad", "message"), CASES)
def test_malformed_params_stop_the_stage_with_one_pinned_line_and_change_nothing(outcomes, request, bad, message):
    import re

    outcome = outcomes[request.node.callspec.id]
    assert outcome["code"] == 2, outcome["stderr"][-2000:]
    [line] = outcome["stderr"].strip().splitlines()
    assert line.startswith("error: ") and re.search(message, line[len("error: "):]), line
    assert not outcome["changed"]  # nothing under data/, models/, metrics/, checkpoints/
    assert not outcome["mlflow_db"]


def test_truncated_prepared_data_or_model_is_named_with_the_stage_that_rebuilds_it(project):
    python("-m", "pipeline.prepare", cwd=project)
    python("-m", "pipeline.train", "softmax_digits", cwd=project)
    python("-m", "pipeline.evaluate", "softmax_digits", cwd=project)

    model = project / "models" / "softmax_digits" / "best.ckpt"
    model.write_bytes(model.read_bytes()[:1000])
    before = snapshot(project)
    metrics = (project / "metrics" / "softmax_digits.json").read_bytes()
    result = python("-m", "pipeline.evaluate", "softmax_digits", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: models/softmax_digits/best.ckpt: unreadable checkpoint (RuntimeError); "
        "run `dvc repro -f train@softmax_digits` to rebuild it"
    ]
    assert snapshot(project) == before and (project / "metrics" / "softmax_digits.json").read_bytes() == metrics

    data = project / "data" / "prepared" / "digits" / "test.pt"
    data.write_bytes(data.read_bytes()[:1000])
    for stage in (["pipeline.train", "softmax_digits"], ["pipeline.evaluate", "softmax_digits"]):
        result = python("-m", *stage, cwd=project, check=False)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "error: data/prepared/digits/test.pt: unreadable (RuntimeError); run `dvc repro -f prepare` to rebuild it"
        ]
    assert snapshot(project) == before


def test_bad_names_bombs_and_numbers_stop_train_in_one_short_line_and_touch_nothing(project):
    """Issue 20, items 1, 7 and 8 through real `python -m pipeline.train` processes: a name that climbs out of
    models/ or carries a shell command, an alias bomb (9 levels of 9: billions of values once expanded), and
    numbers that pass a sign check (NaN, inf) or are out of range. Each stops before any work: exit 2,
    one line, nothing written (models/ kept whole), no MLflow store, no file the name's command would touch."""
    params_file = project / "params.yaml"
    good = params_file.read_text()
    raw = yaml.safe_load(good)
    keep = project / "models" / "softmax_digits" / "best.ckpt"  # what an rmtree of models/NAME/.. would delete
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"weights")

    def renamed(name):
        return dump({**raw, "experiments": {(name if key == "mlp_digits" else key): spec
                                            for key, spec in raw["experiments"].items()}})

    def edited(**changes):
        return dump({**raw, "experiments": {**raw["experiments"], "mlp_digits": {**raw["experiments"]["mlp_digits"], **changes}}})

    rule = "allowed: up to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"
    cases = [
        (renamed("../models"), "mlp_digits", f"error: experiments: '../models' is not an experiment name; {rule}"),
        (renamed("a;touch PWNED"), "mlp_digits", f"error: experiments: 'a;touch PWNED' is not an experiment name; {rule}"),
        (good, "../models", f"error: experiment name: '../models' is not an experiment name; {rule}"),
        (good, "a;touch PWNED", f"error: experiment name: 'a;touch PWNED' is not an experiment name; {rule}"),
        (good + alias_bomb(), "mlp_digits", f"error: params.yaml: YAML anchor (&) at line {good.count(chr(10)) + 1}, "
                                            "column 5; params take no anchors or aliases: write the values out"),
        (edited(optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": float("nan")}), "mlp_digits",
         "error: experiments.mlp_digits.optimizer.weight_decay: must be a finite number, got nan"),
        (edited(optimizer={"name": "adamw", "lr": float("inf")}), "mlp_digits",
         "error: experiments.mlp_digits.optimizer.lr: must be a finite number, got inf"),
        (edited(seed=-1), "mlp_digits", "error: experiments.mlp_digits.seed: must be between 0 and 2**32 - 1 "
                                        "(a seed numpy and Lightning accept), got -1"),
        (edited(seed=2**40), "mlp_digits", "error: experiments.mlp_digits.seed: must be between 0 and 2**32 - 1 "
                                           "(a seed numpy and Lightning accept), got 1099511627776"),
        (edited(max_epochs=10**9), "mlp_digits",
         "error: experiments.mlp_digits.max_epochs: must be at most 100000 (this project's bound on epochs), got 1000000000"),
    ]
    for text, name, line in cases:
        params_file.write_text(text)
        before = snapshot(project)
        result = python("-m", "pipeline.train", name, cwd=project, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(result.stderr) < 1000  # an alias bomb's expansion printed would be gigabytes
        assert result.stderr.strip().splitlines() == [line]
        assert snapshot(project) == before and keep.read_bytes() == b"weights"
        assert not (project / "PWNED").exists() and not (project / "mlflow.db").exists()
