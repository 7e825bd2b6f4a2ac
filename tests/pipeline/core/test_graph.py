"""Graph datasets and the graph families' base (ch. 8): seeded preparation, disjoint node masks, the
karate club's labels from networkx, the SBM's planted communities, full-batch loading, and the
features-only baselines (the re-fits are tests/pipeline/core/test_evaluation.py's)."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
import torch

from pipeline import data, datamodules
from pipeline.datasets import cora, karate, sbm
from pipeline.config import DataConfig
from pipeline.params import ConfigError, load
from pipeline.prepare import prepare

CONFIG = DataConfig(split_seed=0, val_fraction=0.1, test_fraction=0.2)
GRAPHS = ("karate", "sbm")


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "ROOT", tmp_path)
    monkeypatch.setattr(data, "PREPARED", tmp_path / "prepared")
    for dataset in GRAPHS:
        prepare(dataset, CONFIG, tmp_path / "prepared" / dataset)
    return tmp_path / "prepared"


def masks(dataset: str, seed: int) -> dict[str, np.ndarray]:
    arrays, _ = data.DATASETS[dataset].make_graph(DataConfig(split_seed=seed, val_fraction=0.1, test_fraction=0.2))
    return arrays["masks"]


@pytest.mark.parametrize("dataset", GRAPHS)
def test_node_masks_are_disjoint_cover_every_node_and_label_a_few_per_class(dataset):
    arrays, _ = data.DATASETS[dataset].make_graph(CONFIG)
    split = arrays["masks"]
    assert sum(split[name].astype(int) for name in data.SPLITS).tolist() == [1] * len(arrays["y"])
    labelled = karate.KARATE_LABELLED if dataset == "karate" else sbm.SBM_LABELLED
    for name in ("train", "val"):
        assert np.bincount(arrays["y"][split[name]]).tolist() == [labelled] * data.DATASETS[dataset].spec.num_classes
    assert split["test"].sum() > split["train"].sum()  # semi-supervised: most nodes are unlabelled


@pytest.mark.parametrize("dataset", GRAPHS)
def test_preparation_is_seeded_and_the_split_changes_with_the_seed(dataset):
    first, again, other = masks(dataset, 0), masks(dataset, 0), masks(dataset, 1)
    assert all(np.array_equal(first[name], again[name]) for name in data.SPLITS)
    assert not np.array_equal(first["train"], other["train"])
    x, y = (data.DATASETS[dataset].make_graph(CONFIG)[0][key] for key in ("x", "y"))
    x1, y1 = (data.DATASETS[dataset].make_graph(DataConfig(1, 0.1, 0.2))[0][key] for key in ("x", "y"))
    assert np.array_equal(x, x1) and np.array_equal(y, y1)  # the graph itself does not follow the split seed


def test_karate_labels_are_the_clubs_networkx_records():
    arrays, facts = karate.make_graph(CONFIG)
    club = nx.get_node_attributes(nx.karate_club_graph(), "club")
    assert facts["classes"] == ["Mr. Hi", "Officer"]
    assert [facts["classes"][k] for k in arrays["y"]] == [club[node] for node in range(34)]
    assert arrays["edge_index"].shape == (2, 2 * 78) and np.array_equal(arrays["x"], np.eye(34))


def test_sbm_labels_are_the_planted_communities_and_edges_mostly_stay_inside_them():
    arrays, _ = sbm.make_graph(CONFIG)
    y, (source, target) = arrays["y"], arrays["edge_index"]
    assert np.bincount(y).tolist() == [sbm.SBM_BLOCK_SIZE] * sbm.SBM_BLOCKS
    inside = (y[source] == y[target]).mean()
    expected = sbm.SBM_P_IN * (sbm.SBM_BLOCK_SIZE - 1) / (
        sbm.SBM_P_IN * (sbm.SBM_BLOCK_SIZE - 1) + sbm.SBM_P_OUT * sbm.SBM_BLOCK_SIZE * (sbm.SBM_BLOCKS - 1))
    assert inside == pytest.approx(expected, abs=0.05)
    assert set(zip(source.tolist(), target.tolist())) == set(zip(target.tolist(), source.tolist()))  # undirected


def test_load_split_gives_the_whole_graph_with_the_splits_mask_and_its_labels(prepared):
    blob = torch.load(prepared / "sbm" / data.GRAPH_FILE, weights_only=True)
    meta = json.loads((prepared / "sbm" / "meta.json").read_text())
    for name in data.SPLITS:
        g, y = data.load_split("sbm", name)
        assert g.x.shape == (400, sbm.SBM_FEATURES) and torch.equal(g.edge_index, blob["edge_index"])
        assert torch.equal(g.mask, blob[f"{name}_mask"]) and torch.equal(y, blob["y"][g.mask])
        assert len(y) == meta["sizes"][name]
        x_nodes, y_nodes = data.load_features("sbm", name)
        assert torch.equal(x_nodes, blob["x"][blob[f"{name}_mask"]]) and torch.equal(y_nodes, y)


def test_a_missing_or_unreadable_graph_names_the_file(prepared):
    (prepared / "karate" / data.GRAPH_FILE).write_bytes(b"truncated")
    with pytest.raises(ConfigError, match=r"^prepared/karate/graph\.pt: unreadable \("):
        data.load_split("karate", "train")
    (prepared / "karate" / data.GRAPH_FILE).unlink()
    with pytest.raises(ConfigError, match=r"^prepared/karate/graph\.pt: prepared dataset missing; run `dvc repro prepare`"):
        data.load_split("karate", "test")


def test_the_graph_datamodule_yields_the_one_graph_each_epoch(prepared):
    datamodule = datamodules.make_datamodule("karate", 64, seed=0)
    datamodule.setup("fit")
    for name, loader in (("train", datamodule.train_dataloader()), ("val", datamodule.val_dataloader())):
        ((g, y),) = list(loader)
        assert len(loader) == 1 and torch.equal(g.mask, data.load_split("karate", name)[0].mask) and len(y) == 4


def test_baselines_see_the_node_features_only_and_report_their_spread_over_seeds(prepared):
    from pipeline import baselines

    rows = {row["name"]: row for row in baselines.baseline_rows("karate")}
    # one-hot identities: an unlabelled member's features say nothing, so no baseline beats a coin by much
    assert rows["mlp_classifier"]["test/accuracy_mean"] < 0.7
    assert rows["mlp_classifier"]["test/accuracy_std"] >= 0 and "test/accuracy_std" in rows["logistic_regression"]
    assert rows["mlp_classifier"]["family"] == "scikit-learn, node features only"


def test_cora_is_prepared_only_when_data_download_names_it(monkeypatch, tmp_path):
    import dataclasses

    from pipeline import prepare as stage

    prepared: list[str] = []

    def record(dataset, config, out_dir):
        prepared.append(dataset)
        out_dir.mkdir(parents=True)
        return {"sizes": {}}

    from pipeline import files

    monkeypatch.setattr(files, "ROOT", tmp_path)  # a stage writes only under the project's own folders
    monkeypatch.setattr(stage, "PREPARED", tmp_path / "data" / "prepared")
    monkeypatch.setattr(stage, "prepare", record)
    monkeypatch.setitem(data.DATASETS, "cora", dataclasses.replace(data.DATASETS["cora"], fetch=lambda: None))  # no network
    config = load()
    assert config.data.download == []
    for download in ([], ["cora"]):
        prepared.clear()
        monkeypatch.setattr(stage, "load", lambda **_: dataclasses.replace(config, data=dataclasses.replace(config.data, download=download)))
        stage.main([])
        assert ("cora" in prepared) == bool(download) and {"karate", "sbm", "digits"} <= set(prepared)


def test_cora_keeps_planetoids_public_split(monkeypatch):
    """Planetoid itself downloads; a stand-in with its attributes checks what `cora.make_graph` makes of them."""
    import torch_geometric.datasets
    from torch_geometric.data import Data

    masks = {name: torch.tensor([i % 3 == k for i in range(9)]) for k, name in enumerate(data.SPLITS)}
    fake = Data(x=torch.randn(9, 4), edge_index=torch.tensor([[0, 1], [1, 0]]), y=torch.arange(9) % 2,
                **{f"{name}_mask": mask for name, mask in masks.items()})
    monkeypatch.setattr(torch_geometric.datasets, "Planetoid", lambda root, name: [fake] if name == "Cora" else None)
    arrays, _ = cora.make_graph(CONFIG)
    assert all(np.array_equal(arrays["masks"][name], masks[name].numpy()) for name in data.SPLITS)
    assert np.array_equal(arrays["x"], fake.x.numpy()) and np.array_equal(arrays["y"], fake.y.numpy())
