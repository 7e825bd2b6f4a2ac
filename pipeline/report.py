"""Stage report: every experiment's test metrics beside scikit-learn baselines on the same splits.

    python -m pipeline.report

Writes reports/comparison.md (one row per experiment and per baseline, then the targets of
params.yaml with pass/fail) and reports/comparison.png. Generative experiments (their metrics have
test/fid) get a table of their own, beside two reference rows scored the same way
(pipeline.core.scoring: the floor, training images against test images; a Gaussian fitted to the
training pixels), their sample grids, and reports/generative.png. Sweeps collected into sweeps/
(python -m pipeline.sweep) get a table each: mean ± standard deviation over seeds per configuration.
The same rows and targets, with every dataset's learning curves overlaid and the evaluate stage's
figures, go to reports/index.html, a static page (pipeline.html_report).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pipeline import cli, codedeps, data, files, html_report, stagestats
from pipeline.html_report import SWEEP_INTRO, fmt
from pipeline.params import ROOT, ConfigError, load
from pipeline.spec import BASELINES, SCORERS

REPORTS = ROOT / "reports"


def baseline_rows(dataset: str) -> list[dict]:
    """The reference rows the baselines stage fitted for `dataset` (pipeline.baselines): read, never refitted."""
    path = BASELINES / f"{dataset}.json"  # BASELINES looked up here, when called: tests point it elsewhere
    if not path.exists():
        raise ConfigError(f"{data.shown(path)}: missing; run `dvc repro baselines` to build it")
    return json.loads(path.read_text())


def metric_columns(rows: list[dict]) -> list[str]:
    """The test metrics the rows hold, in the order they first appear. The columns come from what the
    experiments and baselines wrote, so a new `test/...` metric shows without a list to update."""
    return list(dict.fromkeys(key for row in rows for key in row if key.startswith("test/")))


def check_target(target: dict, value: float | None, baseline_values: dict[str, float],
                 experiment_values: dict[str, float | None] | None = None) -> tuple[str, bool | None]:
    """A target of params.yaml -> (its statement, whether it holds; None if it could not be checked).
    `experiment_values`: the metric of every experiment, for `lowest_among` and `experiment`."""
    metric = target["metric"]
    if "lowest_among" in target:
        others = {name: (experiment_values or {}).get(name) for name in target["lowest_among"]}
        statement = f"{metric} below each of {', '.join(others)}"
        if any(v is None for v in others.values()):
            return statement + " (some have no value)", None
        return statement, value is not None and all(value < v for v in others.values())
    threshold = target_threshold(target, baseline_values, experiment_values)
    reference = target.get("baseline", target.get("experiment"))
    if "at_least" in target:
        statement = f"{metric} >= {target['at_least']}"
    elif "at_most" in target:
        statement = f"{metric} <= {target['at_most']}"
    elif threshold is None:
        return f"{metric} vs missing {'baseline' if 'baseline' in target else 'experiment'} {reference}", None
    elif "book" in target:
        statement = f"{metric} >= book {target['book']:g} {target['at_least_delta']:+g} = {_number(threshold)}"
    elif "at_least_delta" in target:
        statement = f"{metric} >= {reference} {target['at_least_delta']:+g} = {_number(threshold)}"
    else:
        statement = f"{metric} <= {target['at_most_ratio']:g} x {reference} = {_number(threshold)}"
    at_least = "at_least" in target or "at_least_delta" in target
    ok = value is not None and (value >= threshold if at_least else value <= threshold)
    return statement, ok


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"  # a count (parameters) without decimals


def target_threshold(target: dict, baseline_values: dict[str, float],
                     experiment_values: dict[str, float | None] | None = None) -> float | None:
    """The value a target's metric must reach (at_least*) or stay under (at_most*): fixed, the book's figure
    (`book`), or from a baseline's or another experiment's value of the same metric; None for `lowest_among` or a
    reference without a value."""
    if "at_least" in target or "at_most" in target:
        return target.get("at_least", target.get("at_most"))
    if "book" in target:
        reference = target["book"]
    elif "experiment" in target:
        reference = (experiment_values or {}).get(target["experiment"])
    else:
        reference = baseline_values.get(target.get("baseline"))
    if reference is None:
        return None
    if "at_least_delta" in target:
        return reference + target["at_least_delta"]
    return reference * target["at_most_ratio"]


def scorer_accuracy(dataset: str) -> float | None:
    facts = SCORERS / f"{dataset}.json"
    return json.loads(facts.read_text())["test/accuracy"] if facts.exists() else None


def book_order(rows: list[dict]) -> dict[str, tuple[int, str]]:
    """Each dataset's place in the report, by the book: the first chapter among the families of its
    experiments (their CHAPTER), then its name."""
    first: dict[str, int] = {}
    for row in rows:
        if row["kind"] == "model":
            first[row["dataset"]] = min(first.get(row["dataset"], row["chapter"]), row["chapter"])
    return {dataset: (chapter, dataset) for dataset, chapter in first.items()}


def in_book_order(rows: list[dict]) -> list[dict]:
    """`rows` by dataset in book order (book_order), each dataset's experiments first (by chapter, then
    name), then its baselines and floors by name."""
    order = book_order(rows)
    return sorted(rows, key=lambda r: (order[r["dataset"]], r["kind"] != "model", r.get("chapter", 0), r["name"]))


def accuracy_limits(values: list[float]) -> tuple[float, float]:
    """The x range of the accuracy bars: from a tenth at least 0.05 below the lowest value (never above 0.9,
    never below 0), so that every bar, one at 0.5 too, keeps a visible length; to 1.02, room for the labels."""
    return max(0.0, min(0.9, math.floor((min(values) - 0.05) * 10) / 10)), 1.02


def comparison_figure(rows: list[dict], metric: str, png_path: Path) -> None:
    """Horizontal bars of one test metric for every model and baseline that has it."""

    from pipeline.core.figures import plt, save

    rows = [row for row in rows if row.get(metric) is not None]
    figure, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    labels = [f"{row['name']} ({row['dataset']})" for row in rows]
    colors = ["tab:blue" if row["kind"] == "model" else "tab:gray" for row in rows]
    values = [row[metric] for row in rows]
    bars = ax.barh(labels, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:.4g}" for v in values], padding=2, fontsize=7)  # the value, however short the bar
    ax.set(xlabel=metric, title=f"{metric}: models (blue) and baselines (gray)")
    ax.invert_yaxis()
    if metric == "test/accuracy" and values:  # zoomed: the image classifiers' accuracies differ in the second digit
        ax.set_xlim(*accuracy_limits(values))
    save(figure, png_path)


def _generative_section(rows: list[dict]) -> list[str]:
    """The generative models beside the reference rows, then each model's sample grid."""
    order = book_order(rows)
    columns = metric_columns(rows)
    header = ["name", "kind", "family", "dataset", *columns, "parameters", "train seconds"]
    datasets = sorted({row["dataset"] for row in rows})
    scorers = ", ".join(f"{d} {scorer_accuracy(d):.4f}" for d in datasets if scorer_accuracy(d) is not None)
    lines = [
        "",
        "## Generative models",
        "",
        "N generated samples against the N test images (N = the test split's size), scored with the penultimate",
        "layer of a CNN the `scorer` stage trains on the dataset (test accuracy: " + scorers + "): FID and KID",
        "(lower is better), how many classes the scorer finds among the samples and the KL divergence of that",
        "class histogram from uniform. Reference rows: `train_images`, N training images against the test images",
        "(the floor); `gaussian_pixels`, samples of a Gaussian fitted to the training pixels. Autoencoders: test",
        "reconstruction MSE per pixel beside PCA's with the same k fitted on the training split (`test/pca_mse`);",
        "VAE: test negative ELBO in nats per image.",
        "",
        *_table(header, sorted(rows, key=lambda r: (order[r["dataset"]], r["kind"] != "model", r.get("test/fid", 0)))),
    ]
    lines += ["", "![generative](generative.png)", ""]
    for row in rows:
        if row["kind"] == "model":
            lines.append(f"![{row['name']} samples](../plots/figures/{row['name']}/samples.png)")
    return lines


def sweep_tables(folder) -> list[dict]:
    """The sweeps collected into `folder` (python -m pipeline.sweep NAME) as tables: per sweep and
    experiment a title, a header and one row of cells per configuration, each test metric's mean ±
    standard deviation over its seeds (n - 1 in the denominator; a lone seed shows its value alone),
    and a note on runs left out."""
    tables = []
    for path in sorted(folder.glob("*.json")):
        sweep = json.loads(path.read_text())
        for experiment, found in sweep["experiments"].items():
            configurations = found["configurations"]
            metrics = metric_columns([row["metrics"] for row in configurations])
            rows = []
            for row in configurations:
                cells = [str(row["params"][axis]) for axis in found["axes"]]
                cells.append(", ".join(str(seed) for seed in row["seeds"]))
                for metric in metrics:
                    value = row["metrics"].get(metric)
                    if value is None:
                        cells.append("")
                    elif value["std"] is None:
                        cells.append(fmt(value["mean"]))
                    else:
                        cells.append(f"{fmt(value['mean'])} ± {fmt(value['std'])}")
                rows.append(cells)
            note = (f"{found['incomplete']} run(s) of this sweep had no test metrics yet and are left out."
                    if found.get("incomplete") else "")
            tables.append({"title": f"Sweep `{sweep['sweep']}`: {experiment}", "anchor": f"sweep-{sweep['sweep']}-{experiment}",
                           "header": [*found["axes"], "seeds", *metrics], "rows": rows, "note": note})
    return tables


def sweep_section(folder) -> list[str]:
    """The sweep tables as markdown, under a heading; nothing without sweeps."""
    lines = []
    for table in sweep_tables(folder):
        lines += ["", f"### {table['title']}", "", "| " + " | ".join(table["header"]) + " |",
                  "|" + "---|" * len(table["header"]), *("| " + " | ".join(cells) + " |" for cells in table["rows"])]
        if table["note"]:
            lines += ["", table["note"]]
    return ["", "## Sweeps", "", SWEEP_INTRO, *lines] if lines else []


def _table(header: list[str], rows: list[dict]) -> list[str]:
    """A markdown table: the header, then one line per row with its values of the header's keys."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(fmt(row.get(key)) for key in header) + " |" for row in rows)]


def _training(config, name: str, checkpoint) -> dict:
    """The parameter count and train seconds of the training that wrote `checkpoint`: from this checkout's
    runs/NAME.json if that training wrote it, else from its MLflow run (a model pulled with `dvc pull`)."""
    from pipeline.core import tracking

    summary = tracking.summary_file(name)
    digest = tracking.md5(checkpoint)
    if summary.exists() and (found := json.loads(summary.read_text())).get("model_md5") == digest:
        return found
    try:
        run = tracking.find_model_run(config.tracking_experiment, name, checkpoint)
    except ConfigError:  # a model pulled without its run's store: the table shows no figure, not an error
        return {"parameters": None, "train_seconds": None}
    return {"parameters": int(run.data.tags.get("model.parameters", 0)) or None,
            "train_seconds": run.data.metrics.get("train/seconds")}


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.splitlines()[0]).parse_args(argv)
    config = load(family_checks=False)  # the report builds no model: the train stages checked each family
    stagestats.mark("work")
    chapters = json.loads((codedeps.OUT / codedeps.CHAPTERS).read_text())  # the codedeps stage's
    rows = []
    for name, experiment in config.experiments.items():
        metrics_file, checkpoint = ROOT / "metrics" / f"{name}.json", ROOT / "models" / name / "best.ckpt"
        for path, stage in ((metrics_file, "evaluate"), (checkpoint, "train")):
            if not path.exists():
                raise ConfigError(f"{path.relative_to(ROOT)}: missing; run `dvc repro {stage}@{name}` to build it")
        run = _training(config, name, checkpoint)
        rows.append(
            {
                "name": name,
                "kind": "model",
                "family": experiment.family,
                "dataset": experiment.dataset,
                "chapter": chapters[experiment.family],  # the report's order, not a column
                "parameters": run["parameters"],
                "train seconds": run["train_seconds"],
                **json.loads(metrics_file.read_text()),
            }
        )
    generative = {row["name"] for row in rows if "test/fid" in row}
    supervised_datasets = sorted({row["dataset"] for row in rows if row["name"] not in generative})
    generative_datasets = sorted({row["dataset"] for row in rows if row["name"] in generative})
    for dataset in supervised_datasets:  # the baselines stage fitted them; here they are only read
        rows.extend(row for row in baseline_rows(dataset) if not row.get("generative"))
    for dataset in generative_datasets:
        rows.extend(row for row in baseline_rows(dataset) if row.get("generative"))
    is_generative = lambda row: row["name"] in generative or row.get("generative")  # noqa: E731
    supervised_rows = [row for row in rows if not is_generative(row)]
    generative_rows = [row for row in rows if is_generative(row)]

    columns = metric_columns(supervised_rows)
    header = ["name", "kind", "family", "dataset", *columns, "parameters", "train seconds"]
    lines = [
        "# Comparison",
        "",
        "Test split of each dataset; baselines are scikit-learn models fitted on the same training split.",
        "Regression errors are in the target's own units; test/mse_over_noise divides a synthetic series' error by",
        "its noise variance σ² (the noise_floor row), the least mean squared error any forecaster can reach.",
        "Sequence metrics: token accuracy, exact match (whole target right) and perplexity per target token.",
        "Sources of several lengths: test/exact_match_N is exact match over the sources of N tokens, the padding that",
        "ends a shorter target included; test/attention_mirrored is the share of attention rows (target position i",
        "of a test sample with n source tokens, i < n) whose largest weight is on the mirrored source position n-1-i",
        "(a recurrent encoder's annotation also carries its neighbours, so a model may align one position off).",
        "Graph datasets (karate, sbm, sbm_inductive): node classification; the test split is the unlabelled nodes",
        "(sbm_inductive: those of graphs unseen in training), the baselines see the node features alone;",
        "test/accuracy_mean and _std are over seeds 0-9 (models re-fitted with the",
        "same config, baselines with each random_state).",
        "",
        *_table(header, in_book_order(supervised_rows)),
    ]
    if generative_rows:
        lines += _generative_section(generative_rows)
    lines += sweep_section(ROOT / "sweeps")

    lines += ["", "## Targets", "", "| experiment | target | value | holds |", "|---|---|---|---|"]
    checks = []
    for name, targets in config.targets.items():
        if name not in config.experiments:  # an example not enabled: nothing ran to check
            continue
        model_row = next(row for row in rows if row["name"] == name and row["kind"] == "model")
        for target in targets:
            reference = {
                row["name"]: row.get(target["metric"])
                for row in rows
                if row["kind"] == "baseline" and row["dataset"] == model_row["dataset"]
            }
            by_experiment = {row["name"]: row.get(target["metric"]) for row in rows if row["kind"] == "model"}
            value = model_row.get(target["metric"])
            statement, ok = check_target(target, value, reference, by_experiment)
            checks.append(html_report.Check(name, target["metric"], statement, value,
                                            target_threshold(target, reference, by_experiment), ok))
            verdict = {True: "yes", False: "**no**", None: "unchecked"}[ok]
            lines.append(f"| {name} | {statement} | {fmt(value)} | {verdict} |")
    failures = sum(check.ok is False for check in checks)
    lines += ["", "![comparison](comparison.png)", ""]

    REPORTS.mkdir(exist_ok=True)
    comparison_figure(in_book_order(rows), "test/accuracy", REPORTS / "comparison.png")
    if generative_rows:
        comparison_figure(in_book_order(generative_rows), "test/fid", REPORTS / "generative.png")
    else:
        files.remove(REPORTS / "generative.png")
    # one section per dataset, and one for its generative models, whose losses are each its own objective
    sections = [html_report.Section(dataset, dataset, in_book_order([r for r in supervised_rows if r["dataset"] == dataset]))
                for dataset in {row["dataset"] for row in supervised_rows}]
    sections += [html_report.Section(f"{dataset}-generative", f"{dataset}: generative models",
                                     in_book_order([r for r in generative_rows if r["dataset"] == dataset]),
                                     separate_losses=True)
                 for dataset in {row["dataset"] for row in generative_rows}]
    sections.sort(key=lambda section: (min(r["chapter"] for r in section.rows if r["kind"] == "model"), section.title))
    scales = {dataset: meta["target_std"] for dataset in {row["dataset"] for row in rows}
              if "target_std" in (meta := data.load_meta(dataset))}
    html_report.write(sections, checks, metric_columns(rows), plots=ROOT / "plots",
                      out=REPORTS, target_std=scales, overview=[REPORTS / "comparison.png", REPORTS / "generative.png"],
                      sweeps=sweep_tables(ROOT / "sweeps"))
    files.write_text(REPORTS / "comparison.md", "\n".join(lines))
    models = sum(row["kind"] == "model" for row in rows)
    print(f"report: {models} experiments beside {len(rows) - models} baselines, targets holding "
          f"{sum(check.ok is True for check in checks)} of {len(checks)}; wrote reports/comparison.md, reports/index.html")
    if failures:
        print(f"warning: {failures} target(s) not met; see reports/comparison.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run_and_exit(main)
