"""Datasets of graphs and the graph-level families' base (ch. 8): the connectivity pairs (same degrees,
one connected), the seeded split that keeps pairs whole, preparation and loading as PyG batches, the
datamodule's batches of graphs, the references (features alone; the Weisfeiler-Lehman bound), and a
toy training through the pipeline's datamodule."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
import torch

from pipeline import data, datamodules
from pipeline.config import DataConfig
from pipeline.datasets import connectivity
from pipeline.params import ConfigError, family_class, load
from pipeline.prepare import prepare
from pipeline.references.connectivity import reference_rows, wl_bound, wl_hash

CONFIG = DataConfig(split_seed=1, val_fraction=0.1, test_fraction=0.2)  # seed 1 deals a pair of cycles to test
PAIRS = 40  # a small version of the dataset, prepared in seconds


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.setattr(connectivity, "CONNECTIVITY_PAIRS", PAIRS)
    monkeypatch.setattr(data, "ROOT", tmp_path)
    monkeypatch.setattr(data, "PREPARED", tmp_path / "prepared")
    prepare("connectivity", CONFIG, tmp_path / "prepared" / "connectivity")
    return tmp_path / "prepared"


def as_networkx(x, edge_index) -> nx.Graph:
    graph = nx.empty_graph(len(x))
    graph.add_edges_from(edge_index.T.tolist())
    return graph


def degrees(graph) -> list[int]:
    return sorted(d for _, d in graph.degree())


def test_each_pair_shares_its_degrees_and_only_the_first_is_connected():
    pairs = connectivity.make_pairs(30, seed=0)
    for index, (connected, disconnected) in enumerate(pairs):
        assert nx.is_connected(connected) and not nx.is_connected(disconnected)
        assert degrees(connected) == degrees(disconnected)
        low, high = connectivity.CONNECTIVITY_NODES
        assert low <= connected.number_of_nodes() <= high
        two_regular = set(degrees(connected)) == {2}
        assert two_regular == (index % connectivity.CONNECTIVITY_REGULAR_EVERY == 0)


def test_the_split_is_seeded_keeps_pairs_whole_and_the_graphs_do_not_follow_the_seed(monkeypatch):
    monkeypatch.setattr(connectivity, "CONNECTIVITY_PAIRS", PAIRS)
    first, _ = connectivity.make_graphs(CONFIG)
    again, facts = connectivity.make_graphs(CONFIG)
    other, _ = connectivity.make_graphs(DataConfig(split_seed=0, val_fraction=0.1, test_fraction=0.2))
    assert facts["node_features"] == "constant 1"
    assert {name: len(y) for name, (_, y) in first.items()} == {"train": 56, "val": 8, "test": 16}  # 28, 4, 8 pairs
    for name in data.SPLITS:
        graphs, y = first[name]
        assert y.tolist() == [1, 0] * (len(y) // 2)  # a pair: connected, then not
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(graphs, again[name][0]))
        for (x1, e1), (x0, e0) in zip(graphs[::2], graphs[1::2]):  # a pair's graphs, side by side
            assert degrees(as_networkx(x1, e1)) == degrees(as_networkx(x0, e0))
            assert np.array_equal(x1, np.ones((len(x1), 1)))  # constant node features
    signature = lambda parts, name: sorted(edges.tobytes() for _, edges in parts[name][0])  # noqa: E731
    assert signature(first, "test") != signature(other, "test")  # another seed deals other pairs out
    everything = lambda parts: sorted(b for name in data.SPLITS for b in signature(parts, name))  # noqa: E731
    assert everything(first) == everything(other)  # the same graphs


def test_load_split_gives_a_batch_of_the_prepared_graphs(prepared):
    meta = json.loads((prepared / "connectivity" / "meta.json").read_text())
    assert meta["kind"] == "graphs" and meta["sizes"] == {"train": 56, "val": 8, "test": 16}
    graphs, y = data.load_split("connectivity", "test")
    expected, _ = connectivity.make_graphs(CONFIG)
    assert graphs.num_graphs == len(y) == 16 and y.dtype == torch.long
    for graph, (x, edges) in zip(graphs.to_data_list(), expected["test"][0]):
        assert torch.equal(graph.x, torch.tensor(x, dtype=torch.float32))
        assert torch.equal(graph.edge_index, torch.tensor(edges))
    assert [nx.is_connected(as_networkx(g.x, g.edge_index)) for g in graphs.to_data_list()] == y.bool().tolist()


def test_features_are_node_count_edge_count_and_sorted_degrees(prepared):
    graphs, y = data.load_split("connectivity", "train")
    features, labels = data.load_features("connectivity", "train")
    assert features.shape == (56, 2 + 14) and torch.equal(labels, y)
    graph = graphs.to_data_list()[3]
    nx_graph = as_networkx(graph.x, graph.edge_index)
    padded = sorted((d for _, d in nx_graph.degree()), reverse=True) + [0] * (14 - nx_graph.number_of_nodes())
    assert features[3].tolist() == [nx_graph.number_of_nodes(), nx_graph.number_of_edges(), *padded]
    assert torch.equal(features[0::2], features[1::2])  # a pair's graphs look alike


def test_a_missing_split_names_the_file(prepared):
    (prepared / "connectivity" / "val.pt").unlink()
    with pytest.raises(ConfigError, match=r"^prepared/connectivity/val\.pt: prepared dataset missing; run `dvc repro prepare`"):
        data.load_split("connectivity", "val")


def test_the_datamodule_batches_graphs_shuffled_by_seed_and_each_split_whole(prepared):
    datamodule = datamodules.make_datamodule("connectivity", 16, seed=0)
    assert isinstance(datamodule, datamodules.GraphsDataModule)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert [len(y) for _, y in batches] == [16, 16, 16, 8]
    graphs, y = batches[0]
    assert graphs.num_graphs == 16 and graphs.batch.max() == 15
    fresh = datamodules.make_datamodule("connectivity", 16, seed=0)
    fresh.setup("fit")
    assert torch.equal(next(iter(fresh.train_dataloader()))[0].edge_index, graphs.edge_index)  # the seed's order
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(datamodule.splits["train"].y.tolist())  # every graph once an epoch
    (val_graphs, val_y), = list(datamodule.val_dataloader())
    assert val_graphs.num_graphs == len(val_y) == 8


def test_the_wl_bound_counts_the_majority_label_of_each_colour_class():
    hexagon, triangles = nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    path = nx.path_graph(6)
    from torch_geometric.utils import from_networkx

    def pyg(graph):
        data_ = from_networkx(graph)
        data_.x = torch.ones(graph.number_of_nodes(), 1)
        return data_

    hashes = [wl_hash(pyg(g), iterations=6) for g in (hexagon, triangles, path)]
    assert hashes[0] == hashes[1] != hashes[2]  # 1-WL cannot tell the 2-regular graphs apart
    assert wl_bound(hashes, [1, 0, 1]) == pytest.approx(2 / 3)  # one of the two 2-regular graphs is missed
    assert wl_bound(hashes + [hashes[0]], [1, 0, 1, 1]) == pytest.approx(3 / 4)  # the majority of its class wins
    assert wl_bound(hashes[1:], [0, 1]) == 1.0  # told apart: every label reachable


def test_references_features_alone_at_chance_and_the_wl_bound_below_one(prepared):
    rows = {row["name"]: row for row in reference_rows("connectivity")}
    assert rows["features_alone"]["test/accuracy"] == 0.5  # a pair's graphs share every feature
    graphs, y = data.load_split("connectivity", "test")
    cycles = [set(torch.bincount(g.edge_index[1]).tolist()) == {2} for g in graphs.to_data_list()]
    assert sum(cycles) == 2  # one pair of cycles, C_n against C_k + C_(n-k): 1-WL colours them alike
    assert rows["wl_bound"]["test/accuracy"] == pytest.approx(1 - 1 / len(y))  # one of the two is missed


def test_a_toy_gin_trains_through_the_pipelines_datamodule(prepared):
    import lightning as L

    from conftest import quiet_trainer

    experiment = load().experiments["gin_connectivity"]
    L.seed_everything(0, verbose=False)
    model = family_class("gin")(data=data.DATASETS["connectivity"].spec, optimizer=experiment.optimizer,
                                scheduler=experiment.scheduler, **family_class("gin").small_config(experiment.model))
    trainer = quiet_trainer(max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=datamodules.make_datamodule("connectivity", 16, seed=0))
    assert model.work_done(2) == (2 * 56, "training graphs")
    graphs, y = data.load_split("connectivity", "test")
    with torch.no_grad():
        assert model.predict(graphs).shape == (len(y), 2)
    assert {"train/loss", "val/loss", "val/accuracy"} <= set(trainer.callback_metrics)


def test_graph_level_families_train_in_one_process():
    experiment = load().experiments["gin_connectivity"]
    gin = family_class("gin")
    gin.check_experiment(experiment)
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"^trainer\.devices: graph-level families train and evaluate in one process; set it to 1$"):
        gin.check_experiment(replace(experiment, trainer=replace(experiment.trainer, devices=2)))
