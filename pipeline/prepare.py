"""Stage prepare: split and standardize every embedded dataset the experiments use.

    python -m pipeline.prepare

Datasets from the network (MNIST, Fashion-MNIST, CIFAR-10, Cora) are prepared only when params.yaml's
data.download names them; their files are fetched into data/raw/ first, before anything is prepared,
so a file that cannot be fetched stops the stage with nothing written. Writes
data/prepared/<dataset>/{train,val,test}.pt and meta.json, each dataset into a staging folder first,
moved into place when complete.
"""

from __future__ import annotations

import argparse

from pipeline import cli, files, stagestats
from pipeline.data import DATASETS, PREPARED, prepare
from pipeline.params import load


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m pipeline.prepare", description=__doc__.splitlines()[0]).parse_args(argv)
    # the whole file, so a typo stops the pipeline before it writes anything; without the checks against each
    # family class, which import torch, Lightning and torchmetrics (train@EXPERIMENT makes them)
    config = load(family_checks=False)
    stagestats.mark("work")  # the datasets' own imports (scikit-learn, networkx, gymnasium) come as they are made
    datasets = sorted(name for name, entry in DATASETS.items() if not entry.download or name in config.data.download)
    for dataset in datasets:
        if DATASETS[dataset].download:
            DATASETS[dataset].fetch()
    for index, dataset in enumerate(datasets, 1):
        staging = PREPARED / f".{dataset}.partial"
        files.remove(staging)
        try:
            meta = prepare(dataset, config.data, staging)
            files.replace_dir(staging, PREPARED / dataset)
        finally:
            files.remove(staging)  # what a failure (a full disk) left: nothing that takes space or looks complete
        print(f"[{index}/{len(datasets)}] {dataset}: " + ", ".join(f"{k} {v}" for k, v in meta["sizes"].items()))
    return 0


if __name__ == "__main__":
    cli.run_and_exit(main)
