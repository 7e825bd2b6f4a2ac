"""Stage prepare: split and standardize every embedded dataset the experiments use.

    python -m pipeline.prepare

Every dataset of pipeline/datasets/ is prepared, except those from the network (MNIST, Fashion-MNIST,
CIFAR-10, Cora), which are prepared only when params.yaml's data.download names them; their files are
fetched into data/raw/ first, before anything is prepared, so a file that cannot be fetched stops the
stage with nothing written. Writes data/prepared/<dataset>/{train,val,test}.pt and meta.json (a graph
dataset: graph.pt), each dataset into a staging folder first, moved into place when complete.

Prepared data is plain tensors read back with `torch.load(weights_only=True)` (pipeline/data.py).
Preprocessing is fitted on the training split only.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline import cli, files, stagestats
from pipeline.base import ConfigError
from pipeline.datasets import DATASETS
from pipeline.params import load
from pipeline.spec import GRAPH_FILE, PREPARED, SPLITS


def split(dataset: str, config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seeded train/val/test split of the raw data, stratified by class for classification."""
    return _split_with_facts(dataset, config)[0]


def _split_with_facts(dataset: str, config) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """The splits, and what a dataset that builds its own splits records about them in meta.json."""
    from sklearn.model_selection import train_test_split

    entry = DATASETS[dataset]
    if entry.make_splits is not None:
        return entry.make_splits(config)
    x, y = entry.load()
    stratify = y if entry.spec.task != "regression" else None
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=config.test_fraction, random_state=config.split_seed, stratify=stratify
    )
    val_share = config.val_fraction / (1 - config.test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_share,
        random_state=config.split_seed,
        stratify=y_rest if stratify is not None else None,
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}, {}


def prepare(dataset: str, config, out_dir: Path) -> dict:
    """Split, standardize with training statistics, write tensors and meta.json into out_dir."""
    import torch

    entry = DATASETS[dataset]
    spec = entry.spec
    if entry.fetch is not None:
        entry.fetch()
    if entry.is_environment:
        return _prepare_environment(dataset, out_dir)
    if entry.kind == "graph":
        return _prepare_graph(dataset, config, out_dir)
    if entry.kind == "graphs":
        return _prepare_graphs(dataset, config, out_dir)
    parts, facts = _split_with_facts(dataset, config)
    x_train = parts["train"][0].reshape(len(parts["train"][0]), -1)
    if entry.scaling == "global":  # images, one series: one mean and scale for all values keeps a background uniform
        mean, std = x_train.mean(), x_train.std()
    elif entry.scaling == "feature":  # tabular: per feature
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
    meta = {"dataset": dataset, **asdict(spec), **facts, "sizes": {}}
    if entry.scaling != "none":  # what a model served on raw inputs standardizes them with (pipeline.core.served)
        meta["input_mean"], meta["input_std"] = np.asarray(mean).tolist(), np.asarray(std).tolist()
    if spec.task == "regression":
        meta["target_mean"] = float(parts["train"][1].mean())
        meta["target_std"] = float(parts["train"][1].std())
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in parts.items():
        if entry.scaling == "none":  # token ids
            x_t = torch.tensor(x, dtype=torch.long)
        else:
            x_t = torch.tensor(((x.reshape(len(x), -1) - mean) / std).reshape(len(x), *spec.input_shape), dtype=torch.float32)
        if spec.task == "regression":
            y_t = torch.tensor((y - meta["target_mean"]) / meta["target_std"], dtype=torch.float32)
        elif spec.task == "binary":
            y_t = torch.tensor(y, dtype=torch.float32)
        else:
            y_t = torch.tensor(y, dtype=torch.long)
        _save_tensors({"x": x_t, "y": y_t}, out_dir / f"{name}.pt")
        meta["sizes"][name] = len(x)
    _write_meta(meta, out_dir)
    return meta


def _save_tensors(tensors: dict, path: Path) -> None:
    """torch.save through a buffer: on a full disk, torch.save to a path raises a RuntimeError that names no
    file; files.replacing names it (DiskFull) and leaves no part of it."""

    import torch

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    with files.replacing(path, size=buffer.getbuffer().nbytes) as handle:
        handle.write(buffer.getbuffer())


def _write_meta(meta: dict, out_dir: Path) -> None:
    with files.replacing(out_dir / "meta.json") as handle:
        handle.write((json.dumps(meta, indent=2) + "\n").encode())


def _prepare_environment(dataset: str, out_dir: Path) -> dict:
    """An environment has no data to split: check that gymnasium makes it with the spec's observation
    shape and number of actions, and write meta.json."""
    import gymnasium

    spec = DATASETS[dataset].spec
    env = gymnasium.make(spec.environment)
    shape, actions = tuple(env.observation_space.shape), int(env.action_space.n)
    env.close()
    if shape != spec.input_shape or actions != spec.num_classes:
        raise ConfigError(f"{dataset}: {spec.environment} has observations {shape} and {actions} actions, "
                          f"not {spec.input_shape} and {spec.num_classes}")
    meta = {"dataset": dataset, **asdict(spec), "max_episode_steps": env.spec.max_episode_steps, "sizes": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_meta(meta, out_dir)
    return meta


def _prepare_graph(dataset: str, config, out_dir: Path) -> dict:
    """One graph: x (N, F) float32, edge_index (2, E) int64, y (N,) int64, {split}_mask (N,) bool."""
    import torch

    entry = DATASETS[dataset]
    arrays, facts = entry.make_graph(config)
    blob = {
        "x": torch.tensor(arrays["x"], dtype=torch.float32),
        "edge_index": torch.tensor(arrays["edge_index"], dtype=torch.long),
        "y": torch.tensor(arrays["y"], dtype=torch.long),
        **{f"{name}_mask": torch.tensor(arrays["masks"][name]) for name in SPLITS},
    }
    meta = {"dataset": dataset, **asdict(entry.spec), "kind": "graph", **facts,
            "nodes": len(blob["y"]), "edges": blob["edge_index"].shape[1] // 2,
            "sizes": {name: int(blob[f"{name}_mask"].sum()) for name in SPLITS}}
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_tensors(blob, out_dir / GRAPH_FILE)
    _write_meta(meta, out_dir)
    return meta


def _prepare_graphs(dataset: str, config, out_dir: Path) -> dict:
    """Many graphs, one label each; per split, the graphs laid end to end: x (ΣN, F) float32,
    edge_index (2, ΣE) int64 (each graph's own node numbers), nodes (G,) and edges (G,) int64 (each
    graph's N and E), y (G,) int64."""
    import torch

    entry = DATASETS[dataset]
    parts, facts = entry.make_graphs(config)
    meta = {"dataset": dataset, **asdict(entry.spec), "kind": "graphs", **facts, "sizes": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (graphs, y) in parts.items():
        blob = {
            "x": torch.tensor(np.concatenate([x for x, _ in graphs]), dtype=torch.float32),
            "edge_index": torch.tensor(np.concatenate([edges for _, edges in graphs], axis=1), dtype=torch.long),
            "nodes": torch.tensor([len(x) for x, _ in graphs], dtype=torch.long),
            "edges": torch.tensor([edges.shape[1] for _, edges in graphs], dtype=torch.long),
            "y": torch.tensor(y, dtype=torch.long),
        }
        _save_tensors(blob, out_dir / f"{name}.pt")
        meta["sizes"][name] = len(graphs)
    meta["max_nodes"] = max(len(x) for graphs, _ in parts.values() for x, _ in graphs)
    _write_meta(meta, out_dir)
    return meta


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m pipeline.prepare", description=__doc__.splitlines()[0]).parse_args(argv)
    # the whole file, so a typo stops the pipeline before it writes anything; without the checks against each
    # family class, which import torch, Lightning and torchmetrics (train@EXPERIMENT makes them)
    config = load(family_checks=False)
    stagestats.mark("work")  # the datasets' own imports (scikit-learn, networkx, gymnasium) come as they are made
    datasets = sorted(name for name, entry in DATASETS.items() if not entry.download or name in config.data.download)
    for dataset in datasets:
        if DATASETS[dataset].download:
            DATASETS[dataset].fetch()
    for index, dataset in enumerate(datasets, 1):
        staging = PREPARED / f".{dataset}.partial"
        files.remove(staging)
        try:
            meta = prepare(dataset, config.data, staging)
            files.replace_dir(staging, PREPARED / dataset)
        finally:
            files.remove(staging)  # what a failure (a full disk) left: nothing that takes space or looks complete
        print(f"[{index}/{len(datasets)}] {dataset}: " + ", ".join(f"{k} {v}" for k, v in meta["sizes"].items()))
    return 0


if __name__ == "__main__":
    cli.run_and_exit(main)
