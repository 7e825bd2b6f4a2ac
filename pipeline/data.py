"""Prepared data, read back: the splits that `prepare` wrote (pipeline.datamodules batches them).

Prepared data is plain tensors in `data/prepared/<dataset>/{train,val,test}.pt` plus `meta.json`,
read back with `torch.load(weights_only=True)` (pipeline/prepare.py writes them; pipeline/datasets/
defines the datasets).

A graph dataset (kind "graph", ch. 8) is one graph whose nodes are the samples: `graph.pt` holds its
node features, edges, labels and the train/val/test node masks (semi-supervised: a few labelled nodes
train, the unlabelled ones are the test split). Its split, as `load_split` gives it, is the whole
graph (a PyTorch Geometric `Data` with that split's `mask`) and the labels of the split's nodes.

A dataset of graphs (kind "graphs", ch. 8) has one label per graph: `{split}.pt` holds the split's
graphs end to end (pipeline/prepare.py), and its split, as `load_split` gives it, is a PyTorch Geometric
`Batch` of them with their labels (G,).
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
    kind = DATASETS[dataset].kind if dataset in DATASETS else "samples"
    graph = kind == "graph"
    path = prepared_dir(dataset) / (GRAPH_FILE if graph else f"{name}.pt")
    rel = shown(path)
    if not path.exists():
        raise ConfigError(f"{rel}: prepared dataset missing; run `dvc repro prepare` to build it")
    try:
        blob = torch.load(path, weights_only=True)
        if kind == "graphs":
            from torch_geometric.data import Batch

            return Batch.from_data_list(graph_list(blob)), blob["y"]
        if not graph:
            return blob["x"], blob["y"]
        from torch_geometric.data import Data

        mask = blob[f"{name}_mask"]
        return Data(x=blob["x"], edge_index=blob["edge_index"], mask=mask, num_nodes=len(blob["y"])), blob["y"][mask]
    except Exception as error:  # truncated zip, wrong pickle, missing keys
        raise ConfigError(f"{rel}: unreadable ({type(error).__name__}); run `dvc repro -f prepare` to rebuild it") from None


def graph_list(blob: dict) -> list:
    """A prepared split of graphs (x, edge_index, nodes, edges; pipeline/prepare.py) as PyTorch Geometric
    `Data`, one per graph, each with its own node numbers."""
    from torch_geometric.data import Data

    xs = blob["x"].split(blob["nodes"].tolist())
    edge_indices = blob["edge_index"].split(blob["edges"].tolist(), dim=1)
    return [Data(x=x, edge_index=edges, num_nodes=len(x)) for x, edges in zip(xs, edge_indices)]


def graph_invariants(graphs, max_nodes: int) -> torch.Tensor:
    """(G, 2 + max_nodes) float: each graph's node count N, edge count E/2 (undirected edges) and its
    degrees sorted high to low, padded with zeros to max_nodes: what a classifier that never passes
    a message sees of a graph (`graphs` a PyTorch Geometric Batch)."""
    rows = []
    for graph in graphs.to_data_list():
        degree = torch.bincount(graph.edge_index[1], minlength=graph.num_nodes).sort(descending=True).values
        padded = torch.zeros(max_nodes, dtype=torch.long)
        padded[: len(degree)] = degree
        rows.append(torch.cat([torch.tensor([graph.num_nodes, graph.edge_index.shape[1] // 2]), padded]))
    return torch.stack(rows).float()


def load_features(dataset: str, name: str):
    """One split as rows of features (n, ...) and targets (n,): the split itself; for a graph
    dataset the features of the split's nodes alone (what a model that ignores the edges sees); for a
    dataset of graphs each graph's node count, edge count and sorted degrees (graph_invariants)."""
    x, y = load_split(dataset, name)
    if DATASETS[dataset].kind == "graph":
        return x.x[x.mask], y
    if DATASETS[dataset].kind == "graphs":
        return graph_invariants(x, load_meta(dataset)["max_nodes"]), y
    return x, y
