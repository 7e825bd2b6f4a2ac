"""Stage baselines: the reference rows each prepared dataset is compared with, fitted once.

    python -m pipeline.baselines

For every dataset prepare made: its own references (pipeline/references/DATASET.py), then scikit-learn
models fitted on its training split and scored on its test split; for an image dataset with a scorer,
the two reference rows generated samples are scored beside (the floor, training images; a Gaussian fitted
to the training pixels). Writes baselines/DATASET.json, a list of rows. The report only reads them: an
edit to an experiment reruns its train, evaluate and the report, never these fits, which depend on the
data, the scorers and this code alone.
"""

from __future__ import annotations

import argparse
import json
import warnings

from pipeline import cli, data, files, references, stagestats
from pipeline.base import ConfigError
from pipeline.params import load
from pipeline.spec import BASELINES, PREPARED

BASELINE_MAX_TRAIN = 10_000  # training samples a classifier baseline is fitted on at most (a kernel SVC is quadratic in them)


def sklearn_models(dataset: str) -> dict[str, object]:
    """scikit-learn models fitted on the training split, by name; the task decides which."""
    # scikit-learn inside functions: a params error needs none of it
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    warnings.filterwarnings("ignore", category=FutureWarning)  # SVC(probability=True) is deprecated, still exact Platt scaling
    task = data.DATASETS[dataset].spec.task
    if task in ("sequence", "oneshot"):  # no scikit-learn model generates sequences or names classes it never saw
        return {}
    if task == "regression":
        return {"least_squares": LinearRegression()}
    return {
        "logistic_regression": LogisticRegression(max_iter=5000),
        "svc": SVC(probability=True, random_state=0),
        "mlp_classifier": MLPClassifier(max_iter=2000, random_state=0),
    }


def baseline_training_set(x_train, y_train) -> tuple:
    """A classification training split, or a stratified subsample of BASELINE_MAX_TRAIN of it (seed 0)
    where it is larger: the opt-in MNIST, Fashion-MNIST and CIFAR-10 (the SVC's Platt scaling and the
    MLP on all 54,000 MNIST images would take the better part of an hour)."""
    if len(y_train) <= BASELINE_MAX_TRAIN:
        return x_train, y_train
    from sklearn.model_selection import train_test_split

    x_train, _, y_train, _ = train_test_split(x_train, y_train, train_size=BASELINE_MAX_TRAIN, random_state=0, stratify=y_train)
    return x_train, y_train


def baseline_rows(dataset: str, reference_params: dict | None = None) -> list[dict]:
    """Each baseline's test metrics: the dataset's own references (pipeline/references/, given what they read
    from the params, `reference_params`), then the scikit-learn models'. On a dataset of graphs they see each graph's node and edge counts
    and sorted degrees (pipeline.data.graph_invariants). On a graph dataset the baselines see the node
    features alone (not the edges), fitted on the labelled training nodes, and each is fitted again with random_state 0-9 (as
    the graph families are re-fitted, pipeline.core.evaluation.graph.SEEDS) for test/accuracy_mean and test/accuracy_std.
    A classification training split larger than BASELINE_MAX_TRAIN is subsampled to it (the family column
    says so); the regression baseline, least squares, fits the whole split."""
    import torch

    from pipeline.core import metrics

    spec = data.DATASETS[dataset].spec
    rows = [{**row, "kind": "baseline", "dataset": dataset} for row in references.reference_rows(dataset, reference_params)]
    if data.DATASETS[dataset].is_environment:  # no split to fit a scikit-learn model on
        return rows
    meta = data.load_meta(dataset)
    x_train, y_train = (t.flatten(1).numpy() if t.dim() > 1 else t.numpy() for t in data.load_features(dataset, "train"))
    n_train = len(y_train)
    if spec.task in ("binary", "multiclass"):
        x_train, y_train = baseline_training_set(x_train, y_train)
    x_test, y_test = data.load_features(dataset, "test")
    if "noise_variance" in meta:  # the least mean squared error any forecaster can reach
        rows.append({"name": "noise_floor", "kind": "baseline", "family": "σ² of the series' noise", "dataset": dataset,
                     "test/mse": meta["noise_variance"], "test/mse_over_noise": 1.0})
    for name, model in sklearn_models(dataset).items():
        model.fit(x_train, y_train)
        if spec.task == "regression":
            prediction = torch.tensor(model.predict(x_test.flatten(1).numpy()), dtype=torch.float64)
            prediction = prediction * meta["target_std"] + meta["target_mean"]
            target = y_test.double() * meta["target_std"] + meta["target_mean"]
        else:
            probabilities = torch.tensor(model.predict_proba(x_test.flatten(1).numpy()), dtype=torch.float32)
            prediction = probabilities[:, 1] if spec.task == "binary" else probabilities
            target = y_test
        row = metrics.test_metrics(spec.task, prediction, target, spec.num_classes, meta.get("noise_variance"))
        family = "scikit-learn" if len(y_train) == n_train else f"scikit-learn, {len(y_train):,} of {n_train:,} training samples"
        if data.DATASETS[dataset].kind == "graph":
            row.update(_over_seeds(model, x_train, y_train, x_test.flatten(1).numpy(), y_test.numpy()))
            family = "scikit-learn, node features only"
        elif data.DATASETS[dataset].kind == "graphs":  # pipeline.data.graph_invariants
            family = "scikit-learn, node and edge counts and sorted degrees only"
        rows.append({"name": name, "kind": "baseline", "family": family, "dataset": dataset, **row})
    return rows


def _over_seeds(model, x_train, y_train, x_test, y_test) -> dict[str, float]:
    """test/accuracy_mean and test/accuracy_std (n - 1) of `model` fitted with each random_state of SEEDS."""
    import numpy as np
    from sklearn.base import clone

    from pipeline.core.evaluation.graph import SEEDS

    accuracies = [clone(model).set_params(random_state=seed).fit(x_train, y_train).score(x_test, y_test) for seed in SEEDS]
    return {"test/accuracy_mean": round(float(np.mean(accuracies)), 6),
            "test/accuracy_std": round(float(np.std(accuracies, ddof=1)), 6)}


def generative_rows(dataset: str, seed: int = 0) -> list[dict]:
    """The reference rows generated samples are scored beside, scored like the models (N = the test split's
    size): the floor, N training images against the test images; and a Gaussian fitted to the training
    pixels (mean and full covariance), N samples from it. Each row has "generative": true."""
    import torch

    from pipeline.core import scoring

    x_train, _ = data.load_split(dataset, "train")
    x_test, _ = data.load_split(dataset, "test")
    scorer = scoring.load_scorer(dataset)
    generator = torch.Generator().manual_seed(seed)
    n = len(x_test)
    train_images = x_train[torch.randperm(len(x_train), generator=generator)[:n]]
    flat = x_train.flatten(1).double()
    mean = flat.mean(0)
    covariance = torch.cov(flat.T) + 1e-6 * torch.eye(flat.shape[1], dtype=flat.dtype)
    gaussian = torch.distributions.MultivariateNormal(mean, covariance)
    torch.manual_seed(seed)
    gaussian_images = gaussian.sample((n,)).float().reshape(n, *x_train.shape[1:])
    rows = []
    for name, family, images in (
        ("train_images", "floor: training images vs test images", train_images),
        ("gaussian_pixels", "Gaussian fitted to the training pixels", gaussian_images),
    ):
        scores = scoring.sample_scores(images, x_test, scorer, seed)
        rows.append({"name": name, "kind": "baseline", "family": family, "dataset": dataset, "generative": True,
                     **{f"test/{k}": v for k, v in scores.items()}})
    return rows


def prepared_datasets() -> list[str]:
    """The datasets prepare made (an opt-in one only once data.download named it)."""
    return sorted(name for name in data.DATASETS if (PREPARED / name / "meta.json").exists())


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m pipeline.baselines", description=__doc__.splitlines()[0]).parse_args(argv)
    config = load(family_checks=False)
    cli.set_threads(config.threads)  # the scikit-learn models' BLAS threads: their sums depend on it
    from pipeline.core import scoring

    datasets = prepared_datasets()
    if not datasets:
        raise ConfigError(f"{data.shown(PREPARED)}: no prepared dataset; run `dvc repro prepare` first")
    stagestats.mark("work")
    written = {}  # every dataset is fitted before baselines/ changes: a failure leaves the old files
    for index, dataset in enumerate(datasets, 1):
        print(f"[{index}/{len(datasets)}] fitting the baselines of {dataset}", flush=True)
        rows = baseline_rows(dataset, references.reference_params(dataset, config))
        if (scoring.SCORERS / f"{dataset}.pt").exists():
            rows += generative_rows(dataset)
        written[f"{dataset}.json"] = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    for stale in sorted(BASELINES.glob("*")) if BASELINES.is_dir() else ():
        if stale.name not in written:
            files.remove(stale)
    for name, text in written.items():
        files.write_text(BASELINES / name, text)
    print(f"baselines: {sum(len(json.loads(t)) for t in written.values())} rows for {len(datasets)} datasets; "
          f"wrote {data.shown(BASELINES)}/")
    return 0


if __name__ == "__main__":
    cli.run_and_exit(main)
