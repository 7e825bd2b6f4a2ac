"""Stage evaluate@EXPERIMENT: test metrics of the best checkpoint, plots, into the same MLflow run.

    python -m pipeline.evaluate EXPERIMENT

Writes metrics/EXPERIMENT.json (DVC metrics), plots/predictions/EXPERIMENT.csv (actual vs
predicted, a DVC confusion plot: classes, or deciles of the target for regression) and
plots/figures/EXPERIMENT/*.png; logs the test metrics and figures to the training run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from pipeline import cli, data
from pipeline.params import ROOT, ConfigError, load_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="an experiment name from params.yaml")
    args = parser.parse_args(argv)

    _, experiment = load_experiment(args.experiment)
    model_dir = ROOT / "models" / experiment.name
    checkpoint, run_file = model_dir / "best.ckpt", model_dir / "run.json"
    for path in (checkpoint, run_file):
        if not path.exists():
            raise ConfigError(f"{path.relative_to(ROOT)}: missing; run `dvc repro train@{experiment.name}` to build it")
    x, y = data.load_split(experiment.dataset, "test")
    meta = data.load_meta(experiment.dataset)

    import torch

    from pipeline import metrics, tracking
    from pipeline.params import family_class

    spec = data.DATASETS[experiment.dataset].spec
    model = family_class(experiment.family)(
        data=spec, optimizer=experiment.optimizer, scheduler=experiment.scheduler, **experiment.model
    )
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    except Exception as error:
        raise ConfigError(
            f"{checkpoint.relative_to(ROOT)}: unreadable checkpoint ({type(error).__name__}); "
            f"run `dvc repro -f train@{experiment.name}` to rebuild it"
        ) from None
    model.eval()
    with torch.no_grad():
        prediction = model.predict(x)
    if spec.task == "regression":  # back to the target's own units
        prediction = prediction * meta["target_std"] + meta["target_mean"]
        y = y * meta["target_std"] + meta["target_mean"]
    results = metrics.test_metrics(spec.task, prediction, y, spec.num_classes)

    plots = ROOT / "plots"
    figures = plots / "figures" / experiment.name
    figures.mkdir(parents=True, exist_ok=True)
    (plots / "predictions").mkdir(exist_ok=True)
    actual, predicted = _plot_labels(spec.task, prediction, y)
    _write_csv(plots / "predictions" / f"{experiment.name}.csv", ["actual", "predicted"], zip(actual, predicted))
    from pipeline import figures as fig

    fig.learning_curve(
        plots / "learning_curves" / f"{experiment.name}.csv",
        plots / "validation" / f"{experiment.name}.csv",
        figures / "learning_curve.png",
        experiment.name,
    )
    if spec.task == "regression":
        fig.predicted_vs_actual(prediction, y, figures / "predicted_vs_actual.png", experiment.name)
    else:
        matrix = metrics.confusion_matrix(spec.task, prediction, y, spec.num_classes)
        fig.confusion(matrix, figures / "confusion_matrix.png", experiment.name)

    from mlflow.entities import Metric

    run = json.loads(run_file.read_text())
    mlflow_client = tracking.client()
    now = int(time.time() * 1000)
    mlflow_client.log_batch(run["mlflow_run_id"], metrics=[Metric(k, v, now, 0) for k, v in results.items()])
    mlflow_client.log_artifacts(run["mlflow_run_id"], str(figures), "figures")
    mlflow_client.set_tag(run["mlflow_run_id"], "dvc.evaluated", "true")

    out = ROOT / "metrics" / f"{experiment.name}.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)
    print(f"{experiment.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return 0


def _plot_labels(task: str, prediction, y) -> tuple[list, list]:
    """Class labels, or for regression the decile (d1..d10 of the test targets) of each value."""
    from pipeline import metrics

    if task != "regression":
        return y.long().tolist(), metrics.predicted_labels(task, prediction).tolist()
    import torch

    edges = torch.quantile(y, torch.linspace(0, 1, 11)[1:-1])
    decile = lambda v: [f"d{int(i) + 1:02d}" for i in torch.bucketize(v, edges)]  # noqa: E731
    return decile(y), decile(prediction)


def _write_csv(path: Path, header: list[str], rows) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(cli.run(main))
