"""One experiment's iteration: what a user waits for after changing one of its params.

    python bench/iteration.py --workspace PATH [--experiment softmax_digits] [--repeats 3]
                              [--out bench/results/iteration.md]

PATH is a checkout where `dvc repro` has run (every output up to date). It is copied, without its
virtual environment and MLflow store, into a temporary folder, so the user's own workspace is never
changed; one training, not counted, creates the copy's store; then
each of these is timed --repeats times (wall seconds), with the training's own seconds read from
runs/EXPERIMENT.json after each:

1. `dvc exp run -S experiments.E.optimizer.lr=V`, a new V each time (DVC reruns codedeps, which checks
   the whole params.yaml, then train@E, evaluate@E and the report);
2. `dvc repro -f -s train@E evaluate@E report`: the same three stages, forced, each alone (what
   `dvc repro` runs after an edit of E's params, without DVC's experiment work);
3. the stages' commands alone: `python -m pipeline.train E`, `python -m pipeline.evaluate E`,
   `python -m pipeline.report`;
4. a no-op `dvc repro`.

The table compares each against the targets of issue 24: the `dvc exp run` at most the training's
seconds + 8 s, the same three stages by `dvc repro` at most training + 4 s, a no-op at most 1.5 s.
The stage commands' `python` and `dvc` are this interpreter's; the MLflow store is the copy's own.
Nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import files  # noqa: E402
TARGETS = {"exp_run": 8.0, "repro": 4.0}  # seconds over the training's own; issue 24
NOOP_TARGET = 1.5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode:
        raise SystemExit(f"error: `{' '.join(cmd)}` failed with exit code {result.returncode}:\n{result.stdout[-2000:]}")
    return time.perf_counter() - start


def train_seconds(workspace: Path, experiment: str) -> float:
    return json.loads((workspace / "runs" / f"{experiment}.json").read_text())["train_seconds"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def measure(workspace: Path, experiment: str, repeats: int) -> dict[str, list[tuple[float, float | None]]]:
    """{what: [(wall seconds, training seconds or None), ...]} for each command above."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    dvc = [sys.executable, "-m", "dvc"]
    python = [sys.executable, "-m"]
    results: dict[str, list[tuple[float, float | None]]] = {}

    def record(key: str, cmd: list[str], training: bool) -> None:
        wall = timed(cmd, workspace, env)
        results.setdefault(key, []).append((wall, train_seconds(workspace, experiment) if training else None))
        log(f"  {key}: {wall:.2f} s")

    log(f"warm-up: `python -m pipeline.train {experiment}` (creates the copy's MLflow store; not counted)")
    timed([*python, "pipeline.train", experiment], workspace, env)
    log(f"{repeats} x `dvc exp run -S experiments.{experiment}.optimizer.lr=V`")
    for index in range(repeats):  # a new value each time: DVC would otherwise find the run already done
        record("exp_run", [*dvc, "exp", "run", "-S", f"experiments.{experiment}.optimizer.lr={0.011 + 0.001 * index}"],
               training=True)
    log(f"{repeats} x `dvc repro -f -s train@{experiment} evaluate@{experiment} report`")
    for _ in range(repeats):
        record("repro", [*dvc, "repro", "-f", "-s", f"train@{experiment}", f"evaluate@{experiment}", "report"], training=True)
    log(f"{repeats} x each stage's command alone")
    for _ in range(repeats):
        record("train", [*python, "pipeline.train", experiment], training=True)
        record("evaluate", [*python, "pipeline.evaluate", experiment], training=False)
        record("report", [*python, "pipeline.report"], training=False)
    subprocess.run([*dvc, "repro"], cwd=workspace, env=env, check=True, stdout=subprocess.DEVNULL)  # all up to date again
    log(f"{repeats} x a no-op `dvc repro`")
    for _ in range(repeats):
        record("noop", [*dvc, "repro"], training=False)
    return results


def table(results: dict, experiment: str) -> list[str]:
    def median(key: str, index: int = 0) -> float:
        return statistics.median(row[index] for row in results[key])

    def all_of(key: str) -> str:
        return ", ".join(f"{wall:.1f}" for wall, _ in results[key])

    lines = ["| what | wall s (median; each run) | of which training s (median) | target | holds |", "|---|---|---|---|---|"]
    for key, what in (("exp_run", f"`dvc exp run -S experiments.{experiment}.optimizer.lr=V`"),
                      ("repro", f"`dvc repro -f -s train@{experiment} evaluate@{experiment} report`")):
        wall, training = median(key), median(key, 1)
        limit = training + TARGETS[key]
        lines.append(f"| {what} | {wall:.1f} ({all_of(key)}) | {training:.2f} | ≤ training + {TARGETS[key]:g} s = {limit:.1f} "
                     f"| {'yes' if wall <= limit else '**no**'} |")
    for key, what in (("train", f"`python -m pipeline.train {experiment}`"), ("evaluate", f"`python -m pipeline.evaluate {experiment}`"),
                      ("report", "`python -m pipeline.report`")):
        training = f"{median(key, 1):.2f}" if key == "train" else ""
        lines.append(f"| {what} alone | {median(key):.1f} ({all_of(key)}) | {training} | | |")
    noop = median("noop")
    lines.append(f"| no-op `dvc repro` | {noop:.2f} ({all_of('noop')}) | | ≤ {NOOP_TARGET:g} s | {'yes' if noop <= NOOP_TARGET else '**no**'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True, help="a checkout where `dvc repro` has run")
    parser.add_argument("--experiment", default="softmax_digits")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=files.bench_report, default=ROOT / "bench" / "results" / "iteration.md")
    args = parser.parse_args()
    source = args.workspace.resolve()
    if not (source / "runs" / f"{args.experiment}.json").exists():
        raise SystemExit(f"error: --workspace {source}: no runs/{args.experiment}.json; run `dvc repro` there first")
    commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        log(f"copying {source} (without .venv) to {workspace}")
        # the MLflow store stays behind: it names its artifact folder by absolute path, which a copy must not share
        shutil.copytree(source, workspace, symlinks=True,
                        ignore=shutil.ignore_patterns(".venv", "mlflow.db", "mlflow.db.lock", "mlruns"))
        results = measure(workspace, args.experiment, args.repeats)
    lines = [
        f"# One experiment's iteration: {args.experiment}",
        "",
        f"`python bench/iteration.py --workspace ... --experiment {args.experiment} --repeats {args.repeats}` at commit "
        f"{commit}, {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}. Wall seconds; training seconds from runs/{args.experiment}.json.",
        "",
        *table(results, args.experiment),
        "",
    ]
    files.write_report(args.out, "\n".join(lines))
    print("\n".join(lines))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
