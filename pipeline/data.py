"""Prepared data, read back: the splits that `prepare` wrote (pipeline.datamodules batches them).

Prepared data is plain tensors in `data/prepared/<dataset>/{train,val,test}.pt` plus `meta.json`,
read back with `torch.load(weights_only=True)` (pipeline/prepare.py writes them; pipeline/datasets/
defines the datasets).

A graph dataset (kind "graph", ch. 8) is one graph whose nodes are the samples: `graph.pt` holds its
node features, edges, labels and the train/val/test node masks (semi-supervised: a few labelled nodes
train, the unlabelled ones are the test split). Its split, as `load_split` gives it, is the whole
graph (a PyTorch Geometric `Data` with that split's `mask`) and the labels of the split's nodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.base import ROOT, ConfigError
from pipeline.datasets import DATASETS
from pipeline.spec import GRAPH_FILE, PREPARED, SPLITS


def shown(path: Path) -> Path:
    """A path as a user would type it from the repository root."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def prepared_dir(dataset: str) -> Path:
    return PREPARED / dataset


def load_meta(dataset: str) -> dict:
    path = prepared_dir(dataset) / "meta.json"
    if not path.exists():
        raise ConfigError(f"{shown(path)}: prepared dataset missing; run `dvc repro prepare` to build it")
    return json.loads(path.read_text())


def check_prepared(dataset: str) -> None:
    """A clear error if `prepare` has not built the dataset: every split, or an environment's meta.json."""
    if DATASETS[dataset].is_environment:
        load_meta(dataset)
    else:
        for name in SPLITS:
            load_split(dataset, name)


def load_split(dataset: str, name: str):
    """One split as (x, y); a clear error naming the file if it is missing or unreadable. For a graph
    dataset x is the whole graph, a PyTorch Geometric Data (x, edge_index, and the split's node `mask`),
    and y the labels of the split's nodes."""
    if dataset in DATASETS and DATASETS[dataset].is_environment:
        raise ConfigError(f"{dataset}: an environment ({DATASETS[dataset].spec.environment}) has no {name} split")
    graph = DATASETS[dataset].kind == "graph" if dataset in DATASETS else False
    path = prepared_dir(dataset) / (GRAPH_FILE if graph else f"{name}.pt")
    rel = shown(path)
    if not path.exists():
        raise ConfigError(f"{rel}: prepared dataset missing; run `dvc repro prepare` to build it")
    try:
        blob = torch.load(path, weights_only=True)
        if not graph:
            return blob["x"], blob["y"]
        from torch_geometric.data import Data

        mask = blob[f"{name}_mask"]
        return Data(x=blob["x"], edge_index=blob["edge_index"], mask=mask, num_nodes=len(blob["y"])), blob["y"][mask]
    except Exception as error:  # truncated zip, wrong pickle, missing keys
        raise ConfigError(f"{rel}: unreadable ({type(error).__name__}); run `dvc repro -f prepare` to rebuild it") from None


def load_features(dataset: str, name: str):
    """One split as rows of features (n, ...) and targets (n,): the split itself, or for a graph
    dataset the features of the split's nodes alone (what a model that ignores the edges sees)."""
    x, y = load_split(dataset, name)
    if DATASETS[dataset].kind == "graph":
        return x.x[x.mask], y
    return x, y
