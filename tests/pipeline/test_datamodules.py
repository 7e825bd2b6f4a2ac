"""pipeline.datamodules: whole batches indexed at once, each epoch's seeded order (the same in a
Lightning fit), the validation and test splits whole and in order, batches left where they are."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from pipeline import data, datamodules
from pipeline.datamodules import BatchIndexDataset, make_datamodule

from conftest import quiet_trainer


def rows(x: np.ndarray) -> Counter:
    return Counter(map(tuple, x.reshape(len(x), -1).tolist()))


def test_batch_index_dataset_returns_whole_batches():
    x = torch.arange(20.0).reshape(10, 2)
    y = torch.arange(10)
    dataset = BatchIndexDataset(x, y)
    assert len(dataset) == 10
    xb, yb = dataset[[7, 0, 3]]
    assert torch.equal(xb, x[[7, 0, 3]]) and torch.equal(yb, torch.tensor([7, 0, 3]))

    loader = DataLoader(dataset, sampler=BatchSampler(SequentialSampler(dataset), 4, drop_last=False), batch_size=None)
    assert [yb.tolist() for _, yb in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def train_batches(dataset: str, batch_size: int, seed: int) -> list[torch.Tensor]:
    datamodule = make_datamodule(dataset, batch_size, seed)
    datamodule.setup("fit")
    return [x for x, _ in datamodule.train_dataloader()]


def test_train_loader_order_is_fixed_by_the_seed(prepared_toy):
    first = train_batches(prepared_toy, 32, seed=0)
    again = train_batches(prepared_toy, 32, seed=0)
    other = train_batches(prepared_toy, 32, seed=1)
    assert len(first) == len(again)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_train_loader_covers_the_training_split_once_per_epoch(prepared_toy):
    x_train, _ = data.load_split(prepared_toy, "train")
    batches = train_batches(prepared_toy, 32, seed=0)
    assert [len(b) for b in batches] == [32] * (len(x_train) // 32) + ([len(x_train) % 32] if len(x_train) % 32 else [])
    assert rows(torch.cat(batches).numpy()) == rows(x_train.numpy())
    assert not torch.equal(torch.cat(batches), x_train)  # shuffled


def test_a_lightning_fit_trains_each_epoch_in_that_epochs_seeded_order(prepared_toy):
    """Lightning sets the epoch on the training batches (an iterable, not a DataLoader) through their
    `sampler`: each epoch of a fit sees the order EpochBatches gives for that epoch, and epochs differ."""
    import lightning as L

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.seen: dict[int, list[torch.Tensor]] = {}

        def training_step(self, batch, batch_idx):
            x, _ = batch
            self.seen.setdefault(self.current_epoch, []).append(x.clone())
            return (self.weight * x.sum()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    model = Recorder()
    quiet_trainer(max_epochs=3, limit_val_batches=0).fit(model, datamodule=make_datamodule(prepared_toy, 32, seed=5))
    x_train, _ = data.load_split(prepared_toy, "train")
    sampler = datamodules.EpochBatches(len(x_train), 32, seed=5)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        expected = [x_train[indices] for indices in sampler]
        assert len(model.seen[epoch]) == len(expected)
        assert all(torch.equal(a, b) for a, b in zip(model.seen[epoch], expected)), epoch
    assert not torch.equal(model.seen[0][0], model.seen[1][0])


def test_val_and_test_loaders_yield_the_whole_split_in_order(prepared_toy):
    datamodule = make_datamodule(prepared_toy, 8, seed=0)
    datamodule.setup("fit")
    for name, loader in (("val", datamodule.val_dataloader()), ("test", datamodule.test_dataloader())):
        ((x, y),) = list(loader)
        x_split, y_split = data.load_split(prepared_toy, name)
        assert torch.equal(x, x_split) and torch.equal(y, y_split)


def test_batches_stay_as_they_are_on_the_cpu_and_move_to_another_device():
    datamodule = make_datamodule("digits", 8, seed=0)
    batch = (torch.zeros(4, 3), torch.ones(4))
    assert datamodule.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    x, y = datamodule.transfer_batch_to_device(batch, torch.device("meta"), 0)  # the generic path
    assert x.device.type == y.device.type == "meta" and x.shape == (4, 3)


