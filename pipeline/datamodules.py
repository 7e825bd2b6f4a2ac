"""The DataModules that batch prepared data (pipeline.data) for Lightning: shuffled in-memory batches
of samples (or of whole graphs), resumable mid-epoch, and the one graph of a graph dataset (full batch).

They subclass Lightning's, so importing this module imports Lightning; the stages import it after
their checks, and pipeline.data, which only reads the splits back, does not.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from pipeline.data import load_split
from pipeline.datasets import DATASETS
from pipeline.spec import SPLITS


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
    alone and a resumed training sees the order an uninterrupted one saw. Under DDP each of `world` processes takes
    every world-th sample of the permutation (padded by wrapping round to equal shares, as
    DistributedSampler does), then cuts its share into batches of `batch_size` (per device).
    `skip(epoch, batches)` makes that epoch start after its first `batches` batches: the
    position a mid-epoch checkpoint recorded.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
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
    (a profiler range, the index fetcher, the pin-memory check) costs more than the indexing itself
    (bench/train_loop.py measures both). Lightning reaches `sampler.set_epoch` through the
    `sampler` attribute, as it does a DataLoader's.
    """

    def __init__(self, dataset: BatchIndexDataset, sampler: EpochBatches):
        self.dataset, self.sampler = dataset, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        dataset = self.dataset
        if isinstance(dataset, OffsetWindows):  # this epoch's offsets, a function of (seed, epoch) as the order is
            dataset.set_epoch(self.sampler.epoch)
        for indices in self.sampler:
            yield dataset[indices]


def window_stream(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The text that windows of T tokens at stride L tile, for x (n, T) and y (n, L), y[i] the next token of
    x[i]'s last L positions: c_0 … c_{(n-1)L+T}, x[i] = c_{iL} … c_{iL+T-1}. A ValueError if they do not
    tile it (consecutive windows not overlapping in T - L tokens, or targets not the inputs shifted)."""
    steps, targets = x.shape[1], y.shape[1]
    stream = torch.cat([x[0], x[1:, steps - targets :].flatten(), y[-1, -1:]])
    starts = targets * torch.arange(len(x))[:, None]
    if not (torch.equal(stream[starts + torch.arange(steps)], x)
            and torch.equal(stream[starts + torch.arange(steps - targets + 1, steps + 1)], y)):
        raise ValueError(f"the training windows do not tile one text at stride {targets} (the target length)")
    return stream


def window_offsets(n: int, stride: int, seed: int, epoch: int) -> torch.Tensor:
    """Each of n windows' offset in an epoch, uniform in 0 … stride - 1 (0 for the last window, which
    ends at the text's end), drawn from a generator seeded by (seed, epoch) alone, as EpochBatches' order is."""
    import numpy as np

    offsets = torch.from_numpy(np.random.default_rng([seed, epoch]).integers(0, stride, n))
    offsets[-1] = 0
    return offsets


class OffsetWindows:
    """The training windows of a text (window_stream), each moved by an offset: window i of epoch e
    starts at i L + o_i, o_i from window_offsets(seed, e), so every epoch shows the model other windows
    of the same training text (its characters at other positions, after other contexts), each
    character a target about once an epoch, as in the fixed windows."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seed: int):
        self.stream, self.n, self.seed = window_stream(x, y), len(x), seed
        self.steps, self.targets = x.shape[1], y.shape[1]
        self.set_epoch(0)

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.offsets = window_offsets(self.n, self.targets, self.seed, epoch)

    def __getitem__(self, indices):
        starts = (self.targets * indices + self.offsets[indices])[:, None]
        x = self.stream[starts + torch.arange(self.steps)]
        return x, self.stream[starts + torch.arange(self.steps - self.targets + 1, self.steps + 1)]


class OneBatch:
    """An epoch of one batch (a plain iterable: Lightning would take a list for several dataloaders)."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


class GraphDataModule(L.LightningDataModule):
    """A graph dataset, full batch: every step (training, validation, test) sees the whole graph, one
    batch an epoch, as (graph with the split's node mask, labels of those nodes); the masked nodes alone
    enter the loss and the metrics. Nothing is random in it, so it has no state to checkpoint."""

    def __init__(self, dataset: str):
        super().__init__()
        self.dataset = dataset

    def setup(self, stage: str) -> None:
        self.splits = {name: load_split(self.dataset, name) for name in SPLITS}

    def train_dataloader(self) -> OneBatch:
        return OneBatch(self.splits["train"])

    def val_dataloader(self) -> OneBatch:
        return OneBatch(self.splits["val"])

    def test_dataloader(self) -> OneBatch:
        return OneBatch(self.splits["test"])


class GraphBatches:
    """A split of graphs indexed by whole batches: `graphs[indices]` -> (a PyTorch Geometric Batch of
    those graphs, their labels), as BatchIndexDataset indexes samples."""

    def __init__(self, batch, y):
        self.graphs, self.y = batch.to_data_list(), y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, indices):
        from torch_geometric.data import Batch

        indices = torch.as_tensor(indices)  # a DataLoader's BatchSampler gives a list
        return Batch.from_data_list([self.graphs[i] for i in indices.tolist()]), self.y[indices]


class InMemoryDataModule(L.LightningDataModule):
    """A dataset of samples, in memory: train in shuffled batches of `batch_size` (per device; the
    order seeded by `seed` and the epoch, each process its share under DDP: EpochBatches); validate
    and test on each whole split in one batch. A training resumed from a mid-epoch checkpoint goes on
    with the very next batch: pipeline.core.resume.ResumeState keeps the position and tells the
    sampler (`EpochBatches.skip`). With `random_offsets` (a sequence dataset whose training windows
    tile one text: a family's `random_window_offsets`) each epoch's training windows start at random
    offsets in that text (OffsetWindows)."""

    def __init__(self, dataset: str, batch_size: int, seed: int, random_offsets: bool = False):
        super().__init__()
        self.dataset, self.batch_size, self.seed, self.random_offsets = dataset, batch_size, seed, random_offsets

    INDEXED = BatchIndexDataset  # (x, y) -> a split indexed by whole batches

    def setup(self, stage: str) -> None:
        self.splits = {name: self.INDEXED(*load_split(self.dataset, name)) for name in SPLITS}

    def _whole_split(self, name: str) -> DataLoader:
        data = self.splits[name]
        return DataLoader(data, sampler=BatchSampler(SequentialSampler(data), len(data), drop_last=False), batch_size=None)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # In-memory CPU tensors are already where a CPU run needs them; Lightning's generic walk
        # over the batch is a measurable share of a small model's step.
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> TrainBatches:
        data, trainer = self.splits["train"], self.trainer
        if self.random_offsets:
            data = OffsetWindows(data.x, data.y, self.seed)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TrainBatches(data, EpochBatches(len(data), self.batch_size, self.seed, rank, world))

    def val_dataloader(self) -> DataLoader:
        return self._whole_split("val")

    def test_dataloader(self) -> DataLoader:
        return self._whole_split("test")


class GraphsDataModule(InMemoryDataModule):
    """A dataset of graphs, one label each: InMemoryDataModule's shuffled, resumable batches, each a
    PyTorch Geometric Batch of `batch_size` graphs (every graph's nodes and edges, the node numbers
    offset so the graphs stay apart, and `batch`: each node's graph), with the graphs' labels."""

    INDEXED = GraphBatches


def make_datamodule(dataset: str, batch_size: int, seed: int, random_offsets: bool = False) -> L.LightningDataModule | None:
    """The DataModule of a dataset's kind: batches of samples or of graphs, or the one graph (full batch); None for
    an environment, whose family module makes its own training data (rollouts) and validation episodes.
    `random_offsets`: training windows at random offsets in their text, each epoch (OffsetWindows)."""
    if DATASETS[dataset].is_environment:
        return None
    if DATASETS[dataset].kind == "graph":
        return GraphDataModule(dataset)
    if DATASETS[dataset].kind == "graphs":
        return GraphsDataModule(dataset, batch_size, seed)
    return InMemoryDataModule(dataset, batch_size, seed, random_offsets)
