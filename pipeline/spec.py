"""What the pipeline knows of a dataset: the DataSpec a family is built from, the Dataset entry that
makes it (pipeline/datasets/, one file each), and where its prepared files lie.

Every family imports DataSpec, so this module imports nothing heavier than the project's root folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.base import ROOT

PREPARED = ROOT / "data" / "prepared"  # data/prepared/<dataset>/: written by prepare, read by pipeline.data
BASELINES = ROOT / "baselines"  # baselines/<dataset>.json: the rows the baselines stage fits, the report reads
SCORERS = ROOT / "scorers"  # scorers/<dataset>.pt and .json: written by the scorer stage (pipeline.core.scoring)
SPLITS = ("train", "val", "test")
KINDS = {  # a dataset's kind -> what its samples are, in words (a family takes one kind: its DATA_KIND)
    "samples": "independent samples",
    "graph": "the nodes of one graph",
    "graphs": "whole graphs, one label each",
}
GRAPH_FILE = "graph.pt"  # a graph dataset's one file: the graph and every split's node mask


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know about its data: task, input shape, number of classes."""

    task: str  # regression | binary | multiclass | sequence (a target token per output position) | control (an environment) | oneshot (test classes unseen in training)
    input_shape: tuple[int, ...]  # one sample, e.g. (10,), (1, 8, 8) images or (8, 8) sequences of T steps x D features; control: one observation
    num_classes: int  # 0 for regression; the target tokens' vocabulary for sequence; control: the number of discrete actions; oneshot: training classes
    vocab_size: int = 0  # sequence: input tokens are 0 .. vocab_size - 1 (targets are the first num_classes of them)
    target_length: int = 0  # sequence: target tokens per sample, predicted at the input's last positions
    pad_token: int | None = None  # sequence: the token after a shorter source's end and a shorter target's (a target class: predicting it ends the output); None: one length
    environment: str = ""  # control: the gymnasium environment id the agent acts in (no prepared splits)

    @property
    def primary_metric(self) -> str:
        return {"regression": "mse", "control": "mean_return", "oneshot": "oneshot_accuracy"}.get(self.task, "accuracy")

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.task in ("multiclass", "sequence") else 1


@dataclass(frozen=True)
class Dataset:
    """A dataset, as one file of pipeline/datasets/ defines it (its DATASET): `load` gives (x, y) that
    prepare shares out at random (stratified for classification), or `make_splits` builds the three
    splits itself (a time series split in time, generated sequences) and returns them with facts for
    meta.json. `scaling` standardizes inputs with training statistics per feature, with one mean and
    scale for all values (images), or not at all."""

    spec: DataSpec
    load: Callable[[], tuple] | None  # () -> (x (n, *input_shape), y (n,)) as numpy arrays
    description: str
    scaling: str = "feature"  # feature | global | none (token ids, kept as integers)
    make_splits: Callable[..., tuple[dict, dict]] | None = None  # (data config) -> ({split: (x, y)}, facts)
    kind: str = "samples"  # one of KINDS: samples (independent rows) | graph (one graph: `make_graph` builds it) | graphs (`make_graphs`)
    make_graph: Callable[..., tuple[dict, dict]] | None = None  # (data config) -> (arrays, facts); see pipeline/datasets/_graph.py
    make_graphs: Callable[..., tuple[dict, dict]] | None = None  # (data config) -> ({split: ([(x (N, F), edge_index (2, E))], y (G,))}, facts)
    fetch: Callable[[], None] | None = None  # from the network: puts the raw files in data/raw/, downloading what is missing

    @property
    def download(self) -> bool:
        """Opt-in: prepared only if params.yaml's data.download names it (pipeline/downloads.py fetches it)."""
        return self.fetch is not None

    @property
    def is_environment(self) -> bool:
        """An environment an agent acts in: prepare checks it and writes meta.json only; there are no
        splits, and the family's own rollouts are its training data (make_datamodule gives None)."""
        return bool(self.spec.environment)
