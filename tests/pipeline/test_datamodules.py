"""pipeline.datamodules: whole batches indexed at once, each epoch's seeded order (the same in a
Lightning fit), the validation and test splits whole and in order, batches left where they are."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
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


def batch_recorder():
    """A LightningModule that learns nothing (lr 0) and records the inputs of each epoch's batches."""
    import lightning as L

    class BatchRecorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.seen: dict[int, list[torch.Tensor]] = {}

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).append(batch[0].clone())
            return (self.weight * batch[0].sum()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return BatchRecorder()


def test_a_lightning_fit_trains_each_epoch_in_that_epochs_seeded_order(prepared_toy):
    """Lightning sets the epoch on the training batches (an iterable, not a DataLoader) through their
    `sampler`: each epoch of a fit sees the order EpochBatches gives for that epoch, and epochs differ."""
    model = batch_recorder()
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




def tiled_text(length: int, window: int, targets: int, seed: int = 0) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray]]:
    """A random text and its windows of `window` tokens whose last `targets` are targets (docstrings.windows)."""
    from pipeline.datasets.docstrings import windows

    text = np.random.default_rng(seed).integers(0, 97, length)
    return torch.from_numpy(text), windows(text, window, targets)


def test_window_stream_is_the_text_the_windows_were_cut_from():
    text, (x, y) = tiled_text(1000, 16, 12)
    stream = datamodules.window_stream(torch.from_numpy(x), torch.from_numpy(y))
    assert torch.equal(stream, text[: 12 * (len(x) - 1) + 16 + 1])
    _, (x, y) = tiled_text(100, 8, 8)  # windows that are all targets (docstrings'): stride T, no overlap
    assert torch.equal(datamodules.window_stream(torch.from_numpy(x), torch.from_numpy(y))[:8], torch.from_numpy(x[0]))


def test_window_stream_refuses_windows_that_do_not_tile_a_text():
    _, (x, y) = tiled_text(1000, 16, 12)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    with pytest.raises(ValueError, match="do not tile one text at stride 12"):
        datamodules.window_stream(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))], y)
    with pytest.raises(ValueError, match="do not tile"):
        datamodules.window_stream(x, torch.roll(y, 1, dims=1))


def test_window_offsets_depend_on_seed_and_epoch_alone_and_keep_the_last_window_in_the_text():
    offsets = datamodules.window_offsets(500, 12, seed=3, epoch=2)
    assert torch.equal(offsets, datamodules.window_offsets(500, 12, seed=3, epoch=2))
    assert not torch.equal(offsets, datamodules.window_offsets(500, 12, seed=3, epoch=1))
    assert not torch.equal(offsets, datamodules.window_offsets(500, 12, seed=4, epoch=2))
    assert offsets.min() == 0 and offsets.max() == 11 and offsets[-1] == 0
    assert set(offsets[:-1].tolist()) == set(range(12))


def test_offset_windows_are_the_windows_of_the_text_at_the_moved_starts():
    """Window i at offset o: inputs c_s … c_{s+T-1} and targets c_{s+T-L+1} … c_{s+T}, s = iL + o, cut from
    the text itself (not from the stored windows)."""
    text, (x, y) = tiled_text(1000, 16, 12)
    windows = datamodules.OffsetWindows(torch.from_numpy(x), torch.from_numpy(y), seed=1)
    windows.set_epoch(4)
    offsets = datamodules.window_offsets(len(x), 12, seed=1, epoch=4)
    indices = torch.tensor([0, 5, len(x) - 1, 17])
    xb, yb = windows[indices]
    for row, i in enumerate(indices.tolist()):
        s = 12 * i + int(offsets[i])
        assert torch.equal(xb[row], text[s : s + 16]) and torch.equal(yb[row], text[s + 5 : s + 17])
    assert torch.equal(xb[:, 1:][:, -11:], yb[:, :-1])  # the targets are the inputs' next tokens


def test_a_lightning_fit_with_random_offsets_sees_each_epochs_offsets(monkeypatch):
    """Through make_datamodule and a fit, as the train stage builds them: epoch e's batches are the
    windows of EpochBatches' order for e moved by window_offsets(seed, e); the validation split stays fixed."""
    _, (x, y) = tiled_text(2000, 16, 12)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    monkeypatch.setattr(datamodules, "load_split", lambda dataset, name: (x, y))

    model = batch_recorder()
    datamodule = make_datamodule("docstrings_long", 32, seed=5, random_offsets=True)
    quiet_trainer(max_epochs=2, limit_val_batches=0).fit(model, datamodule=datamodule)
    windows, sampler = datamodules.OffsetWindows(x, y, seed=5), datamodules.EpochBatches(len(x), 32, seed=5)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        windows.set_epoch(epoch)
        expected = [windows[indices][0] for indices in sampler]
        assert all(torch.equal(a, b) for a, b in zip(model.seen[epoch], expected, strict=True)), epoch
    assert not any(torch.equal(a, x[indices]) for a, indices in zip(model.seen[0], sampler))  # moved, not as stored
    ((x_val, _),) = list(datamodule.val_dataloader())
    assert torch.equal(x_val, x)
