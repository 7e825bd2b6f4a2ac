"""Stage train@EXPERIMENT: fit one experiment, keep its best checkpoint, track it in MLflow.

    python -m pipeline.train EXPERIMENT

Writes models/EXPERIMENT/{best.ckpt, run.json, config.json} and plots/{learning_curves,validation}/EXPERIMENT.csv. All
of it is written to a staging folder first and moved into place only when training succeeded.
Training checkpoints go to checkpoints/EXPERIMENT/ (pipeline.core.resume): a training that was killed or
requeued by SLURM resumes from there, into the same MLflow run, when the stage runs again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from pipeline import cli, data
from pipeline.core import launch, tracking
from pipeline.params import ROOT, ConfigError, load_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="an experiment name from params.yaml")
    args = parser.parse_args(argv)

    config, experiment = load_experiment(args.experiment)
    launch.check_experiment(experiment)
    data.check_prepared(experiment.dataset)  # fail on missing or corrupt data before any run is created

    from pipeline.core import resume
    from pipeline.params import family_class

    model_cls = family_class(experiment.family)
    decision = resume.Resume.inherited()  # set in processes a launcher or Lightning's DDP started
    if decision is None:  # the process DVC started: resume or start the run, once, before any launch
        tracking.check_reachable()
        decision, note = resume.begin(
            experiment, lambda: tracking.start_run(
                config.tracking_experiment, experiment, model_cls.CHAPTER, config.tracking_sweep
            )
        )
        if note:
            print(note, flush=True)
        decision.export()
    launch.launch(experiment)  # under torchrun or srun, as params say (this process is replaced)

    import lightning as L
    import torch
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from pipeline.core.supervised import NonFiniteLoss
    from pipeline.core.trainer import LearningCurve, build_trainer

    L.seed_everything(experiment.seed, workers=True, verbose=False)
    model = model_cls(
        data=data.DATASETS[experiment.dataset].spec,
        optimizer=experiment.optimizer,
        scheduler=experiment.scheduler,
        **experiment.model,
    )
    datamodule = data.make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed)
    fitted = torch.compile(model) if experiment.trainer.compile else model

    # Under DDP every process runs this script; global rank 0 (known from the launcher's environment
    # before the process group exists) alone writes files and logs to the MLflow run.
    leader = rank_zero_only.rank == 0
    out_dir = ROOT / "models" / experiment.name
    staging = ROOT / "models" / f".{experiment.name}.partial"
    checkpoints = resume.folder(experiment)
    uri = tracking.tracking_uri()
    run_id = decision.run_id
    path = f"experiments.{experiment.name}"
    if leader:
        mlflow_client = tracking.client()
    curve = LearningCurve()
    callbacks = [resume.RandomState()]
    if os.environ.get("SLURM_JOB_ID"):
        requeue = resume.RequeueOnSignal(checkpoints / "requeue.ckpt")
        requeue.install()
        callbacks.append(requeue)
    trainer = build_trainer(experiment, checkpoints, uri, run_id if leader else None, curve, callbacks)
    start = time.perf_counter()
    try:
        trainer.fit(fitted, datamodule=datamodule, ckpt_path=decision.checkpoint, weights_only=True)
    except resume.Requeued as requeued:
        if leader:
            mlflow_client.update_run(run_id, status="SCHEDULED")
        print(f"{experiment.name}: {requeued}", file=sys.stderr, flush=True)
        if leader and requeued.job:  # last: the requeue ends this job
            resume.requeue(requeued.job)
        return 75  # EX_TEMPFAIL: DVC stops here; the requeued job runs the stage again
    except BaseException as error:
        if leader:
            mlflow_client.set_terminated(run_id, "FAILED")
        if isinstance(error, NonFiniteLoss):
            last = resume.newest_checkpoint(checkpoints)
            kept = f"the last good checkpoint is {last.relative_to(ROOT)}" if last else "no epoch finished, no checkpoint"
            raise ConfigError(f"{path}: non-finite {error}; {kept}; MLflow run {run_id} marked FAILED. "
                              f"Lower {path}.optimizer.lr or set {path}.trainer.gradient_clip_val") from None
        raise
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return 0
    mlflow_client.set_tag(run_id, "world_size", str(trainer.world_size))

    summary = {
        "experiment": experiment.name,
        "resumed_from": decision.checkpoint and str(decision.checkpoint.relative_to(ROOT)),
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "checkpoint": experiment.checkpoint,
        "checkpoint_epoch": _checkpoint_epoch(curve.rows, experiment),
        "epochs_trained": trainer.current_epoch,
        "world_size": trainer.world_size,
        "train_seconds": round(seconds, 3),
        **_throughput(model, seconds),
        "parameters": model.num_parameters(),
    }
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(checkpoints / "best.ckpt", staging / "best.ckpt")
    (staging / tracking.RUN_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    (staging / "config.json").write_text(json.dumps(experiment.flat(), indent=2) + "\n")
    mlflow_client.log_artifact(run_id, str(staging / "best.ckpt"), "checkpoint")
    mlflow_client.log_artifact(run_id, str(staging / "config.json"))
    mlflow_client.log_metric(run_id, "train/seconds", seconds)
    mlflow_client.set_tag(run_id, "checkpoint", str(out_dir / "best.ckpt"))

    curve.write(ROOT / "plots" / "learning_curves" / f"{experiment.name}.csv", ROOT / "plots" / "validation" / f"{experiment.name}.csv")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    resume.finish(experiment)
    print(f"{experiment.name}: {trainer.current_epoch} epochs in {seconds:.1f} s, kept epoch {summary['checkpoint_epoch']} "
          f"({experiment.checkpoint}), MLflow run {run_id}")
    return 0


def _throughput(model, seconds: float) -> dict:
    """The work this process's fit did per second (samples, training nodes or environment steps)."""
    amount, unit = model.work_done(model.current_epoch - model.first_epoch)
    return {"throughput": round(amount / seconds, 1), "throughput_unit": f"{unit} per second"}


def _checkpoint_epoch(rows: list[dict], experiment) -> int:
    """The epoch whose weights were kept: the last, or the first reaching the best monitored value."""
    monitor, mode = experiment.early_stopping.monitor, experiment.early_stopping.mode
    if experiment.checkpoint == "last" or not rows:
        return rows[-1]["epoch"] if rows else -1
    pick = min if mode == "min" else max
    return pick(rows, key=lambda row: row[monitor])["epoch"]


if __name__ == "__main__":
    cli.run_and_exit(main)
