"""What this machine can run: checked by the train stage before anything starts, one line naming the key."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.params import ConfigError, load_experiment

PATH = "experiments.mlp_digits.trainer"


def trainer(**changes):
    _, experiment = load_experiment("mlp_digits")
    return dataclasses.replace(experiment.trainer, **changes)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"accelerator": "gpu"}, r"^experiments\.mlp_digits\.trainer\.accelerator: gpu, but this machine has no CUDA GPU; allowed here: cpu, auto$"),
        ({"precision": "16-mixed"}, r"^experiments\.mlp_digits\.trainer\.precision: 16-mixed needs a CUDA GPU; on cpu: 32-true, bf16-mixed, bf16-true, 64-true$"),
        ({"strategy": "fsdp", "devices": 2}, r"^experiments\.mlp_digits\.trainer\.strategy: fsdp needs a CUDA GPU; on cpu: auto, ddp, ddp_spawn$"),
        ({"devices": 10_000}, r"^experiments\.mlp_digits\.trainer\.devices: 10000 CPU processes per node, but this machine has \d+ core\(s\)$"),
        # it passed, and PyTorch stopped the training at its first batch ("SyncBatchNorm layers only work with GPU modules")
        ({"devices": 2, "strategy": "ddp", "sync_batchnorm": True},
         r"^experiments\.mlp_digits\.trainer\.sync_batchnorm: PyTorch's SyncBatchNorm runs on CUDA GPUs only; false on cpu$"),
        ({"num_nodes": 2}, r"^experiments\.mlp_digits\.trainer\.num_nodes: 2 nodes need a launcher that starts the processes of every node \(srun or torchrun"),
    ],
)
def test_what_this_cpu_machine_cannot_run_is_named(no_gpu, changes, message):
    with pytest.raises(ConfigError, match=message):
        trainer(**changes).check_machine(PATH, environ={})


def test_more_gpus_than_the_machine_has_is_named(two_gpus):
    with pytest.raises(ConfigError, match=r"^experiments\.mlp_digits\.trainer\.devices: 4 per node, but this machine has 2 GPU\(s\)$"):
        trainer(accelerator="gpu", devices=4).check_machine(PATH, environ={})
    trainer(accelerator="gpu", devices=2, precision="16-mixed", strategy="fsdp").check_machine(PATH, environ={})


def test_deepspeed_must_be_installed(no_gpu, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else object())
    with pytest.raises(ConfigError, match=r"^experiments\.mlp_digits\.trainer\.strategy: deepspeed is not installed"):
        trainer(strategy="deepspeed").check_machine(PATH, environ={})


def test_what_the_cpu_can_run_passes(no_gpu):
    trainer().check_machine(PATH, environ={})
    trainer(devices=2, strategy="ddp", precision="bf16-mixed").check_machine(PATH, environ={})
    trainer(sync_batchnorm=True).check_machine(PATH, environ={})  # one process: nothing to synchronise
    trainer(num_nodes=2, strategy="ddp").check_machine(PATH, environ={"SLURM_NTASKS": "2"})  # started by srun
    trainer(num_nodes=2, strategy="ddp").check_machine(PATH, environ={"WORLD_SIZE": "2"})  # started by torchrun


def test_the_train_stage_stops_before_any_run_on_an_impossible_combination(project):
    import yaml

    from conftest import python

    params_file = project / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["experiments"]["mlp_digits"]["trainer"] = {"precision": "16-mixed"}
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 16-mixed is possible here")
    result = python("-m", "pipeline.train", "mlp_digits", cwd=project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: experiments.mlp_digits.trainer.precision: 16-mixed needs a CUDA GPU")
    assert not (project / "mlflow.db").exists() and not (project / "models").exists()


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_on_a_gpu_without_it_names_16_mixed(two_gpus, monkeypatch, precision):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # emulated only
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with pytest.raises(ConfigError, match=rf"^experiments\.mlp_digits\.trainer\.precision: {precision} needs a GPU with "
                                          r"bfloat16 \(compute capability 8\.0 or newer\), this one has 7\.0; use 16-mixed$"):
        trainer(accelerator="gpu", precision=precision).check_machine(PATH, environ={})
    trainer(accelerator="gpu", precision="16-mixed").check_machine(PATH, environ={})
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    trainer(accelerator="auto", precision=precision).check_machine(PATH, environ={})


def test_a_family_without_a_deterministic_cuda_kernel_is_refused_on_a_gpu_unless_warned(two_gpus, monkeypatch):
    from modules.mlp import FeedforwardNetwork
    from pipeline.core import launch

    monkeypatch.setattr(FeedforwardNetwork, "NONDETERMINISTIC_ON_CUDA", "torch.cumsum of floats (a running sum)")
    _, experiment = load_experiment("mlp_digits")

    def on(**changes):
        return dataclasses.replace(experiment, trainer=dataclasses.replace(experiment.trainer, **changes))

    with pytest.raises(ConfigError, match=r"^experiments\.mlp_digits\.trainer\.deterministic: family mlp uses torch\.cumsum "
                                          r"of floats \(a running sum\), which has no deterministic CUDA kernel; set "
                                          r"deterministic: warn to train it on a GPU \(two runs may then differ\), or accelerator: cpu$"):
        launch.check_experiment(on(accelerator="gpu", deterministic=True))
    launch.check_experiment(on(accelerator="gpu", deterministic="warn"))
    launch.check_experiment(on(accelerator="gpu", deterministic=False))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    launch.check_experiment(on(accelerator="cpu", deterministic=True))
    launch.check_experiment(on(accelerator="auto", deterministic=True))  # auto without a GPU is the CPU


@pytest.mark.parametrize("deterministic", [True, "warn"])
def test_deterministic_sets_cublas_workspace_before_the_first_cuda_call(monkeypatch, tmp_path, deterministic):
    # PyTorch raises at the first cuBLAS call under deterministic algorithms unless CUBLAS_WORKSPACE_CONFIG
    # was set before it; Lightning's Trainer sets it, and build_trainer builds the Trainer before any fit.
    from pipeline.core.trainer import LearningCurve, build_trainer

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    _, experiment = load_experiment("mlp_digits")
    experiment = dataclasses.replace(experiment, trainer=dataclasses.replace(experiment.trainer, deterministic=deterministic))
    try:
        build_trainer(experiment, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", None, LearningCurve())
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled() is (deterministic == "warn")
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("name, world_size, unused, expected", [
    ("ddp", 2, True, "ddp_find_unused_parameters_true"),
    ("ddp_spawn", 2, True, "ddp_spawn_find_unused_parameters_true"),
    ("auto", 2, True, "ddp_find_unused_parameters_true"),  # auto on two processes is DDP
    ("auto", 1, True, "auto"),
    ("ddp", 2, False, "ddp"),
    ("fsdp", 2, False, "fsdp"),
])
def test_ddp_looks_for_unused_parameters_only_for_a_family_that_declares_them(name, world_size, unused, expected):
    from lightning.pytorch.strategies import StrategyRegistry

    from pipeline.core.trainer import strategy

    assert strategy(name, world_size, unused) == expected
    assert expected in StrategyRegistry or expected == "auto"
