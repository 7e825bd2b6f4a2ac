"""The real `dvc repro` in a throw-away copy of the project on shrunk params (the first half of
conftest.E2E_EXPERIMENTS; tests/e2e/test_pipeline_e2e_more.py runs these checks on the other half), a
second repro, a second clean repro, and the MLflow runs it left, read back through the MLflow client."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import dvc, git_init, python

from pipeline.core.trainer import LOG_INTERVAL
from pipeline.datasets import DATASETS
from pipeline.spec import GRAPH_FILE
from pipeline.params import family_class

pytestmark = pytest.mark.slow

CLASSIFICATION_KEYS = {"test/accuracy", "test/f1", "test/auroc", "test/ece"}
REGRESSION_KEYS = {"test/mse", "test/mae", "test/r2"}
TEST_KEYS = {  # by dataset: its task's metrics (the AR series adds its error over the noise floor)
    "diabetes": REGRESSION_KEYS,
    "ar_series": REGRESSION_KEYS | {"test/mse_over_noise"},
    "reverse_digits": {"test/token_accuracy", "test/exact_match", "test/perplexity"},
    "sbm": CLASSIFICATION_KEYS | {"test/accuracy_mean", "test/accuracy_std"},  # over the re-fits with seeds 0-9
    "cartpole": {"test/mean_return", "test/std_return", "test/min_return", "test/max_return"},  # 100 greedy episodes
    # and on a known model, the greedy policy's exact value beside value iteration's optimum
    "cliff_walking": {"test/mean_return", "test/std_return", "test/min_return", "test/max_return",
                      "test/policy_value", "test/optimal_value"},
    "digits_oneshot": {"test/oneshot_accuracy", "test/oneshot_accuracy_stderr",  # unseen classes, and new images of the seen ones
                       "test/seen_classes_oneshot_accuracy", "test/seen_classes_oneshot_accuracy_stderr"},
}


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


# Tracking credentials a user keeps in the environment: they must never reach the store or the logs.
SECRET = "s3cr3t-" + __import__("uuid").uuid4().hex  # made at run time: this file, copied, does not hold it
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": f"user-{SECRET}", "MLFLOW_TRACKING_PASSWORD": SECRET,
               "MLFLOW_TRACKING_TOKEN": SECRET}


def clean_repro(path, *targets: str, experiments: tuple[str, ...]):
    """`dvc repro [targets]` in a fresh git copy of the project on the shrunk `experiments`."""
    from conftest import copy_project, shrink_params

    project = copy_project(path)
    params = shrink_params(project / "params.yaml", keep=experiments)
    git_init(project)
    imports = path.parent / "imports"  # each stage process's imported project files (tests/e2e/import_log)
    imports.mkdir()
    hook = {"PYTHONPATH": str(Path(__file__).parent / "import_log"), "MEDL_IMPORT_LOG": str(imports)}
    # Python's own warning filters, as a user's shell has them (the tests' env ignores every warning):
    # test_stages_print_progress_and_a_summary_line_only reads what the stages print.
    warnings = {"PYTHONWARNINGS": ""}
    result = dvc("repro", *targets, cwd=project, extra_env={**CREDENTIALS, **hook, **warnings})
    return project, params, result


FIRST_METRICS: dict[str, bytes] = {}  # metrics/*.json as the shared repro wrote them (later tests change it)


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    """One full `dvc repro` of the shrunk pipeline, shared by the tests of this file."""
    from conftest import E2E_HALVES

    project, params, result = clean_repro(tmp_path_factory.mktemp("e2e") / "project", experiments=E2E_HALVES[0])
    FIRST_METRICS.update({p.name: p.read_bytes() for p in (project / "metrics").glob("*.json")})
    return project, params, result


def test_repro_runs_every_stage_in_order(repro):
    project, params, result = repro
    ran = stages_run(result.stdout)
    names = list(params["experiments"])
    assert ran[:2] == ["codedeps", "prepare"] and ran[-1] == "report"
    assert sorted(ran[2:-1]) == sorted(["scorer", "baselines"] + [f"train@{n}" for n in names] + [f"evaluate@{n}" for n in names])
    assert ran.index("scorer") < ran.index("baselines")  # the generative reference rows are scored with it
    for name in names:
        assert ran.index(f"train@{name}") < ran.index(f"evaluate@{name}")
        assert ran.index("scorer") < ran.index(f"evaluate@{name}")


# What stages printed before they were made quiet (pipeline.cli.quiet, pipeline.core.trainer.EpochProgressBar):
# Lightning's notices, the srun hint, the logger's version in the bar, torch's sparse-tensor warning, and
# the whole of comparison.md from the report.
NOISE = ("GPU available", "TPU available", "litlogger", "Loading `train_dataloader`", "`Trainer.fit` stopped",
         "srun", "v_num", "Sparse invariant checks", "Validation:", "Warning", "# Comparison", "| name |")
PROGRESS = re.compile(r"(it/s|s/it)[,\]]")  # tqdm's rate, in each state of a bar it writes


def stage_logs(output: str) -> dict[str, str]:
    """What each stage printed on stdout, by stage name."""
    parts = re.split(r"Running stage '([^']+)':\n", output)
    return dict(zip(parts[1::2], parts[2::2]))


def test_stages_print_progress_and_a_summary_line_only(repro):
    project, params, result = repro
    printed = result.stdout + result.stderr
    for noise in NOISE:
        assert noise not in printed, noise
    logs = stage_logs(result.stdout)
    for name in params["experiments"]:
        train = logs[f"train@{name}"]
        summary = re.search(rf"^{re.escape(name)}: (\d+) epochs in ([\d.]+) s, kept epoch", train, re.MULTILINE)
        assert summary, train
        # Off a terminal the bar writes at most every LOG_INTERVAL seconds and once when it closes: not a
        # line per epoch, nor per batch. (Each write is a line here: text mode reads its \r as a newline.)
        writes = len(PROGRESS.findall(train))
        assert 1 <= writes <= 2 + float(summary[2]) / LOG_INTERVAL, train
        assert len(train.encode()) <= 400 * writes + 300, train
        assert re.search(rf"^{re.escape(name)}: .*test/", logs[f"evaluate@{name}"], re.MULTILINE)
    scorer = logs.get("scorer", "")  # 20 epochs of the image scorer, where an image dataset is prepared
    assert len(PROGRESS.findall(scorer)) <= 4 and len(scorer.encode()) <= 2000, scorer
    assert re.search(rf"^report: {len(params['experiments'])} experiments beside \d+ baselines", logs["report"], re.MULTILINE)
    own = logs["report"].split("Updating lock file")[0]  # what follows is DVC's
    assert all(line.startswith(("> python", "[", "report: ")) for line in own.splitlines() if line), own


def test_metrics_files_have_the_task_keys(repro):
    project, params, _ = repro
    for name, experiment in params["experiments"].items():
        metrics = json.loads((project / "metrics" / f"{name}.json").read_text())
        expected = TEST_KEYS.get(experiment["dataset"], CLASSIFICATION_KEYS)
        assert set(metrics) == expected, name
        assert all(isinstance(v, float) for v in metrics.values())
        assert all(0 <= metrics[key] <= 1 for key in ("test/accuracy", "test/f1", "test/auroc") if key in metrics), name


def test_the_run_summarys_throughput_is_the_fits_work_over_its_seconds(repro):
    import torch

    project, params, _ = repro
    for name, experiment in params["experiments"].items():
        run = json.loads((project / "runs" / f"{name}.json").read_text())
        kind = "rl" if DATASETS[experiment["dataset"]].is_environment else DATASETS[experiment["dataset"]].kind
        assert run["throughput_unit"] == {"rl": "environment steps per second", "graph": "training nodes per second",
                                          "graphs": "training graphs per second", "samples": "samples per second"}[kind], name
        if kind == "rl":
            rows = list(csv.DictReader((project / "plots" / "validation" / f"{name}.csv").open()))
            work = float(rows[-1]["train/env_steps"])
        else:
            folder = project / "data" / "prepared" / experiment["dataset"]
            if kind == "graph":  # full-batch: the training nodes, each epoch
                size = int(torch.load(folder / GRAPH_FILE, weights_only=True)["train_mask"].sum())
            else:
                size = len(torch.load(folder / "train.pt", weights_only=True)["y"])
            work = run["epochs_trained"] * size
        assert run["throughput"] == pytest.approx(work / run["train_seconds"], rel=0.02), name  # train_seconds is rounded to ms


def test_report_has_a_row_per_experiment_and_baselines(repro):
    project, params, _ = repro
    report = (project / "reports" / "comparison.md").read_text()
    for name in params["experiments"]:
        assert f"| {name} | model |" in report
    for baseline in ("least_squares", "logistic_regression", "svc", "mlp_classifier", "noise_floor"):
        assert f"| {baseline} | baseline |" in report
    assert (project / "reports" / "comparison.png").stat().st_size > 1000


def test_mlflow_holds_one_complete_run_per_experiment(repro):
    from mlflow import MlflowClient

    project, params, _ = repro
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(params["tracking"]["experiment_name"])
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == sorted(params["experiments"])
    assert [e.name for e in client.search_experiments()] == [experiment.name]  # no empty Default beside it
    for run in runs:
        name = run.info.run_name
        assert run.info.status == "FINISHED", name
        tags = run.data.tags
        assert tags["family"] == params["experiments"][name]["family"]
        assert tags["dataset"] == params["experiments"][name]["dataset"]
        assert tags["dvc.stage"] == f"train@{name}" and tags["dvc.evaluated"] == "true"
        assert re.fullmatch(r"[0-9a-f]{40}", tags["mlflow.source.git.commit"])
        assert int(tags["book.chapter"]) in (2, 3, 5, 6, 7, 8)  # 8: gcn_sbm
        optimizer = {**params["defaults"]["optimizer"], **params["experiments"][name].get("optimizer", {})}  # as merged
        assert run.data.params["optimizer.name"] == optimizer["name"]
        assert run.data.params["max_epochs"] == str(params["experiments"][name]["max_epochs"])
        experiment = params["experiments"][name]
        monitor = family_class(experiment["family"]).monitors(DATASETS[experiment["dataset"]].spec)[0]  # val/loss, val/mean_return
        history = client.get_metric_history(run.info.run_id, monitor)
        assert len(history) == params["experiments"][name]["max_epochs"], name
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == len(history)
        # MLflow's step is the learning curve's x: the epoch, or a reinforcement-learning agent's environment steps
        curve = list(csv.DictReader((project / "plots" / "validation" / f"{name}.csv").open()))
        x = "train/env_steps" if "train/env_steps" in curve[0] else "epoch"
        assert sorted(m.step for m in history) == [int(float(row[x])) for row in curve], name
        assert tags["mlflow.source.name"] == f"dvc repro train@{name}" and f"{name}: the " in tags["mlflow.note.content"]
        assert "system/cpu_utilization_percentage" in run.data.metrics, name  # tracking.system_metrics: true
        test_key = sorted(TEST_KEYS.get(params["experiments"][name]["dataset"], CLASSIFICATION_KEYS))[0]
        assert test_key in run.data.metrics
        metrics_file = json.loads((project / "metrics" / f"{name}.json").read_text())
        assert run.data.metrics[test_key] == pytest.approx(metrics_file[test_key])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint", "figures", "config.json"} <= artifacts
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/best.ckpt"]
        figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert "figures/learning_curve.png" in figures


def test_second_repro_does_nothing_and_one_param_reruns_one_experiment(repro):
    project, params, _ = repro
    again = dvc("repro", cwd=project)
    assert stages_run(again.stdout) == []

    edited = yaml.safe_load((project / "params.yaml").read_text())
    edited["experiments"]["softmax_digits"]["optimizer"]["lr"] = 0.02
    (project / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    rerun = dvc("repro", cwd=project)
    # codedeps checks the whole params file first; its files are unchanged, so only the one experiment reruns
    assert stages_run(rerun.stdout) == ["codedeps", "train@softmax_digits", "evaluate@softmax_digits", "report"]

    status = dvc("status", "--json", cwd=project)
    assert json.loads(status.stdout) == {}


# Run in the copy, in a fresh interpreter: each model rebuilt from its checkpoint alone; a classifier of
# samples also predicts the test split, for its accuracy.
LOAD_EACH_MODEL = """
import json, sys, torch
from pipeline import data
from pipeline.params import family_class, load_experiment
accuracies = {}
for name in sys.argv[1:]:
    _, experiment = load_experiment(name)
    model = family_class(experiment.family).load_from_checkpoint(f"models/{name}/best.ckpt", map_location="cpu").eval()
    assert model.hparams["optimizer"] == {**vars(experiment.optimizer)}, name
    assert model.data_spec == data.DATASETS[experiment.dataset].spec, name
    if model.data_spec.task == "multiclass" and model.DATA_KIND != "graph":
        x, y = data.load_split(experiment.dataset, "test")
        with torch.no_grad():
            accuracies[name] = (model(x).argmax(-1) == y).double().mean().item()
print(json.dumps(accuracies))
"""


def test_every_model_is_rebuilt_by_load_from_checkpoint_alone_in_a_fresh_process(repro):
    project, params, _ = repro
    result = python("-c", LOAD_EACH_MODEL, *params["experiments"], cwd=project)
    accuracies = json.loads(result.stdout.strip().splitlines()[-1])
    for name, accuracy in accuracies.items():
        assert round(accuracy, 6) == json.loads((project / "metrics" / f"{name}.json").read_text())["test/accuracy"], name
    assert accuracies or not any(e["dataset"] == "digits" for e in params["experiments"].values())


# The families that import modules/mlp.py, directly or through another family (read from their imports;
# the others that stack affine layers share modules/_feedforward.py, not the MLP family).
MLP_USERS = {"mlp", "gcn", "sage"}


def test_a_code_edit_reruns_exactly_the_stages_whose_processes_import_it(repro):
    project, params, _ = repro

    def stale_after_editing(path: str) -> list[str]:
        original = (project / path).read_text()
        (project / path).write_text(original + "\n# edited\n")
        try:
            dvc("repro", "codedeps", cwd=project)
            return sorted(json.loads(dvc("status", "--json", cwd=project).stdout))
        finally:
            (project / path).write_text(original)
            dvc("repro", "codedeps", cwd=project)

    assert stale_after_editing("pipeline/report.py") == ["report"]
    # the report reads the baselines; only their own stage fits them, once per change of data or code
    assert stale_after_editing("pipeline/references/digits_oneshot.py") == ["baselines"]
    assert stale_after_editing("pipeline/html_report.py") == ["report"]
    users = sorted(f"{kind}@{name}" for name, experiment in params["experiments"].items()
                   if experiment["family"] in MLP_USERS for kind in ("train", "evaluate"))
    assert users and stale_after_editing("modules/mlp.py") == users
    cnn = sorted(f"{kind}@{name}" for name, experiment in params["experiments"].items()
                 if experiment["family"] == "cnn" for kind in ("train", "evaluate"))
    # the scorer is a CNN: the baselines stage scores the reference samples with it, and the generative families'
    # evaluation scores their samples with it; no other kind's evaluation imports it, nor the report (it only reads)
    generative = [f"evaluate@{name}" for name, experiment in params["experiments"].items()
                  if family_class(experiment["family"]).EVALUATION == "generative"]
    assert cnn and stale_after_editing("modules/cnn.py") == sorted({"baselines", "scorer", *cnn, *generative})
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}


# Shuffled batches, dropout, batch norm, a sampled series and random strings: what a second run could draw differently.
DETERMINISM = ("mlp_digits", "lstm_ar_series", "transformer_seq2seq")


def test_a_second_clean_repro_gives_byte_identical_metrics(repro, tmp_path):
    _, params, _ = repro
    assert len(FIRST_METRICS) == len(params["experiments"])
    again, _, _ = clean_repro(tmp_path / "again", *(f"evaluate@{name}" for name in DETERMINISM), experiments=tuple(params["experiments"]))
    second = {p.name: p.read_bytes() for p in (again / "metrics").glob("*.json")}
    assert sorted(second) == sorted(f"{name}.json" for name in DETERMINISM)
    for name, metrics in second.items():
        assert metrics == FIRST_METRICS[name], name


def test_tracking_credentials_never_reach_the_store_the_outputs_or_the_logs(repro):
    project, _, result = repro
    assert SECRET not in result.stdout + result.stderr
    leaks = [str(p.relative_to(project)) for p in project.rglob("*")
             if p.is_file() and ".git" not in p.parts and SECRET.encode() in p.read_bytes()]
    assert leaks == []
    assert (project / "mlflow.db").stat().st_size > 0 and any((project / "mlruns").rglob("*.ckpt"))


def test_each_stage_imported_only_files_of_its_derived_code_dependencies(repro):
    """What every stage's processes really imported is within its codedeps/ file (which may hold more:
    it follows imports inside functions whatever branch runs), so no code change can go unseen by DVC."""
    project, params, _ = repro
    records = [json.loads(p.read_text()) for p in (project.parent / "imports").glob("*.json")]
    seen = set()
    for record in records:
        stage = (record["stage"] or "").rpartition(":")[2]
        if not stage:
            continue  # dvc itself, or a helper process outside a stage
        seen.add(stage)
        if stage == "codedeps":  # it depends on the whole of pipeline/ and modules/
            continue
        kind, _, experiment = stage.partition("@")
        name = f"{kind}/{params['experiments'][experiment]['family']}" if experiment else kind
        declared = json.loads((project / "codedeps" / f"{name}.json").read_text())
        assert set(record["files"]) <= set(declared), f"{stage} imported {set(record['files']) - set(declared)}"
    assert {"codedeps", "prepare", "scorer", "baselines", "report"} | {f"{k}@{n}" for k in ("train", "evaluate") for n in params["experiments"]} <= seen
