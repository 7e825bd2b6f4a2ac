"""Stage train@EXPERIMENT: fit one experiment, keep its best checkpoint, track it in MLflow.

    python -m pipeline.train EXPERIMENT    (under DVC: python -m pipeline.train, the experiment from DVC_STAGE)

Writes models/EXPERIMENT/{best.ckpt, config.json} and plots/{learning_curves,validation}/EXPERIMENT.csv. All
of it is written to a staging folder first and moved into place only when training succeeded. models/EXPERIMENT
holds only what params, data and code determine (two trainings write the same bytes); the run's summary (MLflow
run id, seconds, throughput, registered version) goes to runs/EXPERIMENT.json, which no stage depends on.
The model is logged to the MLflow run (runs:/RUN_ID/model) and registered as a version of the registered
model EXPERIMENT (pipeline.core.served).
Training checkpoints go to checkpoints/EXPERIMENT/ (pipeline.core.resume): a training that was killed or
requeued by SLURM resumes from there, into the same MLflow run, when the stage runs again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pipeline import cli, data, files
from pipeline.core import launch, tracking
from pipeline.params import ROOT, ConfigError, load_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.splitlines()[0])
    cli.experiment_argument(parser, "train")
    args = parser.parse_args(argv)

    config, experiment = load_experiment(cli.experiment_name(args.experiment, "train"))
    cli.set_threads(experiment.trainer.threads)
    launch.check_experiment(experiment)
    data.check_prepared(experiment.dataset)  # fail on missing or corrupt data before any run is created

    # Imported here and below, after the checks: a user's mistake is reported before torch, Lightning
    # and MLflow load.
    from pipeline.core import resume
    from pipeline.params import family_class

    model_cls = family_class(experiment.family)
    stop = resume.StopOnSignal(resume.folder(experiment), slurm=bool(os.environ.get("SLURM_JOB_ID")))
    stop.install()  # from here on, SIGTERM and SIGINT stop the stage with a line and a non-zero status
    try:
        check_model_size(experiment, model_cls)
        return _train(config, experiment, model_cls, stop)
    except resume.Interrupted as stopped:
        print(f"{experiment.name}: {stopped}", file=sys.stderr, flush=True)
        return 128 + stopped.signum


def _train(config, experiment, model_cls, stop) -> int:
    from pipeline.core import resume

    resume.watch_parent(experiment)  # first: its environment variable is checked before any run exists
    decision = resume.Resume.inherited()  # set in processes a launcher or Lightning's DDP started
    if decision is None:  # the process DVC started: resume or start the run, once, before any launch
        tracking.check_reachable()
        resume.hold_lock(experiment)
        decision, note = resume.begin(
            experiment,
            start_run=lambda token: tracking.start_run(
                config.tracking_experiment, experiment, model_cls.CHAPTER, config.tracking_sweep, {resume.TOKEN_TAG: token}
            ),
            find_run=lambda token: tracking.find_run(config.tracking_experiment, resume.TOKEN_TAG, token),
        )
        if note:
            print(note, flush=True)
        decision.export()
    launch.launch(experiment)  # under torchrun or srun, as params say (this process is replaced)

    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    # Under DDP every process runs this script; global rank 0 (known from the launcher's environment
    # before the process group exists) alone writes files and logs to the MLflow run.
    leader = rank_zero_only.rank == 0
    run_id = decision.run_id
    try:
        return _fit(experiment, model_cls, decision, stop, leader, config.tracking_system_metrics)
    except resume.Requeued as requeued:
        if leader:
            tracking.client().update_run(run_id, status="SCHEDULED")
        print(f"{experiment.name}: {requeued}", file=sys.stderr, flush=True)
        if leader and requeued.job:  # last: the requeue ends this job
            resume.requeue(requeued.job)
        return 75  # EX_TEMPFAIL: DVC stops here; the requeued job runs the stage again
    except BaseException as error:
        from pipeline.core.family import NonFiniteLoss

        # Whatever stopped the training, its run is not left RUNNING: KILLED for a signal (resumable), FAILED
        # otherwise; a failure before the first checkpoint leaves no resume state, so the next training starts
        # a run of its own.
        if leader:
            interrupted = isinstance(error, resume.Interrupted)
            tracking.client().set_terminated(run_id, "KILLED" if interrupted else "FAILED")
            if not interrupted and decision.checkpoint is None and resume.forget_unstarted(experiment):
                print(f"{experiment.name}: MLflow run {run_id} marked FAILED; no checkpoint was written, so the next "
                      "training starts afresh", file=sys.stderr, flush=True)
        if isinstance(error, NonFiniteLoss):
            path = f"experiments.{experiment.name}"
            last = resume.newest_checkpoint(resume.folder(experiment))
            kept = f"the last good checkpoint is {last.relative_to(ROOT)}" if last else "no epoch finished, no checkpoint"
            raise ConfigError(f"{path}: non-finite {error}; {kept}; MLflow run {run_id} marked FAILED. "
                              f"Lower {path}.optimizer.lr or set {path}.trainer.gradient_clip_val") from None
        raise


def _fit(experiment, model_cls, decision, stop, leader: bool, system_metrics: bool) -> int:
    """Fit the experiment (resuming as decided), then move its model, run summary and curves into place."""
    import lightning as L
    import torch

    from pipeline.core import resume, served
    from pipeline.core.trainer import LearningCurve, build_trainer
    from pipeline.datamodules import make_datamodule

    L.seed_everything(experiment.seed, workers=True, verbose=False)
    model = model_cls(
        data=data.DATASETS[experiment.dataset].spec,
        optimizer=experiment.optimizer,
        scheduler=experiment.scheduler,
        **experiment.model,
    )
    datamodule = make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed, model.random_window_offsets)
    fitted = torch.compile(model) if experiment.trainer.compile else model

    out_dir = ROOT / "models" / experiment.name
    staging = ROOT / "models" / f".{experiment.name}.partial"
    checkpoints = resume.folder(experiment)
    uri = tracking.tracking_uri()
    run_id = decision.run_id
    curve = LearningCurve()
    trainer = build_trainer(experiment, checkpoints, uri, run_id if leader else None, curve, [resume.ResumeState(), stop],
                            system_metrics=system_metrics)
    start = time.perf_counter()
    trainer.fit(fitted, datamodule=datamodule, ckpt_path=decision.checkpoint, weights_only=True)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return 0
    mlflow_client = tracking.client()
    mlflow_client.set_tag(run_id, "world_size", str(trainer.world_size))

    summary = {
        "experiment": experiment.name,
        "resumed_from": decision.checkpoint and str(decision.checkpoint.relative_to(ROOT)),
        "mlflow_run_id": run_id,
        "tracking_uri": tracking.redacted(uri),
        "checkpoint": experiment.checkpoint,
        "checkpoint_epoch": _checkpoint_epoch(curve.rows, experiment),
        "epochs_trained": trainer.current_epoch,
        "world_size": trainer.world_size,
        "train_seconds": round(seconds, 3),
        **_throughput(model, seconds),
        "parameters": model.num_parameters(),
    }
    files.remove(staging)
    staging.mkdir(parents=True)
    # Only what params, data and code determine goes into models/EXPERIMENT (DVC hashes it): the slim
    # checkpoint and the config. What varies run to run goes to the MLflow run and runs/EXPERIMENT.json.
    files.write_bytes(staging / "best.ckpt", served.slim_checkpoint(resume.kept(experiment)))
    files.write_text(staging / "config.json", json.dumps(experiment.flat(), indent=2) + "\n")
    mlflow_client.log_artifact(run_id, str(staging / "best.ckpt"), "checkpoint")
    mlflow_client.log_artifact(run_id, str(staging / "config.json"))
    tracking.log_metric_once(run_id, "train/seconds", seconds)
    mlflow_client.set_tag(run_id, "checkpoint", str(out_dir / "best.ckpt"))
    mlflow_client.set_tag(run_id, "model.parameters", str(summary["parameters"]))
    logging_start = time.perf_counter()
    model_info = model.log_mlflow_model(run_id, staging / "best.ckpt", data.load_meta(experiment.dataset))
    registered = served.register(model_info, run_id, experiment.name,
                                 {"git.commit": tracking.git_commit(), "dvc.stage": f"train@{experiment.name}"})
    summary.update(registered_model=experiment.name, registered_version=registered.version,
                   model_md5=tracking.md5(staging / "best.ckpt"),
                   model_logging_seconds=round(time.perf_counter() - logging_start, 3))
    # Last: evaluate finds the run that trained models/EXPERIMENT by this tag among FINISHED runs
    # (tracking.find_model_run); FINISHED here, once the model is logged, whatever the logger set before.
    mlflow_client.set_tag(run_id, tracking.MODEL_TAG, summary["model_md5"])
    mlflow_client.set_terminated(run_id, "FINISHED")
    files.write_text(tracking.summary_file(experiment.name), json.dumps(summary, indent=2) + "\n")

    curve.write(ROOT / "plots" / "learning_curves" / f"{experiment.name}.csv", ROOT / "plots" / "validation" / f"{experiment.name}.csv")
    files.replace_dir(staging, out_dir)
    resume.finish(experiment)
    print(f"{experiment.name}: {trainer.current_epoch} epochs in {seconds:.1f} s, kept epoch {summary['checkpoint_epoch']} "
          f"({experiment.checkpoint}), MLflow run {run_id}, registered model {experiment.name} version {registered.version}")
    return 0


def check_model_size(experiment, model_cls) -> None:
    """Refuse, before any run is created, a model whose training cannot fit in this machine's memory:
    its weights, gradients and optimizer state, counted on PyTorch's meta device (no memory used).
    Activations come on top, so this catches the impossible (a typo of a width), not the tight."""
    import torch

    with torch.device("meta"):
        probe = model_cls(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                          scheduler=experiment.scheduler, **experiment.model)
    parameters = sum(p.numel() for p in probe.parameters())
    width = {"64-true": 8, "bf16-true": 2}.get(experiment.trainer.precision, 4)  # mixed precision keeps fp32 weights
    states = {"lbfgs": 200, "sgd": 1 if experiment.optimizer.momentum else 0, "adagrad": 1}.get(experiment.optimizer.name, 2)
    needed = parameters * width * (2 + states)  # weights, gradients, optimizer state
    if torch.cuda.is_available() and experiment.trainer.accelerator in ("gpu", "cuda", "auto"):
        available, where = torch.cuda.mem_get_info()[0], "free on the GPU"
    else:
        import psutil  # a dependency of DVC

        available, where = psutil.virtual_memory().available, "of memory available"
    if needed > available:
        raise ConfigError(
            f"experiments.{experiment.name}.model: {parameters:,} parameters need {needed / 2**30:.1f} GiB to train "
            f"(weights, gradients, {experiment.optimizer.name} state), more than the {available / 2**30:.1f} GiB "
            f"{where}; make the model smaller"
        )


def _throughput(model, seconds: float) -> dict:
    """The work this process's fit did per second (samples, training nodes or environment steps)."""
    amount, unit = model.work_done(model.epochs_run)
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
