"""The launcher prefix from params: the exact torchrun / srun commands, and what stops before launch."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from pipeline.core import launch
from pipeline.params import ConfigError, load_experiment


def experiment(launcher: str, args=(), **trainer):
    _, exp = load_experiment("mlp_digits")
    return dataclasses.replace(
        exp,
        launcher=dataclasses.replace(exp.launcher, name=launcher, args=list(args)),
        trainer=dataclasses.replace(exp.trainer, **trainer),
    )


@pytest.fixture(autouse=True)
def not_launched(monkeypatch):
    for key in (launch.LAUNCHED, "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)


def test_no_launcher_trains_in_this_process():
    assert launch.command(experiment("none", devices=2, strategy="ddp")) is None


def test_torchrun_command_starts_devices_processes_per_node():
    cmd = launch.command(experiment("torchrun", ["--max-restarts=0"], devices=2, num_nodes=1, strategy="ddp"), python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1", "--max-restarts=0",
                   "-m", "pipeline.train", "mlp_digits"]


def test_srun_command_has_one_task_per_device():
    cmd = launch.command(experiment("srun", devices=4, num_nodes=2, strategy="ddp"), python="py")
    assert cmd == ["srun", "--nodes=2", "--ntasks-per-node=4", "py", "-m", "pipeline.train", "mlp_digits"]


def test_a_launched_process_does_not_launch_again(monkeypatch):
    monkeypatch.setenv(launch.LAUNCHED, "torchrun")
    assert launch.command(experiment("torchrun", devices=2)) is None


@pytest.mark.parametrize(
    "exp, message",
    [
        (lambda: experiment("torchrun", devices=2, num_nodes=2, strategy="ddp"),
         r"^experiments\.mlp_digits\.launcher\.args: torchrun on 2 nodes needs --rdzv-endpoint=HOST:PORT"),
        (lambda: experiment("torchrun", devices=2, strategy="ddp_spawn"),
         r"^experiments\.mlp_digits\.launcher\.name: torchrun starts the processes itself; strategy ddp_spawn"),
        (lambda: experiment("srun", devices=2, strategy="ddp"),
         r"^experiments\.mlp_digits\.launcher\.name: srun(, but srun is not on PATH| runs inside a SLURM allocation)"),
    ],
)
def test_launches_that_cannot_work_are_named(exp, message):
    with pytest.raises(ConfigError, match=message):
        launch.check(exp(), "experiments.mlp_digits.launcher")


def test_unknown_launcher_is_named(tmp_path):
    import yaml

    from pipeline import params

    raw = yaml.safe_load(params.PARAMS_FILE.read_text())
    raw["experiments"]["mlp_digits"]["launcher"] = {"name": "mpirun"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"^experiments\.mlp_digits\.launcher\.name: unknown value 'mpirun'; allowed: none, torchrun, srun$"):
        params.load(path)


@pytest.mark.slow
def test_torchrun_from_params_trains_with_two_processes_and_one_run(project):
    import json

    import yaml
    from mlflow import MlflowClient

    from conftest import python

    params_file = project / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["experiments"]["mlp_digits"]["trainer"] = {"devices": 2, "strategy": "ddp"}
    raw["experiments"]["mlp_digits"]["launcher"] = {"name": "torchrun"}
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    python("-m", "pipeline.prepare", cwd=project)

    result = python("-m", "pipeline.train", "mlp_digits", cwd=project)

    assert f"launching: {sys.executable} -m torch.distributed.run --nproc-per-node=2 --nnodes=1" in result.stdout
    summary = json.loads((project / "runs" / "mlp_digits.json").read_text())
    assert summary["world_size"] == 2
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.run_name, r.info.status, r.data.tags["world_size"]) for r in runs] == [("mlp_digits", "FINISHED", "2")]
    assert runs[0].data.params["launcher.name"] == "torchrun"

    # Evaluation through torchrun too: 2 processes, the same metrics as one process.
    evaluated = python("-m", "pipeline.evaluate", "mlp_digits", cwd=project)
    assert "-m pipeline.evaluate mlp_digits" in evaluated.stdout and "on 2 process(es)" in evaluated.stdout
    two = json.loads((project / "metrics" / "mlp_digits.json").read_text())
    raw["experiments"]["mlp_digits"].pop("launcher")
    raw["experiments"]["mlp_digits"].pop("trainer")
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    python("-m", "pipeline.evaluate", "mlp_digits", cwd=project)
    assert json.loads((project / "metrics" / "mlp_digits.json").read_text()) == two
