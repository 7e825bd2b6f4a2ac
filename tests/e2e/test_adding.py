"""The README's recipe, done: a family is one file in modules/, a dataset one file in pipeline/datasets/,
and one experiment in params.yaml runs them. In a copy of the project, nothing else is edited by hand:
`dvc repro` finds both files (codedeps/ lists them), prepares the dataset, trains and evaluates."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import copy_project, dvc, git_init

pytestmark = pytest.mark.slow

FAMILY = '''"""A toy family: one hidden layer, ŷ = W₂ tanh(W₁x + b₁) + b₂."""

from __future__ import annotations

import math

from torch import nn

from pipeline.core.supervised import SupervisedModule
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.spec import DataSpec


class ToyNetwork(SupervisedModule):
    TASKS = ("binary", "multiclass")
    CHAPTER = 5

    def __init__(self, *, data: DataSpec, optimizer: OptimizerConfig, scheduler: SchedulerConfig,
                 hidden_size: int):  # width of the hidden layer
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.net = nn.Sequential(nn.Linear(math.prod(data.input_shape), hidden_size), nn.Tanh(),
                                 nn.Linear(hidden_size, data.num_outputs))

    def forward(self, x):
        return self.net(x.flatten(1))  # (B, K)


MODEL = ToyNetwork
'''

DATASET = '''"""Toy blobs: three seeded Gaussian clusters in four dimensions."""

from __future__ import annotations

import numpy as np

from pipeline.spec import Dataset, DataSpec


def load():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 100)
    return rng.normal(size=(300, 4)) + 3.0 * np.eye(3, 4)[y], y


DATASET = Dataset(DataSpec("multiclass", (4,), 3), load, "three Gaussian blobs, 300 x 4")
'''

EXPERIMENT = """  toy:
    family: toy_network
    dataset: toy_blobs
    batch_size: 32
    max_epochs: 3
    optimizer: {name: adam, lr: 1.0e-2}
    model: {hidden_size: 8}

"""


def changed(project) -> set[str]:
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    return {line[3:] for line in status.splitlines()}


def test_a_family_file_a_dataset_file_and_an_experiment_are_all_it_takes(tmp_path):
    project = copy_project(tmp_path / "project")
    git_init(project)
    (project / "modules" / "toy_network.py").write_text(FAMILY)
    (project / "pipeline" / "datasets" / "toy_blobs.py").write_text(DATASET)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("\nexperiments:\n", "\nexperiments:\n" + EXPERIMENT, 1))
    by_hand = {"modules/toy_network.py", "pipeline/datasets/toy_blobs.py", "params.yaml"}
    assert changed(project) == by_hand

    ran = re.findall(r"Running stage '([^']+)'", dvc("repro", "evaluate@toy", cwd=project).stdout)
    assert {"codedeps", "prepare", "train@toy", "evaluate@toy"} <= set(ran)
    assert json.loads((project / "codedeps" / "prepare.json").read_text()).keys() >= {"pipeline/datasets/toy_blobs.py"}
    assert "modules/toy_network.py" in json.loads((project / "codedeps" / "train" / "toy_network.json").read_text())
    assert json.loads((project / "data" / "prepared" / "toy_blobs" / "meta.json").read_text())["sizes"]["test"] == 60
    metrics = json.loads((project / "metrics" / "toy.json").read_text())
    assert metrics["test/accuracy"] > 0.5  # three well separated blobs, three epochs
    # everything else that changed, the stages wrote: the derived code dependencies, dvc.lock, metrics, plots
    written = changed(project) - by_hand
    assert written and all(path == "dvc.lock" or path.split("/")[0] in ("codedeps", "metrics", "plots") for path in written), written

    # editing the dataset's file reruns prepare (its code dependencies list the file)
    dataset = project / "pipeline" / "datasets" / "toy_blobs.py"
    dataset.write_text(dataset.read_text().replace("3.0 * np.eye", "4.0 * np.eye"))
    assert "prepare" in re.findall(r"Running stage '([^']+)'", dvc("repro", "prepare", cwd=project).stdout)
