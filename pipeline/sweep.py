"""Collect one sweep's runs from MLflow into sweeps/NAME.json; the report stage turns it into a table.

    python -m pipeline.sweep NAME

A sweep is the runs that share the MLflow tag `sweep` (params.yaml's tracking.sweep, set with `-S` in
`dvc exp run --queue`: README, "Sweeps"). For each experiment in it, the configurations are the
distinct values of the params that vary among its runs, the seed left out; each configuration gets
the mean and standard deviation over its seeds of every test metric. A run counts once its evaluate
stage has logged test metrics; of several runs with the same params and seed, the latest counts.

Each experiment's registered model gets the alias `best` on the version of its best configuration's
run (best_runs, by the mean over seeds of its primary test metric): `models:/EXPERIMENT@best`.

The file is an input of the report stage (dvc.yaml), so `dvc repro` after this command reruns only
the report, and the report stays a function of files DVC tracks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from pipeline import cli
from pipeline.params import ROOT, ConfigError, check_name, load

SWEEPS = ROOT / "sweeps"
SEED = "seed"


def _runs(client, experiment_id: str, sweep: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.sweep = '{sweep}'", max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def known_sweeps(client, experiment_id: str) -> list[str]:
    runs = client.search_runs([experiment_id], "tags.sweep LIKE '%'", max_results=5000)
    return sorted({run.data.tags["sweep"] for run in runs})


def summarize(runs) -> dict:
    """{experiment: {"axes": [param, ...], "configurations": [...], "incomplete": n}} from MLflow runs
    (objects with .info.run_id, .info.start_time, .data.tags, .data.params, .data.metrics)."""
    by_experiment: dict[str, list] = {}
    for run in runs:
        by_experiment.setdefault(run.data.tags.get("experiment", run.info.run_name), []).append(run)
    out = {}
    for experiment, group in sorted(by_experiment.items()):
        done = [r for r in group if any(k.startswith("test/") for k in r.data.metrics)]
        keys = sorted({k for r in done for k in r.data.params})
        axes = [k for k in keys if k != SEED and len({r.data.params.get(k) for r in done}) > 1]
        latest: dict[tuple, object] = {}  # (axis values, seed) -> the latest run
        for run in sorted(done, key=lambda r: r.info.start_time):
            latest[(tuple(run.data.params.get(k) for k in axes), run.data.params.get(SEED))] = run
        configurations: dict[tuple, list] = {}
        for (values, _), run in latest.items():
            configurations.setdefault(values, []).append(run)
        rows = []
        for values, members in sorted(configurations.items()):
            members.sort(key=lambda r: _number(r.data.params.get(SEED)))
            metrics = sorted({k for r in members for k in r.data.metrics if k.startswith("test/")})
            summary = {}
            for metric in metrics:
                samples = [r.data.metrics[metric] for r in members if metric in r.data.metrics]
                summary[metric] = {
                    "mean": statistics.fmean(samples),
                    "std": statistics.stdev(samples) if len(samples) > 1 else None,  # over seeds, n - 1
                    "n": len(samples),
                }
            rows.append({
                "params": dict(zip(axes, values)),
                "seeds": [r.data.params.get(SEED) for r in members],
                "runs": [r.info.run_id for r in members],
                "metrics": summary,
            })
        out[experiment] = {"axes": axes, "configurations": rows, "incomplete": len(group) - len(done)}
    return out


ALIAS = "best"  # models:/EXPERIMENT@best: the version of the sweep's best configuration
# The test metric that ranks configurations, the first an experiment has: the supervised tasks' primary
# metrics (pipeline.spec.DataSpec.primary_metric), reinforcement learning's return, generative models' FID.
RANKING = (("test/accuracy", max), ("test/mse", min), ("test/mean_return", max), ("test/fid", min))


def best_runs(summary: dict, runs) -> dict[str, tuple[str | None, str]]:
    """{experiment: (run id or None, why)}: per experiment of a summary, the run of its best configuration
    by the mean over seeds of its RANKING metric (of that configuration, the seed with the best value);
    None, with the reason, when it has none."""
    values = {run.info.run_id: run.data.metrics for run in runs}
    chosen = {}
    for experiment, found in summary.items():
        logged = {metric for c in found["configurations"] for metric in c["metrics"]}
        ranking = next(((metric, pick) for metric, pick in RANKING if metric in logged), None)
        if ranking is None:
            chosen[experiment] = (None, f"none of {', '.join(m for m, _ in RANKING)} logged")
            continue
        metric, pick = ranking
        best = pick((c for c in found["configurations"] if metric in c["metrics"]),
                    key=lambda c: c["metrics"][metric]["mean"])
        run_id = pick((r for r in best["runs"] if metric in values[r]), key=lambda r: values[r][metric])
        chosen[experiment] = (run_id, f"{metric} mean {best['metrics'][metric]['mean']:.4g}, {pick.__name__} of "
                                      f"{len(found['configurations'])} configuration(s)")
    return chosen


def set_aliases(client, summary: dict, runs) -> list[str]:
    """Point the alias `best` of each experiment's registered model at the version of its best run
    (best_runs); a line per experiment saying what was done."""
    lines = []
    for experiment, (run_id, why) in best_runs(summary, runs).items():
        versions = [] if run_id is None else [
            v for v in client.search_model_versions(f"run_id = '{run_id}'") if v.name == experiment]
        if not versions:
            reason = why if run_id is None else f"run {run_id} has no registered model version"
            lines.append(f"{experiment}: no alias set: {reason}")
            continue
        version = max(versions, key=lambda v: int(v.version))
        client.set_registered_model_alias(experiment, ALIAS, version.version)
        lines.append(f"{experiment}: models:/{experiment}@{ALIAS} is version {version.version} (run {run_id}, {why})")
    return lines


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the sweep's name: the MLflow tag `sweep` its runs share")
    args = parser.parse_args(argv)
    if not args.name:
        raise ConfigError("sweep name: empty; give the name the sweep's runs were tagged with (tracking.sweep)")
    name = check_name(args.name, "sweep name", "a sweep name")  # a file name, and quoted in MLflow's filter
    config = load(family_checks=False)

    from pipeline.core import tracking  # after the checks: a wrong name is reported before MLflow loads

    tracking.check_reachable()
    client = tracking.client()
    experiment = client.get_experiment_by_name(config.tracking_experiment)
    runs = _runs(client, experiment.experiment_id, name) if experiment else []
    if not runs:
        known = known_sweeps(client, experiment.experiment_id) if experiment else []
        raise ConfigError(
            f"sweep {name!r}: no run in MLflow experiment {config.tracking_experiment!r} ({tracking.redacted(tracking.tracking_uri())}) "
            f"has the tag sweep={name}; sweeps there: {', '.join(known) or 'none'}"
        )
    summary = {"sweep": name, "experiments": summarize(runs)}
    SWEEPS.mkdir(exist_ok=True)
    path = SWEEPS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(path)
    for experiment_name, found in summary["experiments"].items():
        n = sum(len(c["runs"]) for c in found["configurations"])
        axes = ", ".join(found["axes"]) or "none but the seed"
        note = f"; {found['incomplete']} run(s) without test metrics left out" if found["incomplete"] else ""
        print(f"{experiment_name}: {n} run(s) in {len(found['configurations'])} configuration(s), varying {axes}{note}")
    for line in set_aliases(client, summary["experiments"], runs):
        print(line)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"wrote {shown}; `dvc repro` puts it in reports/comparison.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run_and_exit(main)
