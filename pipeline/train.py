"""Stage train@EXPERIMENT: fit one experiment, keep its best checkpoint, track it in MLflow.

    python -m pipeline.train EXPERIMENT

Writes models/EXPERIMENT/{best.ckpt, run.json, config.json} and plots/{learning_curves,validation}/EXPERIMENT.csv. All
of it is written to a staging folder first and moved into place only when training succeeded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from pipeline import cli, data, launch, tracking
from pipeline.params import ROOT, load_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="an experiment name from params.yaml")
    args = parser.parse_args(argv)

    config, experiment = load_experiment(args.experiment)
    path = f"experiments.{experiment.name}"
    launch.check(experiment, f"{path}.launcher")
    experiment.trainer.check_machine(f"{path}.trainer", launcher=experiment.launcher.name)
    for split in data.SPLITS:  # fail on missing or corrupt data before any run is created
        data.load_split(experiment.dataset, split)
    if launch.command(experiment) is not None:
        # The launched processes open the store at once: create it (schema, experiment) first, here.
        tracking.experiment_id(tracking.client(), config.tracking_experiment)
        launch.launch(experiment)  # under torchrun or srun, as params say (this process is replaced)

    import lightning as L
    import torch
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from pipeline.params import family_class
    from pipeline.trainer import LearningCurve, build_trainer

    L.seed_everything(experiment.seed, workers=True, verbose=False)
    model_cls = family_class(experiment.family)
    model = model_cls(
        data=data.DATASETS[experiment.dataset].spec,
        optimizer=experiment.optimizer,
        scheduler=experiment.scheduler,
        **experiment.model,
    )
    datamodule = data.make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed)
    fitted = torch.compile(model) if experiment.trainer.compile else model

    # Under DDP every process runs this script; global rank 0 (known from the launcher's environment
    # before the process group exists) alone stages files and owns the MLflow run.
    leader = rank_zero_only.rank == 0
    out_dir = ROOT / "models" / experiment.name
    staging = ROOT / "models" / f".{experiment.name}.partial"
    uri = tracking.tracking_uri()
    run_id = None
    if leader:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        run_id = tracking.start_run(config.tracking_experiment, experiment, model_cls.CHAPTER)
        mlflow_client = tracking.client()
    curve = LearningCurve()
    trainer = build_trainer(experiment, staging, uri, run_id, curve)
    start = time.perf_counter()
    try:
        trainer.fit(fitted, datamodule=datamodule)
    except BaseException:
        if leader:
            mlflow_client.set_terminated(run_id, "FAILED")
        raise
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return 0
    mlflow_client.set_tag(run_id, "world_size", str(trainer.world_size))

    summary = {
        "experiment": experiment.name,
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "checkpoint": experiment.checkpoint,
        "checkpoint_epoch": _checkpoint_epoch(curve.rows, experiment),
        "epochs_trained": trainer.current_epoch,
        "world_size": trainer.world_size,
        "train_seconds": round(seconds, 3),
        "parameters": model.num_parameters(),
    }
    (staging / tracking.RUN_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    (staging / "config.json").write_text(json.dumps(experiment.flat(), indent=2) + "\n")
    mlflow_client.log_artifact(run_id, str(staging / "best.ckpt"), "checkpoint")
    mlflow_client.log_artifact(run_id, str(staging / "config.json"))
    mlflow_client.log_metric(run_id, "train/seconds", seconds)
    mlflow_client.set_tag(run_id, "checkpoint", str(out_dir / "best.ckpt"))

    curve.write(ROOT / "plots" / "learning_curves" / f"{experiment.name}.csv", ROOT / "plots" / "validation" / f"{experiment.name}.csv")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    print(f"{experiment.name}: {trainer.current_epoch} epochs in {seconds:.1f} s, kept epoch {summary['checkpoint_epoch']} "
          f"({experiment.checkpoint}), MLflow run {run_id}")
    return 0


def _checkpoint_epoch(rows: list[dict], experiment) -> int:
    """The epoch whose weights were kept: the last, or the first reaching the best monitored value."""
    monitor, mode = experiment.early_stopping.monitor, experiment.early_stopping.mode
    if experiment.checkpoint == "last" or not rows:
        return rows[-1]["epoch"] if rows else -1
    pick = min if mode == "min" else max
    return pick(rows, key=lambda row: row[monitor])["epoch"]


if __name__ == "__main__":
    sys.exit(cli.run(main))
