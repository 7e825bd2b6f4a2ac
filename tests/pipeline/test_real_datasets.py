"""The opt-in datasets from the network: small files in each dataset's real on-disk format (IDX,
pickled CIFAR batches in their .tar.gz, Planetoid's pickles) in a temporary data/raw/, read by the
real loaders through `prepare`; downloads served from memory or refused, never the network.

The image datasets here go through our numpy readers and fetch, as without the `vision` extra;
tests/pipeline/test_torchvision_datasets.py runs them through torchvision and compares."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import re
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from pipeline import cli, data, datamodules, downloads, files
from pipeline.config import DataConfig
from pipeline.params import ConfigError
from pipeline.prepare import prepare

CONFIG = DataConfig(split_seed=0, val_fraction=0.1, test_fraction=0.2)
IMAGES = ("mnist", "fashion_mnist", "cifar10")


@pytest.fixture(autouse=True)
def raw(tmp_path, monkeypatch):
    """data/raw/ in a temporary folder, every download refused as if the machine had no network, and
    the numpy readers even where torchvision is installed."""
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(downloads, "RAW", tmp_path / "raw")
    monkeypatch.setattr(downloads, "torchvision_datasets", lambda: None)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return tmp_path / "raw"


def serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """A network that answers the URLs in `files` and refuses the rest; returns the URLs asked for."""
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        if url not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
        return io.BytesIO(files[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def with_digests(monkeypatch, name: str, blobs: dict[str, bytes]) -> downloads.Remote:
    """The Remote `downloads.<name>` with the MD5 digests of our small files in place of the published ones."""
    remote = getattr(downloads, name)
    remote = dataclasses.replace(remote, files=tuple((file, hashlib.md5(blobs[file]).hexdigest()) for file, _ in remote.files))
    monkeypatch.setattr(downloads, name, remote)
    return remote


def load(path):
    blob = torch.load(path, weights_only=True)
    return blob["x"].numpy(), blob["y"].numpy()


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files


def idx(array: np.ndarray) -> bytes:
    """LeCun's IDX format: 0x0000, type 0x08 (unsigned byte), the number of dimensions, each size as a
    big-endian uint32, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def small_idx_set(seed: int) -> dict[str, np.ndarray]:
    """200 training images (20 a class) and 30 test images, random pixels, 28x28, keyed by file stem."""
    rng = np.random.default_rng(seed)
    y_train, y_test = np.repeat(np.arange(10), 20), np.arange(30) % 10
    rng.shuffle(y_train)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(200, 28, 28)),
        "train-labels-idx1-ubyte": y_train,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(30, 28, 28)),
        "t10k-labels-idx1-ubyte": y_test,
    }


def idx_files(arrays: dict[str, np.ndarray], gzipped: bool) -> dict[str, bytes]:
    return {f"{stem}.gz" if gzipped else stem: gzip.compress(idx(a)) if gzipped else idx(a) for stem, a in arrays.items()}


@pytest.mark.parametrize("gzipped", [True, False], ids=["as downloaded", "unzipped by torchvision"])
@pytest.mark.parametrize(("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_files_placed_by_hand_are_read_and_split(dataset, folder, gzipped, raw, tmp_path):
    arrays = small_idx_set(seed=1)
    (raw / folder / "raw").mkdir(parents=True)
    for name, blob in idx_files(arrays, gzipped).items():
        (raw / folder / "raw" / name).write_bytes(blob)

    meta = prepare(dataset, CONFIG, tmp_path / "out")
    assert meta["sizes"] == {"train": 180, "val": 20, "test": 30}
    assert "test: the official test set; val: 0.1 of the official training set, stratified, seed 0" in meta["splits"]
    assert meta["classes"][0] == ("0" if dataset == "mnist" else "T-shirt/top")
    assert meta["reader"] == "numpy (pipeline/downloads.py)"
    x_train, _ = load(tmp_path / "out" / "train.pt")
    x_val, y_val = load(tmp_path / "out" / "val.pt")
    x_test, y_test = load(tmp_path / "out" / "test.pt")
    assert x_train.shape == (180, 1, 28, 28) and x_test.shape == (30, 1, 28, 28)
    assert np.bincount(y_val, minlength=10).tolist() == [2] * 10  # stratified
    # the test split is the official test set, in order, scaled with one mean and std
    mean, std = unscaling(x_test, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    # train and val partition the official training set; the mean and std are the train split's alone
    train_pixels = np.rint(x_train * std + mean).reshape(180, -1)
    official = arrays["train-images-idx3-ubyte"].reshape(200, -1)
    assert rows(np.concatenate([train_pixels, np.rint(x_val * std + mean).reshape(20, -1)])) == rows(official)
    assert mean == pytest.approx(train_pixels.mean(), rel=1e-5) and std == pytest.approx(train_pixels.std(), rel=1e-5)


def rows(pixels: np.ndarray) -> list[tuple]:
    return sorted(map(tuple, pixels.astype(int).tolist()))


def unscaling(x: np.ndarray, pixels: np.ndarray) -> tuple[float, float]:
    """The (mean, std) with x = (pixels - mean) / std, checked on every value."""
    pixels = pixels.reshape(x.shape).astype(np.float64)
    std = (pixels.ravel()[1] - pixels.ravel()[0]) / (x.ravel()[1] - x.ravel()[0])
    mean = pixels.ravel()[0] - x.ravel()[0] * std
    np.testing.assert_allclose(x * std + mean, pixels, atol=1e-3)
    return mean, std


def test_the_val_split_follows_the_split_seed(raw, tmp_path):
    (raw / "MNIST" / "raw").mkdir(parents=True)
    for name, blob in idx_files(small_idx_set(seed=2), gzipped=True).items():
        (raw / "MNIST" / "raw" / name).write_bytes(blob)
    first, _ = data.DATASETS["mnist"].make_splits(CONFIG)
    again, _ = data.DATASETS["mnist"].make_splits(CONFIG)
    other, _ = data.DATASETS["mnist"].make_splits(dataclasses.replace(CONFIG, split_seed=1))
    assert np.array_equal(first["val"][0], again["val"][0])
    assert not np.array_equal(first["val"][0], other["val"][0])
    assert np.array_equal(first["test"][0], other["test"][0])  # the official test set whatever the seed


def test_idx_files_are_downloaded_from_the_next_mirror_and_checked(raw, tmp_path, monkeypatch):
    blobs = idx_files(small_idx_set(seed=3), gzipped=True)
    remote = with_digests(monkeypatch, "MNIST", blobs)
    asked = serve(monkeypatch, {remote.mirrors[1] + name: blob for name, blob in blobs.items()})  # the first mirror answers 404
    downloads.fetch_idx(remote)
    assert asked == [mirror + name for name in blobs for mirror in remote.mirrors]
    asked.clear()
    meta = prepare("mnist", CONFIG, tmp_path / "out")  # the registry's MNIST: files present, read as they are
    assert meta["sizes"]["test"] == 30 and asked == []
    assert sorted(p.name for p in (raw / "MNIST" / "raw").iterdir()) == sorted(blobs)  # no .partial left


def test_a_download_with_the_wrong_digest_is_refused_and_not_kept(raw, monkeypatch):
    blobs = idx_files(small_idx_set(seed=3), gzipped=True)
    remote = downloads.FASHION_MNIST  # the published digests: our small files do not match them
    serve(monkeypatch, {remote.mirrors[0] + name: blob for name, blob in blobs.items()})
    with pytest.raises(ConfigError, match=r"^fashion_mnist: could not download http://fashion-mnist\.s3-website\.eu-central-1\."
                                          r"amazonaws\.com/train-images-idx3-ubyte\.gz \(ValueError: MD5 [0-9a-f]{32}, not the "
                                          r"published 8d4fb7e6c68d591d4c3dfef9ec88bf0d\); without network, place "):
        downloads.fetch_idx(remote)
    assert list((raw / "FashionMNIST" / "raw").iterdir()) == []  # no .partial left


def test_a_file_in_another_format_is_named(raw, tmp_path):
    (raw / "MNIST" / "raw").mkdir(parents=True)
    for name, blob in idx_files(small_idx_set(seed=4), gzipped=True).items():
        (raw / "MNIST" / "raw" / name).write_bytes(blob)
    (raw / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"<html>Not Found</html>"))
    with pytest.raises(ConfigError, match=r"^mnist: .*/MNIST/raw/t10k-labels-idx1-ubyte\.gz: unreadable \(not an IDX file "
                                          r"of unsigned bytes\); place train-images-idx3-ubyte\.gz, "):
        prepare("mnist", CONFIG, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# CIFAR-10: pickled batches in cifar-10-python.tar.gz


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def small_cifar_archive(seed: int) -> tuple[bytes, dict[str, dict]]:
    """cifar-10-python.tar.gz with five training batches of 40 images (4 a class) and a test batch of 20:
    each a dict pickled with protocol 2 (as Python 2 wrote them), 'data' (N, 3072) uint8 (the red, green
    and blue planes of a 32x32 image), 'labels' a list of ints; batches.meta names the classes."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name, n in [*((f"data_batch_{i}", 40) for i in range(1, 6)), ("test_batch", 20)]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        batches[name] = {"batch_label": f"{name} of 6", "labels": labels.tolist(), "filenames": [f"{i}.png" for i in range(n)],
                         "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}
    batches["batches.meta"] = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": 40, "num_vis": 3072}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, blob in batches.items():
            content = pickle.dumps(blob, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue(), batches


def check_cifar(batches: dict, out) -> None:
    x_test, y_test = load(out / "test.pt")
    x_train, _ = load(out / "train.pt")
    assert x_train.shape == (180, 3, 32, 32) and x_test.shape == (20, 3, 32, 32)
    unscaling(x_test, batches["test_batch"]["data"].reshape(20, 3, 32, 32))  # red, green, blue planes: channels first
    np.testing.assert_array_equal(y_test, batches["test_batch"]["labels"])
    assert np.bincount(load(out / "val.pt")[1], minlength=10).tolist() == [2] * 10


def test_cifar10_archive_placed_by_hand_is_extracted_and_read(raw, tmp_path):
    archive, batches = small_cifar_archive(seed=0)
    raw.mkdir()
    (raw / "cifar-10-python.tar.gz").write_bytes(archive)
    meta = prepare("cifar10", CONFIG, tmp_path / "out")
    assert meta["sizes"] == {"train": 180, "val": 20, "test": 20} and meta["classes"] == CIFAR_CLASSES
    assert sorted(p.name for p in (raw / "cifar-10-batches-py").iterdir()) == sorted(downloads.CIFAR10_FILES)
    assert sorted(p.name for p in raw.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no staging left
    check_cifar(batches, tmp_path / "out")


def test_cifar10_batch_folder_placed_by_hand_is_read(raw, tmp_path):
    archive, batches = small_cifar_archive(seed=1)
    raw.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(raw, filter="data")
    prepare("cifar10", CONFIG, tmp_path / "out")
    assert not (raw / "cifar-10-python.tar.gz").exists()  # nothing downloaded (the network is refused)
    check_cifar(batches, tmp_path / "out")


def test_cifar10_archive_is_downloaded_checked_and_extracted(raw, tmp_path, monkeypatch):
    archive, batches = small_cifar_archive(seed=2)
    remote = with_digests(monkeypatch, "CIFAR10", {"cifar-10-python.tar.gz": archive})
    asked = serve(monkeypatch, {"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz": archive})
    prepare("cifar10", CONFIG, tmp_path / "out")
    assert asked == [remote.mirrors[0] + "cifar-10-python.tar.gz"]
    check_cifar(batches, tmp_path / "out")


def test_a_cifar10_archive_that_is_not_one_is_named(raw, tmp_path):
    raw.mkdir()
    (raw / "cifar-10-python.tar.gz").write_bytes(b"<html>captive portal</html>")
    with pytest.raises(ConfigError, match=r"^cifar10: .*/cifar-10-python\.tar\.gz is not a readable \.tar\.gz \(ReadError\); "
                                          r"delete it to download it again, or place "):
        prepare("cifar10", CONFIG, tmp_path / "out")
    assert sorted(p.name for p in raw.iterdir()) == ["cifar-10-python.tar.gz"]


# ---------------------------------------------------------------------------------------------
# Cora: Planetoid's raw files, read by PyTorch Geometric's Planetoid


def feature_of(node: int, features: int) -> np.ndarray:
    """A node's bag of words, recognisable: words node % F and (7 node) % F."""
    row = np.zeros(features, dtype=np.float32)
    row[[node % features, 7 * node % features]] = 1.0
    return row


def write_planetoid(folder, n_train=14, n_other=516, n_test=30, features=1433, classes=7, seed=0):
    """ind.cora.*: x/allx/tx scipy CSR features of the labelled, all training-side and test nodes; y/ally/ty
    their one-hot labels; graph a dict of adjacency lists; test.index the test nodes' ids, one a line,
    unsorted, in the order of tx's rows. Planetoid's public split: the first len(y) nodes train, the
    next 500 validate, the test.index nodes test."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    n_all = n_train + n_other
    n = n_all + n_test
    labels = rng.integers(0, classes, size=n)
    test_index = rng.permutation(np.arange(n_all, n))
    one_hot = np.eye(classes)[labels]
    x_all = np.stack([feature_of(node, features) for node in range(n)])
    files = {
        "x": scipy.sparse.csr_matrix(x_all[:n_train]), "allx": scipy.sparse.csr_matrix(x_all[:n_all]),
        "tx": scipy.sparse.csr_matrix(x_all[test_index]),
        "y": one_hot[:n_train], "ally": one_hot[:n_all], "ty": one_hot[test_index],
        "graph": {node: [int((node + 1) % n), int((node - 1) % n)] for node in range(n)},  # a ring
    }
    folder.mkdir(parents=True)
    for name, blob in files.items():
        (folder / f"ind.cora.{name}").write_bytes(pickle.dumps(blob, protocol=2))
    (folder / "ind.cora.test.index").write_text("".join(f"{node}\n" for node in test_index))
    return labels, x_all, test_index


def test_planetoid_raw_files_placed_by_hand_are_read_with_the_public_split(raw, tmp_path):
    labels, x_all, test_index = write_planetoid(raw / "Planetoid" / "Cora" / "raw")
    meta = prepare("cora", CONFIG, tmp_path / "out")
    graph = torch.load(tmp_path / "out" / data.GRAPH_FILE, weights_only=True)
    assert meta["nodes"] == 560 and meta["edges"] == 560  # the ring, each edge once
    np.testing.assert_array_equal(graph["x"].numpy(), x_all)  # each test node's row of tx placed at its id
    np.testing.assert_array_equal(graph["y"].numpy(), labels)
    assert np.flatnonzero(graph["train_mask"].numpy()).tolist() == list(range(14))
    assert np.flatnonzero(graph["val_mask"].numpy()).tolist() == list(range(14, 514))
    assert np.flatnonzero(graph["test_mask"].numpy()).tolist() == sorted(test_index.tolist())


def test_planetoid_raw_files_are_downloaded_when_missing(raw, tmp_path, monkeypatch):
    staged = tmp_path / "staged"
    write_planetoid(staged)
    files = {downloads.CORA.mirrors[0] + p.name: p.read_bytes() for p in staged.iterdir()}
    (raw / "Planetoid" / "Cora" / "raw").mkdir(parents=True)
    (raw / "Planetoid" / "Cora" / "raw" / "ind.cora.x").write_bytes((staged / "ind.cora.x").read_bytes())
    asked = serve(monkeypatch, files)
    meta = prepare("cora", CONFIG, tmp_path / "out")
    assert sorted(asked) == sorted(url for url in files if not url.endswith("ind.cora.x"))  # the missing ones only
    assert meta["sizes"]["train"] == 14


# ---------------------------------------------------------------------------------------------
# Without network: the prepare stage stops in one line, before it writes anything


OFFLINE = {
    "mnist": r"mnist: could not download https://ossci-datasets\.s3\.amazonaws\.com/mnist/train-images-idx3-ubyte\.gz "
             r"\(URLError: \[Errno -3\] Temporary failure in name resolution\), http://yann\.lecun\.com/exdb/mnist/"
             r"train-images-idx3-ubyte\.gz \(URLError: .*\); without network, place train-images-idx3-ubyte\.gz, "
             r"train-labels-idx1-ubyte\.gz, t10k-images-idx3-ubyte\.gz, t10k-labels-idx1-ubyte\.gz \(gzipped or not\) "
             r"in .*/raw/MNIST/raw/ and run prepare again",
    "fashion_mnist": r"fashion_mnist: could not download http://fashion-mnist\..*/train-images-idx3-ubyte\.gz \(URLError: .*\); "
                     r"without network, place train-images-idx3-ubyte\.gz, .* in .*/raw/FashionMNIST/raw/ and run prepare again",
    "cifar10": r"cifar10: could not download https://www\.cs\.toronto\.edu/~kriz/cifar-10-python\.tar\.gz \(URLError: .*\); "
               r"without network, place cifar-10-python\.tar\.gz \(or its extracted folder cifar-10-batches-py/\) in .*/raw/ "
               r"and run prepare again",
    "cora": r"cora: could not download https://github\.com/kimiyoung/planetoid/raw/master/data/ind\.cora\.x \(URLError: .*\); "
            r"without network, place ind\.cora\.x, ind\.cora\.tx, .*, ind\.cora\.test\.index in .*/raw/Planetoid/Cora/raw/ "
            r"and run prepare again",
}


def prepare_fails_in_one_line(dataset: str, expected: str, tmp_path, monkeypatch, capsys) -> None:
    """The prepare stage with data.download: [dataset] exits 2 with the one line `expected` (a regex),
    having prepared nothing."""
    from pipeline import prepare as stage

    config = stage.load(family_checks=False)
    monkeypatch.setattr(stage, "load", lambda **_: dataclasses.replace(config, data=dataclasses.replace(config.data, download=[dataset])))
    monkeypatch.setattr(stage, "PREPARED", tmp_path / "prepared")
    assert cli.run(stage.main, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.fullmatch(f"error: {expected}\n", err), err
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("dataset", sorted(OFFLINE))
def test_offline_prepare_stops_in_one_line_with_nothing_written(dataset, raw, tmp_path, monkeypatch, capsys):
    prepare_fails_in_one_line(dataset, OFFLINE[dataset], tmp_path, monkeypatch, capsys)
    assert not raw.exists()  # no partial download, not even an empty folder


def test_the_default_pipeline_fetches_nothing(tmp_path, monkeypatch):
    from pipeline import prepare as stage

    fetched = []
    for name, entry in data.DATASETS.items():
        if entry.download:
            monkeypatch.setitem(data.DATASETS, name, dataclasses.replace(entry, fetch=lambda name=name: fetched.append(name)))
    prepared = tmp_path / "data" / "prepared"  # a stage writes only under the project's own folders
    prepared.mkdir(parents=True)
    monkeypatch.setattr(files, "ROOT", tmp_path)
    monkeypatch.setattr(stage, "PREPARED", prepared)
    monkeypatch.setattr(stage, "prepare", lambda dataset, config, out_dir: out_dir.mkdir() or {"sizes": {}})
    assert stage.load(family_checks=False).data.download == []
    stage.main([])
    assert fetched == [] and not {"mnist", "fashion_mnist", "cifar10", "cora"} & {p.name for p in prepared.iterdir()}


# ---------------------------------------------------------------------------------------------
# params.yaml: an experiment on each image dataset


def with_download(raw_params: dict, tmp_path, dataset: str):
    """The params file with data.download: [dataset], loaded."""
    import yaml

    from pipeline import params

    raw_params["data"]["download"] = [dataset]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params, sort_keys=False))
    return params.load(path)


@pytest.mark.parametrize("dataset", IMAGES)
def test_an_experiment_selects_an_image_dataset_once_it_is_opted_in(dataset, tmp_path):
    import yaml

    from pipeline import params

    raw_params = yaml.safe_load(params.PARAMS_FILE.read_text())
    raw_params["experiments"]["cnn_digits"]["dataset"] = dataset
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params, sort_keys=False))
    with pytest.raises(ConfigError, match=rf"^experiments\.cnn_digits\.dataset: '{dataset}' is downloaded from the network; "
                                          rf"opt in with data\.download: \[{dataset}\]$"):
        params.load(path)
    assert with_download(raw_params, tmp_path, dataset).experiments["cnn_digits"].dataset == dataset  # the cnn's checks pass


def test_the_readmes_example_is_a_valid_config(tmp_path):
    """The YAML block of the README's "Real datasets" section, merged into the real params.yaml."""
    import yaml

    from pipeline import params

    section = params.ROOT.joinpath("README.md").read_text().split("## Real datasets (opt-in)")[1].split("\n## ")[0]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    raw_params = yaml.safe_load(params.PARAMS_FILE.read_text())
    raw_params["experiments"].update(example["experiments"])
    config = with_download(raw_params, tmp_path, *example["data"]["download"])
    assert config.experiments["cnn_mnist"].dataset == "mnist"


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_the_cnn_trains_on_a_prepared_image_dataset(dataset, raw, tmp_path, monkeypatch):
    """From the raw files through prepare, the DataModule and the cnn family: a few batches train."""
    import yaml

    from pipeline import params
    from pipeline.params import family_class

    from conftest import quiet_trainer

    if dataset == "mnist":
        (raw / "MNIST" / "raw").mkdir(parents=True)
        for name, blob in idx_files(small_idx_set(seed=5), gzipped=True).items():
            (raw / "MNIST" / "raw" / name).write_bytes(blob)
    else:
        raw.mkdir()
        (raw / "cifar-10-python.tar.gz").write_bytes(small_cifar_archive(seed=5)[0])
    monkeypatch.setattr(data, "PREPARED", tmp_path / "prepared")
    prepare(dataset, CONFIG, tmp_path / "prepared" / dataset)
    raw_params = yaml.safe_load(params.PARAMS_FILE.read_text())
    raw_params["experiments"]["cnn_digits"]["dataset"] = dataset
    experiment = with_download(raw_params, tmp_path, dataset).experiments["cnn_digits"]
    model = family_class("cnn")(data=data.DATASETS[dataset].spec, optimizer=experiment.optimizer,
                                scheduler=experiment.scheduler, **experiment.model)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=datamodules.make_datamodule(dataset, 32, seed=0))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["val/loss"])
