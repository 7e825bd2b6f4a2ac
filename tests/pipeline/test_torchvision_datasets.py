"""The `vision` extra: MNIST, Fashion-MNIST and CIFAR-10 through torchvision.datasets, on small files in
their real formats, give exactly the prepared splits of our numpy readers; torchvision's own fetch
extracts checked archives and, without network, stops prepare in one line.

Skipped where torchvision is not installed: .ci/run installs the extra in a venv of its own
(.venv-vision: torchvision needs the torch build it was made for) and runs this file there."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest

torchvision = pytest.importorskip("torchvision", reason="the vision extra is not installed (.ci/run runs this file in .venv-vision)")

from test_real_datasets import (  # noqa: E402
    CIFAR_CLASSES, CONFIG, idx_files, load, prepare_fails_in_one_line, small_cifar_archive, small_idx_set,
)

from pipeline import data, downloads  # noqa: E402
from pipeline.params import ConfigError  # noqa: E402
from pipeline.prepare import prepare  # noqa: E402

IDX = [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]


@pytest.fixture(autouse=True)
def raw(tmp_path, monkeypatch):
    """data/raw/ in a temporary folder, and the network refused."""
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(downloads, "RAW", tmp_path / "raw")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return tmp_path / "raw"


def prepared_both_ways(dataset: str, tmp_path, monkeypatch) -> tuple[dict, dict]:
    """prepare through torchvision, then through the numpy readers; each meta.json."""
    assert downloads.torchvision_datasets() is torchvision.datasets
    DATASET = data.DATASETS[dataset]
    DATASET.fetch()
    by_torchvision = prepare(dataset, CONFIG, tmp_path / "torchvision")
    monkeypatch.setattr(downloads, "torchvision_datasets", lambda: None)
    by_numpy = prepare(dataset, CONFIG, tmp_path / "numpy")
    for split in ("train", "val", "test"):
        x_tv, y_tv = load(tmp_path / "torchvision" / f"{split}.pt")
        x_np, y_np = load(tmp_path / "numpy" / f"{split}.pt")
        assert x_tv.dtype == x_np.dtype and x_tv.shape == x_np.shape
        np.testing.assert_array_equal(x_tv, x_np)
        np.testing.assert_array_equal(y_tv, y_np)
    return by_torchvision, by_numpy


@pytest.mark.parametrize(("dataset", "folder"), IDX)
def test_idx_files_read_by_torchvision_match_the_numpy_readers(dataset, folder, raw, tmp_path, monkeypatch):
    (raw / folder / "raw").mkdir(parents=True)
    for name, blob in idx_files(small_idx_set(seed=5), gzipped=False).items():  # as torchvision leaves them
        (raw / folder / "raw" / name).write_bytes(blob)
    by_torchvision, by_numpy = prepared_both_ways(dataset, tmp_path, monkeypatch)
    assert by_torchvision["reader"] == f"torchvision {torchvision.__version__}"
    assert by_numpy["reader"] == "numpy (pipeline/downloads.py)"
    assert {**by_torchvision, "reader": ""} == {**by_numpy, "reader": ""}  # classes, sizes, scaling, splits


def test_cifar10_read_by_torchvision_matches_the_numpy_reader(raw, tmp_path, monkeypatch):
    archive, batches = small_cifar_archive(seed=3)
    raw.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(raw, filter="data")
    # torchvision checks every batch against its published digest: ours, for the small batches
    cifar = torchvision.datasets.CIFAR10
    digest = {name: hashlib.md5((raw / cifar.base_folder / name).read_bytes()).hexdigest() for name in downloads.CIFAR10_FILES}
    monkeypatch.setattr(cifar, "train_list", [[name, digest[name]] for name, _ in cifar.train_list])
    monkeypatch.setattr(cifar, "test_list", [[name, digest[name]] for name, _ in cifar.test_list])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": digest["batches.meta"]})
    by_torchvision, by_numpy = prepared_both_ways("cifar10", tmp_path, monkeypatch)
    assert by_torchvision["classes"] == CIFAR_CLASSES == by_numpy["classes"]
    assert {**by_torchvision, "reader": ""} == {**by_numpy, "reader": ""}
    x_test, y_test = load(tmp_path / "torchvision" / "test.pt")
    np.testing.assert_array_equal(y_test, batches["test_batch"]["labels"])


def test_gzipped_files_that_pass_the_digest_are_extracted_by_torchvision(raw, tmp_path, monkeypatch):
    blobs = idx_files(small_idx_set(seed=6), gzipped=True)
    (raw / "MNIST" / "raw").mkdir(parents=True)
    for name, blob in blobs.items():
        (raw / "MNIST" / "raw" / name).write_bytes(blob)
    mnist = torchvision.datasets.MNIST
    monkeypatch.setattr(mnist, "resources", [(name, hashlib.md5(blobs[name]).hexdigest()) for name, _ in mnist.resources])
    downloads.fetch_idx(downloads.MNIST)  # nothing downloaded: the network is refused
    for name, blob in blobs.items():
        assert (raw / "MNIST" / "raw" / name.removesuffix(".gz")).read_bytes() == gzip.decompress(blob)
    meta = prepare("mnist", CONFIG, tmp_path / "out")
    assert meta["sizes"] == {"train": 180, "val": 20, "test": 30} and meta["classes"][0] == "0"


OFFLINE = {
    "mnist": r"mnist: torchvision\.datasets\.MNIST could not download its files \(Error downloading train-images-idx3-ubyte\.gz: "
             r"Tried https://ossci-datasets\.s3\.amazonaws\.com/mnist/, got: .*\); without network, place "
             r"train-images-idx3-ubyte\.gz, .* \(gzipped or not\) in .*/raw/MNIST/raw/ and run prepare again",
    "fashion_mnist": r"fashion_mnist: torchvision\.datasets\.FashionMNIST could not download its files \(.*\); "
                     r"without network, place .* in .*/raw/FashionMNIST/raw/ and run prepare again",
    "cifar10": r"cifar10: torchvision\.datasets\.CIFAR10 could not download its files \(.*\); without network, place "
               r"cifar-10-python\.tar\.gz \(or its extracted folder cifar-10-batches-py/\) in .*/raw/ and run prepare again",
}


@pytest.mark.parametrize("dataset", sorted(OFFLINE))
def test_offline_prepare_through_torchvision_stops_in_one_line(dataset, raw, tmp_path, monkeypatch, capsys):
    prepare_fails_in_one_line(dataset, OFFLINE[dataset], tmp_path, monkeypatch, capsys)
    assert not raw.exists() or [p for p in raw.rglob("*") if p.is_file()] == []  # torchvision makes its folder; no file in it


def test_files_torchvision_cannot_read_are_named(raw, tmp_path):
    (raw / "MNIST" / "raw").mkdir(parents=True)
    for name, blob in idx_files(small_idx_set(seed=7), gzipped=False).items():
        (raw / "MNIST" / "raw" / name).write_bytes(blob)
    (raw / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"<html>Not Found</html>")
    with pytest.raises(ConfigError, match=r"^mnist: torchvision\.datasets\.MNIST cannot read .*/raw/MNIST/raw/ \(.*\); "
                                          r"place train-images-idx3-ubyte\.gz, .* in .*/raw/MNIST/raw/$"):
        prepare("mnist", CONFIG, tmp_path / "out")
