"""Cora (opt-in, from the network: data.download: [cora]), through PyTorch Geometric's Planetoid from
its raw files in data/raw/Planetoid/Cora/raw/: 2708 papers, their citations, 1433 bag-of-words
features, 7 topics; Planetoid's public split (20 labelled papers per topic, 500 validate, 1000 test),
so results compare with the literature's. The split seed does not apply."""

from __future__ import annotations

from pipeline import downloads
from pipeline.spec import SPLITS, Dataset, DataSpec


def make_graph(config) -> tuple[dict, dict]:
    from torch_geometric.datasets import Planetoid

    graph = Planetoid(str(downloads.RAW / "Planetoid"), "Cora")[0]
    masks = {name: getattr(graph, f"{name}_mask").numpy() for name in SPLITS}
    arrays = {"x": graph.x.numpy(), "edge_index": graph.edge_index.numpy(), "y": graph.y.numpy(), "masks": masks}
    return arrays, {"source": "torch_geometric.datasets.Planetoid('Cora'), public split"}


DATASET = Dataset(
    DataSpec("multiclass", (1433,), 7), None, "Cora citation graph (Planetoid), 2708 nodes, public split",
    "none", kind="graph", make_graph=make_graph, fetch=downloads.fetch_cora,
)
