"""The opt-in datasets' raw files: where they come from, fetching them into data/raw/, reading them.

Nothing here runs unless params.yaml's data.download names a dataset (pipeline/prepare.py). The files
are kept in data/raw/ as torchvision and PyTorch Geometric lay them out under a root data/raw, so
what either library downloaded elsewhere, or files fetched by hand on another machine, can be
copied in as they are:

    data/raw/MNIST/raw/          train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
    data/raw/FashionMNIST/raw/     t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (or unzipped)
    data/raw/                    cifar-10-python.tar.gz (or its folder cifar-10-batches-py/)
    data/raw/Planetoid/Cora/raw/ ind.cora.x, .tx, .allx, .y, .ty, .ally, .graph, .test.index

The image datasets go through torchvision.datasets (MNIST, FashionMNIST, CIFAR10: their mirrors,
MD5 checks and parsing) when the optional `vision` extra is installed. torchvision must match the
torch build exactly, and PyPI's Linux torchvision is built against the CUDA torch, so the extra moves
torch to the build it was made for (see the README). Without it, the two formats (IDX, pickled CIFAR
batches) are read by the few lines of numpy below, and tests/pipeline/test_torchvision_datasets.py
checks that both give the same arrays. meta.json names the reader.

Our own fetch downloads a missing file from the first mirror that answers into a temporary name
beside it, checks it against its published MD5 digest, then renames it (pipeline.files.replacing): an
interrupted download leaves nothing that looks complete. Either way, a failure is one line naming
what could not be fetched and where to place it by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import files
from pipeline.base import ROOT, ConfigError

# The standard library's hashlib, pickle, shutil, tarfile, urllib are imported where used: every stage
# imports this module through the dataset registry (pipeline/datasets/), and only prepare with data.download set needs them.

RAW = ROOT / "data" / "raw"  # kept between runs of prepare; read at call time, so tests can point it elsewhere
TIMEOUT = 60  # seconds a mirror may stay silent before it counts as unreachable


@dataclass(frozen=True)
class Remote:
    """A dataset's files on the network: each of `files` (name, MD5 digest or "" where none is
    published) lies under every one of `mirrors` and is kept in data/raw/<folder>/."""

    dataset: str
    folder: str
    mirrors: tuple[str, ...]
    files: tuple[tuple[str, str], ...]
    by_hand: str  # what a user without network places in the folder instead
    torchvision: str = ""  # the torchvision.datasets class that reads (and fetches) it under the root data/raw

    @property
    def directory(self) -> Path:
        return RAW / self.folder


MNIST = Remote(
    "mnist", "MNIST/raw", ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
     ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
     ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
     ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (gzipped or not)",
    "MNIST",
)
FASHION_MNIST = Remote(
    "fashion_mnist", "FashionMNIST/raw", ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
     ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
     ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
     ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
    MNIST.by_hand, "FashionMNIST",
)
CIFAR10 = Remote(
    "cifar10", "", ("https://www.cs.toronto.edu/~kriz/",), (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    "cifar-10-python.tar.gz (or its extracted folder cifar-10-batches-py/)", "CIFAR10",
)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
CORA = Remote(
    "cora", "Planetoid/Cora/raw", ("https://github.com/kimiyoung/planetoid/raw/master/data/",),  # Planetoid.url
    tuple((f"ind.cora.{name}", "") for name in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")),
    "ind.cora.x, ind.cora.tx, ind.cora.allx, ind.cora.y, ind.cora.ty, ind.cora.ally, ind.cora.graph, ind.cora.test.index",
)

MNIST_CLASSES = [str(digit) for digit in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def shown(path: Path) -> str:
    """A path as a user would type it from the repository root."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def torchvision_datasets():
    """torchvision.datasets if the `vision` extra is installed, else None (then the numpy readers below)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return None
    import torchvision.datasets

    return torchvision.datasets


def reader() -> str:
    """What reads the image datasets, for meta.json."""
    if torchvision_datasets() is None:
        return "numpy (pipeline/downloads.py)"
    import torchvision

    return f"torchvision {torchvision.__version__}"


# ---------------------------------------------------------------------------------------------
# Fetching


def fetch_torchvision(remote: Remote) -> None:
    """torchvision's own download (its mirrors, MD5 checks, extraction), skipped when the files are in
    place; its failure becomes the same one line as ours."""
    import urllib.error  # here and below: urllib and http.client load ssl, and most stages never download

    datasets = torchvision_datasets()
    try:
        getattr(datasets, remote.torchvision)(str(RAW), train=True, download=True)
    except (RuntimeError, OSError, ValueError, urllib.error.URLError) as error:
        reason = " ".join(str(error).split())
        raise ConfigError(
            f"{remote.dataset}: torchvision.datasets.{remote.torchvision} could not download its files ({reason}); "
            f"without network, place {remote.by_hand} in {shown(remote.directory)}/ and run prepare again"
        ) from None


def download(remote: Remote, names: list[str]) -> None:
    """Download each of `names` (among remote.files) into its folder, or raise the one-line error."""
    import http.client
    import urllib.error

    digests = dict(remote.files)
    for name in names:
        failures = []
        for mirror in remote.mirrors:
            try:
                _download(mirror + name, remote.directory / name, digests[name])
                break
            except ConfigError:  # the disk is full (files.DiskFull): another mirror would not help
                raise
            except (OSError, ValueError, http.client.HTTPException) as error:  # URLError, timeouts, a cut connection, a wrong digest
                reason = error.reason if type(error) is urllib.error.URLError else error
                failures.append(f"{mirror + name} ({type(error).__name__}: {' '.join(str(reason).split())})")
        else:
            raise ConfigError(
                f"{remote.dataset}: could not download {', '.join(failures)}; without network, place "
                f"{remote.by_hand} in {shown(remote.directory)}/ and run prepare again"
            )


def _download(url: str, path: Path, md5: str) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        # the folder is made here, not before: an offline attempt leaves no empty folders
        with files.replacing(path, size=getattr(response, "length", None)) as out:
            digest = hashlib.md5(usedforsecurity=False)  # an integrity check
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            if md5 and digest.hexdigest() != md5:  # raised inside: the temporary file is deleted, nothing replaced
                raise ValueError(f"MD5 {digest.hexdigest()}, not the published {md5}")


def fetch_idx(remote: Remote) -> None:
    """An MNIST-format dataset: download the files that are missing (unzipped or gzipped counts)."""
    if torchvision_datasets() is not None:
        return fetch_torchvision(remote)
    missing = [name for name, _ in remote.files
               if not (remote.directory / name).exists() and not (remote.directory / name.removesuffix(".gz")).exists()]
    if missing:
        download(remote, missing)


def fetch_cifar10() -> None:
    """CIFAR-10's batch folder; extracted from the archive, which is downloaded only if absent."""
    if torchvision_datasets() is not None:
        return fetch_torchvision(CIFAR10)
    folder = RAW / CIFAR10_FOLDER
    if all((folder / name).exists() for name in CIFAR10_FILES):
        return
    archive_name = CIFAR10.files[0][0]
    if not (RAW / archive_name).exists():
        download(CIFAR10, [archive_name])
    _extract(RAW / archive_name, folder)


def _extract(archive: Path, folder: Path) -> None:
    """The batch files of the archive into `folder`, through a temporary folder beside it."""

    with tempfile.TemporaryDirectory(dir=archive.parent) as staging:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        except (OSError, tarfile.TarError, EOFError) as error:
            if isinstance(error, OSError) and error.errno in files.FULL:
                with tarfile.open(archive) as tar:
                    raise files.DiskFull(folder, sum(member.size for member in tar.getmembers())) from error
            raise ConfigError(f"cifar10: {shown(archive)} is not a readable .tar.gz ({type(error).__name__}); "
                              f"delete it to download it again, or place {CIFAR10.by_hand} in {shown(RAW)}/") from None
        extracted = Path(staging) / CIFAR10_FOLDER
        missing = [name for name in CIFAR10_FILES if not (extracted / name).exists()]
        if missing:
            raise ConfigError(f"cifar10: {shown(archive)} lacks {CIFAR10_FOLDER}/{', '.join(missing)}")
        files.sync_tree(extracted)  # before the renames: no file under its final name may be cut short by a crash
        folder.mkdir(parents=True, exist_ok=True)
        for name in CIFAR10_FILES:
            (extracted / name).replace(folder / name)


def fetch_cora() -> None:
    """Planetoid's raw files; PyTorch Geometric's Planetoid finds them there and only processes them."""
    missing = [name for name, _ in CORA.files if not (CORA.directory / name).exists()]
    if missing:
        download(CORA, missing)


# ---------------------------------------------------------------------------------------------
# Reading: (x, y) of the official training and test sets as uint8 images (N, C, H, W) and int64
# labels (N,), and facts for meta.json.


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format, gzipped or not): the magic number
    0x0000 0x08 D (unsigned bytes, D dimensions), D big-endian uint32 sizes, then the values, row-major."""

    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 3:
        raise ValueError("not an IDX file of unsigned bytes")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", data[3], offset=4))
    return np.frombuffer(data, np.uint8, int(np.prod(shape)), offset=4 + 4 * data[3]).reshape(shape)


def read_idx_dataset(remote: Remote, classes: list[str]) -> tuple[dict, dict]:
    """train-* and t10k-* images (N, 1, 28, 28) and labels; each file unzipped if torchvision left it so."""
    if torchvision_datasets() is not None:
        return read_torchvision(remote, classes)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        arrays = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            path = remote.directory / f"{prefix}-{kind}"
            path = path if path.exists() else path.with_name(path.name + ".gz")
            try:
                arrays.append(read_idx(path))
            except (OSError, ValueError, EOFError) as error:
                raise ConfigError(f"{remote.dataset}: {shown(path)}: unreadable ({' '.join(str(error).split())}); "
                                  f"place {remote.by_hand} in {shown(remote.directory)}/") from None
        images, labels = arrays
        if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise ConfigError(f"{remote.dataset}: {shown(remote.directory)}/{prefix}-*: images {images.shape} and labels "
                              f"{labels.shape}, not (N, 28, 28) and (N,)")
        parts[split] = images[:, None], labels.astype(np.int64)
    return parts, {"classes": classes, "source": remote.mirrors[0], "raw": shown(remote.directory), "reader": reader()}


def read_cifar10() -> tuple[dict, dict]:
    """The five training batches and the test batch: each a pickled dict whose 'data' is (N, 3072)
    uint8, a 32x32 image's red, then green, then blue plane, and 'labels' N ints; batches.meta names
    the classes."""

    if torchvision_datasets() is not None:
        return read_torchvision(CIFAR10)
    folder = RAW / CIFAR10_FOLDER

    def load(name: str, read):
        try:
            with open(folder / name, "rb") as f:
                return read(pickle.load(f, encoding="latin1"))  # the batches were pickled by Python 2
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"cifar10: {shown(folder / name)}: unreadable ({type(error).__name__}); "
                              f"place {CIFAR10.by_hand} in {shown(RAW)}/") from None

    def batch(blob: dict) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(blob["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(blob["labels"], dtype=np.int64)

    def joined(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        batches = [load(name, batch) for name in names]
        return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])

    parts = {"train": joined(CIFAR10_FILES[:5]), "test": joined(("test_batch",))}
    classes = load("batches.meta", lambda blob: [str(name) for name in blob["label_names"]])
    return parts, {"classes": classes, "source": CIFAR10.mirrors[0] + CIFAR10.files[0][0], "raw": shown(folder), "reader": reader()}


def read_torchvision(remote: Remote, classes: list[str] | None = None) -> tuple[dict, dict]:
    """The same arrays and facts through torchvision.datasets.<remote.torchvision>: its `data` (MNIST's a
    uint8 tensor (N, 28, 28), CIFAR10's a uint8 array (N, 32, 32, 3)), `targets`, and `classes` unless
    ours are given (torchvision names MNIST's "0 - zero", ...)."""
    import torch

    dataset = getattr(torchvision_datasets(), remote.torchvision)
    folder = remote.directory if remote.folder else RAW / CIFAR10_FOLDER  # CIFAR-10's batches are one folder down
    parts = {}
    for split in ("train", "test"):
        try:
            loaded = dataset(str(RAW), train=split == "train", download=False)
        except (RuntimeError, OSError, ValueError, EOFError, AssertionError, KeyError) as error:  # asserts: IDX headers
            reason = " ".join(f"{type(error).__name__}: {error}".split()).removesuffix(":")
            raise ConfigError(f"{remote.dataset}: torchvision.datasets.{remote.torchvision} cannot read {shown(folder)}/ "
                              f"({reason}); place {remote.by_hand} in "
                              f"{shown(remote.directory)}/") from None
        images = loaded.data.numpy() if isinstance(loaded.data, torch.Tensor) else np.asarray(loaded.data)
        images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # (N, C, H, W)
        parts[split] = np.ascontiguousarray(images, dtype=np.uint8), np.asarray(loaded.targets, dtype=np.int64)
    source = remote.mirrors[0] + (remote.files[0][0] if not remote.folder else "")
    facts = {"classes": classes or [str(name) for name in loaded.classes], "source": source, "raw": shown(folder), "reader": reader()}
    return parts, facts
