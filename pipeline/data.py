"""Dataset registry: embedded loaders -> seeded, stratified splits -> standardized tensors -> DataModule.

Prepared data is plain tensors in `data/prepared/<dataset>/{train,val,test}.pt` plus `meta.json`,
read back with `torch.load(weights_only=True)`. Preprocessing is fitted on the training split only.

A graph dataset (kind "graph", ch. 8) is one graph whose nodes are the samples: `graph.pt` holds its
node features, edges, labels and the train/val/test node masks (semi-supervised: a few labelled nodes
train, the unlabelled ones are the test split). Its split, as `load_split` gives it, is the whole
graph (a PyTorch Geometric `Data` with that split's `mask`) and the labels of the split's nodes.

The datasets from the network (MNIST, Fashion-MNIST, CIFAR-10, Cora) are opt-in: their `fetch`
(pipeline/downloads.py) puts their raw files in data/raw/, downloading what is missing, and only
for the datasets params.yaml's data.download names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from functools import partial
from typing import Callable

import numpy as np

from pipeline import downloads, files
from pipeline.base import ROOT, ConfigError

PREPARED = ROOT / "data" / "prepared"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know about its data: task, input shape, number of classes."""

    task: str  # regression | binary | multiclass | sequence (a target token per output position) | control (an environment)
    input_shape: tuple[int, ...]  # one sample, e.g. (10,), (1, 8, 8) images or (8, 8) sequences of T steps x D features; control: one observation
    num_classes: int  # 0 for regression; the target tokens' vocabulary for sequence; control: the number of discrete actions
    vocab_size: int = 0  # sequence: input tokens are 0 .. vocab_size - 1 (targets are the first num_classes of them)
    target_length: int = 0  # sequence: target tokens per sample, predicted at the input's last positions
    environment: str = ""  # control: the gymnasium environment id the agent acts in (no prepared splits)

    @property
    def primary_metric(self) -> str:
        return {"regression": "mse", "control": "mean_return"}.get(self.task, "accuracy")

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.task in ("multiclass", "sequence") else 1


@dataclass(frozen=True)
class Dataset:
    """An embedded dataset: `load` gives (x, y) that `split` shares out at random (stratified for
    classification), or `make_splits` builds the three splits itself (a time series split in time,
    generated sequences) and returns them with facts for meta.json. `scaling` standardizes inputs with
    training statistics per feature, with one mean and scale for all values (images), or not at all."""

    spec: DataSpec
    load: Callable[[], tuple[np.ndarray, np.ndarray]] | None
    description: str
    scaling: str = "feature"  # feature | global | none (token ids, kept as integers)
    make_splits: Callable[..., tuple[dict, dict]] | None = None
    kind: str = "samples"  # samples (independent rows) | graph (one graph: `make_graph` builds it)
    make_graph: Callable[..., tuple[dict, dict]] | None = None
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


def _diabetes():
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return bunch.data, bunch.target


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return bunch.data, bunch.target


def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images[:, None, :, :], bunch.target  # (N, 1, 8, 8)


def _digit_rows():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target  # (N, 8, 8): 8 time steps, the image's rows, of 8 pixels each


# The AR(2) series: x_t = φ₁ x_{t-1} + φ₂ x_{t-2} + ε_t, ε_t ~ N(0, σ²) (stationary: the roots of
# 1 - φ₁z - φ₂z² lie outside the unit circle). Given the past, the best one-step forecast is
# φ₁ x_{t-1} + φ₂ x_{t-2} and its mean squared error is σ²: no forecaster can do better.
AR_COEFFICIENTS = (1.2, -0.5)
AR_NOISE_STD = 1.0
AR_LENGTH = 50_000  # points in the whole series, cut in time into train | val | test
AR_WINDOW = 16  # past values each forecast sees
AR_BURN_IN = 500  # steps dropped so the series starts in its stationary distribution


def ar_series(length: int, coefficients: tuple[float, ...], noise_std: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(series x, noise ε) of an AR(p) process, after a burn-in."""
    rng = np.random.default_rng(seed)
    p = len(coefficients)
    noise = rng.normal(0.0, noise_std, size=length + AR_BURN_IN)
    x = np.zeros(length + AR_BURN_IN)
    for t in range(p, len(x)):
        x[t] = sum(c * x[t - 1 - i] for i, c in enumerate(coefficients)) + noise[t]
    return x[AR_BURN_IN:], noise[AR_BURN_IN:]


def windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n - window, window, 1): the past `window` values; targets (n - window,): the next value."""
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], window)
    return x[:, :, None].copy(), series[window:].copy()


def _ar_splits(config) -> tuple[dict, dict]:
    """One seeded series, cut in time (train, then val, then test), windows inside each part only."""
    series, _ = ar_series(AR_LENGTH, AR_COEFFICIENTS, AR_NOISE_STD, config.split_seed)
    n_test, n_val = int(AR_LENGTH * config.test_fraction), int(AR_LENGTH * config.val_fraction)
    cuts = {"train": series[: -n_val - n_test], "val": series[-n_val - n_test : -n_test], "test": series[-n_test:]}
    facts = {"noise_variance": AR_NOISE_STD**2, "ar_coefficients": list(AR_COEFFICIENTS), "window": AR_WINDOW}
    return {name: windows(part, AR_WINDOW) for name, part in cuts.items()}, facts


# The sequence task: reverse a string of digits. Input tokens: the source's digits, a separator,
# then the target shifted right (teacher forcing: each position sees the true target so far); the
# target's L tokens are predicted at the input's last L positions.
REVERSE_LENGTH = 8
REVERSE_SAMPLES = 15_000
SEPARATOR = 10  # the token after the source digits 0..9


def reverse_task(sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sources (n, S) digits -> decoder inputs (n, 2S) = [source, SEP, target[:-1]], targets (n, S) = source reversed."""
    targets = sources[:, ::-1]
    separator = np.full((len(sources), 1), SEPARATOR)
    return np.concatenate([sources, separator, targets[:, :-1]], axis=1), targets.copy()


def _reverse_splits(config) -> tuple[dict, dict]:
    """Distinct seeded random digit strings, shared out at random: no test string is seen in training."""
    rng = np.random.default_rng(config.split_seed)
    sources = np.unique(rng.integers(0, 10, size=(REVERSE_SAMPLES, REVERSE_LENGTH)), axis=0)
    sources = sources[rng.permutation(len(sources))]
    n_test, n_val = int(len(sources) * config.test_fraction), int(len(sources) * config.val_fraction)
    parts = {"train": sources[n_test + n_val :], "val": sources[n_test : n_test + n_val], "test": sources[:n_test]}
    return {name: reverse_task(part) for name, part in parts.items()}, {"task_rule": "target = source reversed"}


# Graph datasets (ch. 8): one graph, node classification, semi-supervised. `make_graph(config)`
# returns the arrays x (N, F) float, edge_index (2, E) int (both directions of every undirected
# edge), y (N,) int and masks {split: (N,) bool}, and facts for meta.json. The data config's
# fractions do not apply: a few labelled nodes per class train, as many validate, the rest test.


def node_split(y: np.ndarray, train_per_class: int, val_per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded masks: `train_per_class` nodes of each class, then `val_per_class` more; the rest is test."""
    rng = np.random.default_rng(seed)
    masks = {name: np.zeros(len(y), dtype=bool) for name in SPLITS}
    for k in np.unique(y):
        nodes = rng.permutation(np.flatnonzero(y == k))
        masks["train"][nodes[:train_per_class]] = True
        masks["val"][nodes[train_per_class : train_per_class + val_per_class]] = True
    masks["test"] = ~(masks["train"] | masks["val"])
    return masks


def edge_index_of(graph) -> np.ndarray:
    """A networkx graph's edges as (2, E) node indices, each undirected edge in both directions."""
    edges = np.array(list(graph.edges()), dtype=np.int64).reshape(-1, 2)
    return np.concatenate([edges, edges[:, ::-1]]).T.copy()


KARATE_LABELLED = 2  # labelled nodes per club, for training and again for validation


def _karate(config) -> tuple[dict, dict]:
    """Zachary's karate club (networkx): 34 members, 78 friendships; the label is the club each member
    joined after the split ('Mr. Hi' 0, 'Officer' 1); features are one-hot node identities, so only
    the graph tells an unlabelled member's club."""
    import networkx as nx

    graph = nx.karate_club_graph()
    clubs = sorted({club for _, club in graph.nodes(data="club")})
    y = np.array([clubs.index(graph.nodes[node]["club"]) for node in range(graph.number_of_nodes())])
    masks = node_split(y, KARATE_LABELLED, KARATE_LABELLED, config.split_seed)
    arrays = {"x": np.eye(len(y)), "edge_index": edge_index_of(graph), "y": y, "masks": masks}
    return arrays, {"classes": clubs}


# The stochastic block model: SBM_BLOCKS planted communities of SBM_BLOCK_SIZE nodes, an edge inside a
# community with probability SBM_P_IN and between two with SBM_P_OUT (mean degree about 8). Node
# features: the community's mean μ_k ~ N(0, SBM_SIGNAL² I) plus N(0, I) noise, too noisy alone to
# tell the community of most nodes; a node's neighbours, mostly of its own community, average the
# noise away.
SBM_BLOCKS, SBM_BLOCK_SIZE, SBM_P_IN, SBM_P_OUT = 4, 100, 0.05, 0.01
SBM_FEATURES, SBM_SIGNAL = 16, 0.5
SBM_LABELLED = 10  # labelled nodes per community, for training and again for validation
SBM_SEED = 0  # the graph and its features; the split follows data.split_seed


def _sbm(config) -> tuple[dict, dict]:
    import networkx as nx

    probabilities = [[SBM_P_IN if i == j else SBM_P_OUT for j in range(SBM_BLOCKS)] for i in range(SBM_BLOCKS)]
    graph = nx.stochastic_block_model([SBM_BLOCK_SIZE] * SBM_BLOCKS, probabilities, seed=SBM_SEED)
    y = np.array([graph.nodes[node]["block"] for node in range(graph.number_of_nodes())])
    rng = np.random.default_rng(SBM_SEED)
    means = rng.normal(0.0, SBM_SIGNAL, size=(SBM_BLOCKS, SBM_FEATURES))  # μ_k
    x = means[y] + rng.normal(size=(len(y), SBM_FEATURES))
    masks = node_split(y, SBM_LABELLED, SBM_LABELLED, config.split_seed)
    return {"x": x, "edge_index": edge_index_of(graph), "y": y, "masks": masks}, {"community_means": means.tolist()}


def _cora(config) -> tuple[dict, dict]:
    """Cora (PyTorch Geometric's Planetoid, from its raw files in data/raw/Planetoid/Cora/raw/): 2708
    papers, their citations, 1433 bag-of-words features, 7 topics; Planetoid's public split (20
    labelled papers per topic, 500 validate, 1000 test), so results compare with the literature's.
    The split seed does not apply."""
    from torch_geometric.datasets import Planetoid

    graph = Planetoid(str(downloads.RAW / "Planetoid"), "Cora")[0]
    masks = {name: getattr(graph, f"{name}_mask").numpy() for name in SPLITS}
    arrays = {"x": graph.x.numpy(), "edge_index": graph.edge_index.numpy(), "y": graph.y.numpy(), "masks": masks}
    return arrays, {"source": "torch_geometric.datasets.Planetoid('Cora'), public split"}


# Image datasets from the network (pipeline/downloads.py reads their files): the official test set
# is the test split; val is carved from the official training set.


def _official_splits(read: Callable[[], tuple[dict, dict]], config) -> tuple[dict, dict]:
    """The official test set as the test split (data.test_fraction does not apply); val_fraction of
    the official training set, stratified by class and seeded with data.split_seed, as the val split.
    Pixels become float32 here, so the scaling in `prepare` stays in float32 (a float64 copy of
    CIFAR-10 is 1.1 GB)."""
    from sklearn.model_selection import train_test_split

    parts, facts = read()
    x, y = parts["train"]
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=config.val_fraction, random_state=config.split_seed, stratify=y
    )
    splits = {"train": (x_train, y_train), "val": (x_val, y_val), "test": parts["test"]}
    facts = {**facts, "splits": f"test: the official test set; val: {config.val_fraction} of the official training set, "
                                f"stratified, seed {config.split_seed}; train: the rest of it"}
    return {name: (x.astype(np.float32), y) for name, (x, y) in splits.items()}, facts


DATASETS: dict[str, Dataset] = {
    "diabetes": Dataset(DataSpec("regression", (10,), 0), _diabetes, "scikit-learn diabetes, 442 x 10"),
    "breast_cancer": Dataset(
        DataSpec("binary", (30,), 2), _breast_cancer, "scikit-learn breast cancer Wisconsin, 569 x 30"
    ),
    "digits": Dataset(DataSpec("multiclass", (1, 8, 8), 10), _digits, "scikit-learn digits, 1797 x 1x8x8", "global"),
    "digit_rows": Dataset(
        DataSpec("multiclass", (8, 8), 10), _digit_rows, "scikit-learn digits read as 8 rows of 8 pixels, 1797 x 8x8", "global"
    ),
    "ar_series": Dataset(
        DataSpec("regression", (AR_WINDOW, 1), 0), None,
        f"AR(2) series, φ = {AR_COEFFICIENTS}, σ = {AR_NOISE_STD}, {AR_LENGTH} steps, windows of {AR_WINDOW}",
        "global", _ar_splits,
    ),
    "reverse_digits": Dataset(
        DataSpec("sequence", (2 * REVERSE_LENGTH,), 10, vocab_size=11, target_length=REVERSE_LENGTH), None,
        f"distinct random strings of {REVERSE_LENGTH} digits and their reversal, {REVERSE_SAMPLES} drawn",
        "none", _reverse_splits,
    ),
    "cartpole": Dataset(
        DataSpec("control", (4,), 2, environment="CartPole-v1"), None,
        "gymnasium CartPole-v1: observations of 4 numbers, 2 actions, +1 a step, at most 500 steps", "none",
    ),
    "karate": Dataset(
        DataSpec("multiclass", (34,), 2), None,
        f"Zachary's karate club (networkx), 34 nodes, 78 edges, the two clubs; {KARATE_LABELLED} labelled nodes per club",
        "none", kind="graph", make_graph=_karate,
    ),
    "sbm": Dataset(
        DataSpec("multiclass", (SBM_FEATURES,), SBM_BLOCKS), None,
        f"stochastic block model, {SBM_BLOCKS} x {SBM_BLOCK_SIZE} nodes, p_in {SBM_P_IN}, p_out {SBM_P_OUT}, "
        f"{SBM_FEATURES} noisy features; {SBM_LABELLED} labelled nodes per community",
        "none", kind="graph", make_graph=_sbm,
    ),
    # opt-in, from the network (data.download: [cora, mnist, ...])
    "cora": Dataset(
        DataSpec("multiclass", (1433,), 7), None, "Cora citation graph (Planetoid), 2708 nodes, public split",
        "none", kind="graph", make_graph=_cora, fetch=downloads.fetch_cora,
    ),
    "mnist": Dataset(
        DataSpec("multiclass", (1, 28, 28), 10), None, "MNIST handwritten digits, 60000 + 10000 x 1x28x28", "global",
        partial(_official_splits, partial(downloads.read_idx_dataset, downloads.MNIST, downloads.MNIST_CLASSES)),
        fetch=partial(downloads.fetch_idx, downloads.MNIST),
    ),
    "fashion_mnist": Dataset(
        DataSpec("multiclass", (1, 28, 28), 10), None, "Fashion-MNIST (Zalando), 60000 + 10000 x 1x28x28", "global",
        partial(_official_splits, partial(downloads.read_idx_dataset, downloads.FASHION_MNIST, downloads.FASHION_MNIST_CLASSES)),
        fetch=partial(downloads.fetch_idx, downloads.FASHION_MNIST),
    ),
    "cifar10": Dataset(
        DataSpec("multiclass", (3, 32, 32), 10), None, "CIFAR-10, 50000 + 10000 x 3x32x32 colour images", "global",
        partial(_official_splits, downloads.read_cifar10), fetch=downloads.fetch_cifar10,
    ),
}


# ---------------------------------------------------------------------------------------------
# Prepare


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
    parts, facts = _split_with_facts(dataset, config)
    x_train = parts["train"][0].reshape(len(parts["train"][0]), -1)
    if entry.scaling == "global":  # images, one series: one mean and scale for all values keeps a background uniform
        mean, std = x_train.mean(), x_train.std()
    elif entry.scaling == "feature":  # tabular: per feature
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
    meta = {"dataset": dataset, **asdict(spec), **facts, "sizes": {}}
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
    import io

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


GRAPH_FILE = "graph.pt"


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


# ---------------------------------------------------------------------------------------------
# Load


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
    import torch

    if dataset in DATASETS and DATASETS[dataset].is_environment:
        raise ConfigError(f"{dataset}: an environment ({DATASETS[dataset].spec.environment}) has no {name} split")
    path = prepared_dir(dataset) / f"{name}.pt"
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


class BatchIndexDataset:
    """Indexes whole batches at once: `dataset[indices]` -> (x[indices], y[indices]).

    Fed by a BatchSampler as the DataLoader's sampler with `batch_size=None`, this skips the
    per-sample `__getitem__` and collate that dominate small in-memory datasets.
    """

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, indices):
        return self.x[indices], self.y[indices]


class EpochBatches:
    """The shuffled training batches of each epoch, one process's share, resumable mid-epoch.

    Epoch e's order is what a RandomSampler with a generator seeded with `seed` gives in its e-th
    epoch (it draws two permutations an epoch and uses the first), so it depends on (seed, epoch)
    alone and a resumed
    training sees the order an uninterrupted one saw. Under DDP each of `world` processes takes
    every world-th sample of the permutation (padded by wrapping round to equal shares, as
    DistributedSampler does), then cuts its share into batches of `batch_size` (per device).
    `skip(epoch, batches)` makes that epoch start after its first `batches` batches: the
    position a mid-epoch checkpoint recorded.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        import torch

        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0
        self._generator = torch.Generator().manual_seed(seed)
        self._drawn = 0  # permutations drawn from the generator so far
        self._skip: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before each epoch
        self.epoch = epoch

    def skip(self, epoch: int, batches: int) -> None:
        self._skip = (epoch, batches)

    def __len__(self) -> int:
        share = -(-self.n // self.world)
        return -(-share // self.batch_size)

    def _permutation(self, epoch: int):
        import torch

        if self._drawn > epoch:  # an earlier epoch again (a restart): replay the generator from the seed
            self._generator.manual_seed(self.seed)
            self._drawn = 0
        while True:
            permutation = torch.randperm(self.n, generator=self._generator)
            torch.randperm(self.n, generator=self._generator)  # RandomSampler's empty remainder draw
            self._drawn += 1
            if self._drawn > epoch:
                return permutation

    def __iter__(self):
        permutation = self._permutation(self.epoch)
        if self.world > 1:
            padded = -(-self.n // self.world) * self.world
            permutation = permutation.repeat(-(-padded // self.n))[:padded][self.rank :: self.world]
        batches = permutation.split(self.batch_size)
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = self._skip[1]
        self._skip = None
        for batch in batches[start:]:
            yield batch


class TrainBatches:
    """An epoch of training batches as Lightning iterates them: `dataset[indices]` for each batch of
    indices the sampler (EpochBatches) yields.

    A plain iterable in place of a DataLoader: for in-memory tensors the DataLoader's per-batch work
    (a profiler range, the index fetcher, the pin-memory check) costs more than the indexing itself,
    about 0.1 ms a step (bench/train_loop.py). Lightning reaches `sampler.set_epoch` through the
    `sampler` attribute, as it does a DataLoader's.
    """

    def __init__(self, dataset: BatchIndexDataset, sampler: EpochBatches):
        self.dataset, self.sampler = dataset, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        dataset = self.dataset
        for indices in self.sampler:
            yield dataset[indices]


def make_datamodule(dataset: str, batch_size: int, seed: int):
    """The DataModule of a dataset's kind: batches of samples, or the one graph (full batch); None for
    an environment, whose family module makes its own training data (rollouts) and validation episodes."""
    if DATASETS[dataset].is_environment:
        return None
    if DATASETS[dataset].kind == "graph":
        return _graph_datamodule(dataset)
    return _samples_datamodule(dataset, batch_size, seed)


def _graph_datamodule(dataset: str):
    import lightning as L

    class GraphDataModule(L.LightningDataModule):
        """Full-batch: every step (training, validation, test) sees the whole graph, one batch an
        epoch, as (graph with the split's node mask, labels of those nodes); the masked nodes alone
        enter the loss and the metrics. Nothing is random in it, so it has no state to checkpoint."""

        def setup(self, stage: str) -> None:
            self.splits = {name: load_split(dataset, name) for name in SPLITS}

        def train_dataloader(self) -> OneBatch:
            return OneBatch(self.splits["train"])

        def val_dataloader(self) -> OneBatch:
            return OneBatch(self.splits["val"])

        def test_dataloader(self) -> OneBatch:
            return OneBatch(self.splits["test"])

    return GraphDataModule()


class OneBatch:
    """An epoch of one batch (a plain iterable: Lightning would take a list for several dataloaders)."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


def _samples_datamodule(dataset: str, batch_size: int, seed: int):
    import lightning as L
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    class InMemoryDataModule(L.LightningDataModule):
        """Train in shuffled batches (seeded by epoch, each process its share under DDP); validate and
        test on each whole split in one batch. Its state in a checkpoint is the position in the epoch,
        so a training resumed from a mid-epoch checkpoint goes on with the very next batch."""

        def __init__(self):
            super().__init__()
            self._resume_at: tuple[int, int] | None = None

        def setup(self, stage: str) -> None:
            self.splits = {name: BatchIndexDataset(*load_split(dataset, name)) for name in SPLITS}

        def _whole_split(self, name: str) -> DataLoader:
            data = self.splits[name]
            return DataLoader(data, sampler=BatchSampler(SequentialSampler(data), len(data), drop_last=False), batch_size=None)

        def state_dict(self) -> dict:
            trainer = self.trainer
            if trainer is None or not trainer.training:
                return {}
            progress = trainer.fit_loop.epoch_loop.batch_progress.current
            return {"epoch": trainer.current_epoch, "batches_done": progress.completed}

        def load_state_dict(self, state: dict) -> None:
            if state:
                self._resume_at = (state["epoch"], state["batches_done"])

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            # In-memory CPU tensors are already where a CPU run needs them; Lightning's generic walk
            # over the batch is a measurable share of a small model's step.
            if device.type == "cpu":
                return batch
            return super().transfer_batch_to_device(batch, device, dataloader_idx)

        def train_dataloader(self) -> TrainBatches:
            data, trainer = self.splits["train"], self.trainer
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            sampler = EpochBatches(len(data), batch_size, seed, rank, world)
            if self._resume_at is not None:
                sampler.skip(*self._resume_at)
                self._resume_at = None
            return TrainBatches(data, sampler)

        def val_dataloader(self) -> DataLoader:
            return self._whole_split("val")

        def test_dataloader(self) -> DataLoader:
            return self._whole_split("test")

    return InMemoryDataModule()
