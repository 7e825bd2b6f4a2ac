"""Stage scorer: the classifier whose features score generated images (pipeline.core.scoring).

    python -m pipeline.scorer

For every labelled image dataset prepare makes (the digits; an opt-in one such as MNIST only when
params.yaml's data.download names it, as prepare does), trains the spine's CNN (modules/cnn.py) with a fixed
configuration, seed and schedule, independent of params.yaml's experiments so that tuning an
experiment never moves the yardstick, and writes scorers/<dataset>.pt (weights) and
scorers/<dataset>.json (its test accuracy). Its penultimate layer gives FID's and KID's features,
its predicted class the samples' class coverage. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
import json

from pipeline import cli, data, files, stagestats
from pipeline.core.scoring import ARCHITECTURE, BATCH_SIZE, EPOCHS, SCORERS, SEED, build_network
from pipeline.params import load


def image_datasets(download: list[str]) -> list[str]:
    """The labelled image datasets prepare makes: the embedded ones, and those of `download` (data.download)."""
    return sorted(name for name, d in data.DATASETS.items()
                  if d.spec.task == "multiclass" and len(d.spec.input_shape) == 3 and (not d.download or name in download))


def train(dataset: str):
    """The scorer network, trained on the dataset's training split; returns (network, test accuracy)."""
    import lightning as L  # here and in main: a params or data error is reported before they load
    import torch
    from torchmetrics.classification import Accuracy

    from pipeline.core.trainer import EpochProgressBar
    from pipeline.datamodules import make_datamodule

    L.seed_everything(SEED, workers=True, verbose=False)
    spec = data.DATASETS[dataset].spec
    network = build_network(spec)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=EPOCHS, deterministic=True, logger=False, enable_checkpointing=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[EpochProgressBar()],
    )
    trainer.fit(network, datamodule=make_datamodule(dataset, BATCH_SIZE, SEED))
    network.eval()
    x, y = data.load_split(dataset, "test")
    with torch.no_grad():
        accuracy = Accuracy(task="multiclass", num_classes=spec.num_classes)(network(x), y)
    return network, float(accuracy)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m pipeline.scorer", description=__doc__.splitlines()[0]).parse_args(argv)
    config = load(family_checks=False)
    cli.set_threads(config.threads)
    datasets = image_datasets(config.data.download)
    for dataset in datasets:
        data.load_split(dataset, "train")  # a clear error if prepare has not run
    import torch

    stagestats.mark("work")
    out = SCORERS
    written = {}  # every scorer is trained before scorers/ changes: a failure leaves the old ones
    for index, dataset in enumerate(datasets, 1):
        network, accuracy = train(dataset)
        weights = io.BytesIO()
        torch.save(network.state_dict(), weights)
        facts = {"dataset": dataset, "test/accuracy": round(accuracy, 6), "seed": SEED, "epochs": EPOCHS,
                 "features": int(torch.tensor(network.feature_shape).prod()), **ARCHITECTURE}
        written[f"{dataset}.pt"] = weights.getvalue()
        written[f"{dataset}.json"] = (json.dumps(facts, indent=2) + "\n").encode()
        print(f"[{index}/{len(datasets)}] scorer for {dataset}: test accuracy {accuracy:.4f}", flush=True)
    # the project may replace what lies inside scorers/, not the folder itself (pipeline.files): file by file, each whole
    for stale in sorted(out.glob("*")) if out.is_dir() else ():
        if stale.name not in written:
            files.remove(stale)
    for name, content in written.items():
        files.write_bytes(out / name, content)
    return 0


if __name__ == "__main__":
    cli.run_and_exit(main)
