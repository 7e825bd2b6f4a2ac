"""Stage evaluate@EXPERIMENT: test metrics of the best checkpoint, plots, into the same MLflow run.

    python -m pipeline.evaluate EXPERIMENT    (under DVC: python -m pipeline.evaluate, the experiment from DVC_STAGE)

Writes metrics/EXPERIMENT.json (DVC metrics), plots/predictions/EXPERIMENT.csv (actual vs
predicted, a DVC confusion plot: classes, or deciles of the target for regression) and
plots/figures/EXPERIMENT/*.png; logs the test metrics and figures to the training run, each metric
once per run (evaluating the same model again adds no point to its history). The training run is the
one that trained models/EXPERIMENT/best.ckpt, found by the checkpoint's md5 (tracking.find_model_run).

The outputs persist between runs (DVC does not delete them first): each is replaced whole, and only
once the evaluation succeeded. The figures are drawn into plots/figures/.EXPERIMENT.partial/, which
then takes the place of plots/figures/EXPERIMENT/: no figure of an earlier evaluation survives, and
a failed one leaves the previous folder as it was.

It runs on as many processes as the experiment trains on (trainer.devices x num_nodes, through the
same launcher). Then each process predicts its own share of the test split, every world-th sample,
unpadded (DistributedSampler would repeat samples to even the shares out), and global rank 0
gathers the predictions back into the split's order: every test sample is counted once, and the
metrics are those of one process.
"""

from __future__ import annotations

import argparse
import json

from pipeline import cli, data, files, stagestats
from pipeline.core import launch, tracking
from pipeline.params import ROOT, ConfigError, load_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0])
    cli.experiment_argument(parser, "evaluate")
    args = parser.parse_args(argv)

    config, experiment = load_experiment(cli.experiment_name(args.experiment, "evaluate"))
    cli.set_threads(experiment.trainer.threads)
    model_dir = ROOT / "models" / experiment.name
    checkpoint = model_dir / "best.ckpt"
    if not checkpoint.exists():
        raise ConfigError(f"{checkpoint.relative_to(ROOT)}: missing; run `dvc repro train@{experiment.name}` to build it")
    # an environment has no test split: its family's evaluate plays test episodes
    x, y = (None, None) if data.DATASETS[experiment.dataset].is_environment else data.load_split(experiment.dataset, "test")
    meta = data.load_meta(experiment.dataset)
    tracking.check_reachable()  # before any work, not after predicting
    _check_readable(checkpoint, experiment.name)  # a damaged file is named as such, not as a model no run trained
    run = tracking.find_model_run(config.tracking_experiment, experiment.name, checkpoint)
    tracking.check_writable(run, config.tracking_experiment)  # a read-only user learns it before the work
    run_id = run.info.run_id
    launch.check_experiment(experiment)
    launch.launch(experiment, module="pipeline.evaluate")  # as many processes as training had

    # Here, after the checks: a user's mistake is reported without importing torch and Lightning.
    from pipeline.core.evaluation import Context, evaluate
    from pipeline.params import family_class

    try:  # the model as any user rebuilds it: its constructor's arguments are in the checkpoint
        model = family_class(experiment.family).load_from_checkpoint(checkpoint, map_location="cpu")
    except Exception as error:
        raise _unreadable(checkpoint, experiment.name, error) from None
    model.eval()
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    plots = ROOT / "plots"
    figures = plots / "figures" / experiment.name
    context = Context(experiment, x, y, meta, plots / "figures" / f".{experiment.name}.partial",
                      plots / "predictions" / f"{experiment.name}.csv")
    stagestats.mark("work")
    if rank_zero_only.rank != 0:  # its share of the predictions goes to global rank 0, which alone writes
        evaluate(model, context)
        return 0
    files.remove(context.figures)  # left by an evaluation that was stopped
    context.figures.mkdir(parents=True)
    try:
        results = _evaluate_and_log(model, context, run_id)
        files.replace_dir(context.figures, figures)
        files.write_text(ROOT / "metrics" / f"{experiment.name}.json", json.dumps(results, indent=2) + "\n")
    except BaseException:
        files.remove(context.figures)  # no half-drawn folder left; the previous figures are replaced only by a complete one
        raise
    tested = "test episodes" if y is None else f"{len(y)} test samples"
    print(f"{experiment.name}: {tested} on {experiment.trainer.world_size} process(es): "
          + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return 0


def _check_readable(checkpoint, name: str) -> None:
    import torch

    try:
        torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise _unreadable(checkpoint, name, error) from None


def _unreadable(checkpoint, name: str, error: Exception) -> ConfigError:
    return ConfigError(f"{checkpoint.relative_to(ROOT)}: unreadable checkpoint ({type(error).__name__}); "
                       f"run `dvc repro -f train@{name}` to rebuild it")


def _evaluate_and_log(model, context, run_id: str) -> dict[str, float]:
    """The family's test metrics and figures (into context.figures), and the learning curve; all of it
    logged to the training's MLflow run, each test metric once per run."""
    from pipeline.core import figures as fig
    from pipeline.core.evaluation import evaluate

    results = evaluate(model, context)
    name = context.experiment.name
    plots = ROOT / "plots"
    fig.learning_curve(plots / "learning_curves" / f"{name}.csv", plots / "validation" / f"{name}.csv",
                       context.figures / "learning_curve.png", name)
    mlflow_client = tracking.client()
    tracking.log_new_values(mlflow_client, run_id, results)
    mlflow_client.log_artifacts(run_id, str(context.figures), "figures")
    if context.examples is not None:
        mlflow_client.log_text(run_id, context.examples, "examples.txt")
    mlflow_client.set_tag(run_id, "dvc.evaluated", "true")
    return results


if __name__ == "__main__":
    cli.run_and_exit(main)
