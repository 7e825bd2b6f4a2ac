"""Wall time of the whole default pipeline run in parallel through DVC's queue, from a clean clone.

    python bench/parallel.py [--jobs 2] [--keep] [--costs-from CHECKOUT] [--threads N] [--poll S]

Clones the committed HEAD into a temporary folder and, there:

1. `dvc repro prepare scorer baselines` in the workspace: the inputs every experiment (and the report) shares, now in the
   clone's DVC cache (a queued copy checks them out from it instead of rebuilding them);
2. one `dvc exp run --queue train@A evaluate@A train@B evaluate@B ...` per worker, the experiments
   split by cost (`balance`), then `dvc queue start -j JOBS`, polling `dvc queue status` until all
   queued experiments have finished;
3. the queued experiments' results brought into the workspace (`collect_results`: their dvc.lock
   entries, git-tracked outputs from their exp commits, `dvc checkout` for the cached ones), then a
   plain `dvc repro`, which runs only `report`. (DVC's run-cache cannot do this step: DVC saves no
   run-cache entry for these stages, see `collect_results`; a plain `dvc repro` would retrain all.)

Threads: every stage uses params.yaml's `trainer.threads` torch threads (2 by default); two such trainings on
2 cores oversubscribe them and run many times slower (BENCHMARKS.md has the figures). The CLI
therefore sets the clone's `threads` (and OMP_NUM_THREADS, for any other process) to cores // jobs (at
least 1) unless OMP_NUM_THREADS is already set or `--threads` says otherwise (`--threads 0`: leave both
alone). Results depend on the thread count, so the metrics of such a run are those of that count.

The stage commands' `python` is this interpreter's (its bin directory is put first on PATH).
MLflow runs land in the clone's own mlflow.db: pipeline/core/tracking.py maps a queued copy under
`.dvc/tmp/exps/` back to the repository root. Prints a markdown table of the phase timings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# Seconds per experiment on top of its training time: two stage starts (train and evaluate), each
# importing torch, Lightning and MLflow (~5 s on a 2-core machine), plus evaluation itself.
STAGE_OVERHEAD_S = 10.0
EXP_PREFIX = "parallel"


def experiment_names(repo: Path) -> list[str]:
    """The experiments of params.yaml, in file order."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    return list(params["experiments"])


def train_seconds(repo: Path, names: list[str]) -> dict[str, float] | None:
    """train_seconds of every experiment from repo's runs/*.json, or None if any is missing."""
    found = {}
    for name in names:
        path = repo / "runs" / f"{name}.json"
        try:
            found[name] = float(json.loads(path.read_text())["train_seconds"])
        except (OSError, KeyError, ValueError, TypeError):
            return None
    return found


def balance(names: list[str], seconds: dict[str, float] | None, jobs: int) -> list[list[str]]:
    """Split the experiments into `jobs` groups of about equal cost.

    With measured training times: greedy longest-first, each experiment (cost train_seconds +
    STAGE_OVERHEAD_S) to the group with the least cost so far. Without them: params.yaml order,
    round robin (every experiment costs the same). Groups keep params.yaml order inside; empty
    groups are dropped."""
    jobs = max(1, min(jobs, len(names)))
    groups: list[list[str]] = [[] for _ in range(jobs)]
    load = [0.0] * jobs
    if seconds is None:
        order, cost = names, {name: 1.0 for name in names}
    else:
        cost = {name: seconds[name] + STAGE_OVERHEAD_S for name in names}
        order = sorted(names, key=lambda name: -cost[name])
    for name in order:
        target = min(range(jobs), key=lambda index: (load[index], index))
        groups[target].append(name)
        load[target] += cost[name]
    position = {name: index for index, name in enumerate(names)}
    return [sorted(group, key=position.__getitem__) for group in groups if group]


def clean_env(python_bin_dir: Path | None, threads: int | None = None) -> dict[str, str]:
    """The environment for git and dvc: no MLFLOW_*/DVC_* overrides, python_bin_dir first on PATH;
    OMP_NUM_THREADS=threads if given (else as inherited: the pipeline itself does not set it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    bin_dir = python_bin_dir or Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: list[str], cwd: Path, env: dict, capture: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=capture)
    if result.returncode != 0:
        output = (result.stdout or "") + (result.stderr or "") if capture else ""
        raise RuntimeError(f"`{' '.join(args)}` exited {result.returncode} in {cwd}\n{output[-4000:]}")
    return result


def wait_for_queue(clone: Path, env: dict, names: list[str], poll: float = 15.0, timeout: float = 3600.0) -> str:
    """Poll `dvc queue status` until none of the named experiments is queued or running; print each
    new status of them, and the stage each running one is on. Raises if one did not succeed (with its
    `dvc queue logs`). Each poll starts 1 + running `dvc` processes (~1 s of CPU each), CPU the
    workers lose on a small machine: hence the long default interval."""
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    stage: dict[str, str] = {}
    start = time.monotonic()
    while True:
        status = run(["dvc", "queue", "status"], clone, env).stdout
        ours = {name: line.strip() for line in status.splitlines() for name in names if f" {name} " in f" {line} "}
        for name, line in ours.items():
            if last.get(name) != line:
                log(f"  queue +{time.monotonic() - start:5.0f} s | {line}")
            if "Running" in line:  # the stage the worker is on, from its log
                current = current_stage(clone, env, name)
                if current and stage.get(name) != current:
                    log(f"  queue +{time.monotonic() - start:5.0f} s | {name}: {current}")
                    stage[name] = current
        last.update(ours)
        if len(ours) == len(names) and not any(w in line for line in ours.values() for w in ("Queued", "Running")):
            break
        if time.monotonic() > deadline:
            subprocess.run(["dvc", "queue", "kill", *names], cwd=clone, env=env, capture_output=True)
            raise RuntimeError(f"queued experiments still running after {timeout:.0f} s:\n{status}")
        time.sleep(poll)
    failed = [name for name, line in ours.items() if "Success" not in line]
    if failed:
        logs = "\n".join(
            subprocess.run(["dvc", "queue", "logs", name], cwd=clone, env=env, capture_output=True, text=True).stdout[-3000:]
            for name in failed
        )
        raise RuntimeError(f"queued experiments failed: {failed}\n{status}\n{logs}")
    return status


def exp_ref(clone: Path, env: dict, name: str) -> str:
    """The git ref of the DVC experiment `name` (refs/exps/../<name>)."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], clone, env).stdout.split()
    found = [ref for ref in refs if ref.rsplit("/", 1)[-1] == name]
    if len(found) != 1:
        raise RuntimeError(f"experiment {name}: {len(found)} refs under refs/exps")
    return found[0]


def collect_results(clone: Path, env: dict, exp_names: list[str], groups: list[list[str]]) -> int:
    """Bring every queued experiment's train/evaluate results into the workspace, without rerunning them.

    DVC's run-cache cannot do it here: DVC saves no run-cache entry for a stage with a `cache: false`
    output that is not a metric or plot, and every train and evaluate stage has such outputs
    (plots/learning_curves/..., plots/predictions/...). Instead, per experiment: its dvc.lock entries
    of its own train@/evaluate@ stages go into the workspace dvc.lock, its git-tracked outputs of
    those stages are checked out from its commit, and `dvc checkout` restores the cached outputs
    (models/...) from the DVC cache the queued copies share with the workspace.
    Returns the number of stages collected."""
    lock_path = clone / "dvc.lock"
    merged = yaml.safe_load(lock_path.read_text())
    collected = 0
    for exp_name, group in zip(exp_names, groups):
        ref = exp_ref(clone, env, exp_name)
        lock = yaml.safe_load(run(["git", "show", f"{ref}:dvc.lock"], clone, env).stdout)
        tracked = set(run(["git", "ls-tree", "-r", "--name-only", ref], clone, env).stdout.splitlines())
        for name in group:
            for stage in (f"train@{name}", f"evaluate@{name}"):
                entry = lock["stages"][stage]
                merged["stages"][stage] = entry
                collected += 1
                paths = [out["path"] for out in entry.get("outs", [])]
                in_git = [p for p in paths if p in tracked or any(t.startswith(p.rstrip("/") + "/") for t in tracked)]
                if in_git:
                    run(["git", "checkout", ref, "--", *in_git], clone, env)
    lock_path.write_text(yaml.safe_dump(merged, sort_keys=False, width=1000))
    run(["dvc", "checkout"], clone, env)
    return collected


def current_stage(clone: Path, env: dict, name: str) -> str | None:
    """The last `Running stage '...'` line of a queued experiment's `dvc queue logs`, and how many
    stages it has started so far."""
    logs = subprocess.run(["dvc", "queue", "logs", name], cwd=clone, env=env, capture_output=True, text=True).stdout
    started = [line.split("'")[1] for line in logs.splitlines() if line.startswith("Running stage '")]
    return f"stage {len(started)}: {started[-1]}" if started else None


def mlflow_runs(clone: Path) -> dict[str, int]:
    """Runs per experiment tag in the clone's mlflow.db (empty if there is none)."""
    database = clone / "mlflow.db"
    if not database.exists():
        return {}
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT value, COUNT(*) FROM tags WHERE key = 'experiment' GROUP BY value").fetchall()
    return dict(rows)


def run_parallel(clone: Path, jobs: int = 2, python_bin_dir: Path | None = None, source: Path | None = None,
                 threads: int | None = None, poll: float = 15.0) -> dict:
    """Run the full default pipeline in the clean clone `clone`: shared stages in the workspace, the
    train/evaluate stages split over `jobs` queued DVC experiments run `jobs` at a time, then a plain
    `dvc repro` (report only, see collect_results). `source` (default: the clone) holds the runs/*.json
    used to balance the split. `threads`: params.yaml's threads and OMP_NUM_THREADS for every stage (default: as they are).
    Returns timings in seconds and checks."""
    clone = Path(clone).resolve()
    env = clean_env(python_bin_dir, threads)
    if threads:  # the stages take their thread count from params (a dependency DVC tracks), not from the environment
        params = clone / "params.yaml"
        # Every `threads:` key (the default's and any experiment's own), keeping params.yaml's comments.
        text, count = re.subn(r"(?m)^(\s*threads: )\d+", rf"\g<1>{threads}", params.read_text())
        if count == 0:
            raise SystemExit(f"{params}: no `threads:` key to set")
        params.write_text(text)
    names = experiment_names(clone)
    seconds = train_seconds(source or clone, names)
    groups = balance(names, seconds, jobs)
    exp_names = [f"{EXP_PREFIX}-{index + 1}" for index in range(len(groups))]
    timings: dict[str, float] = {}
    total_start = time.perf_counter()

    log("phase 1: dvc repro prepare scorer baselines")
    start = time.perf_counter()
    run(["dvc", "repro", "prepare", "scorer", "baselines"], clone, env)
    timings["prepare_scorer"] = time.perf_counter() - start
    log(f"phase 1 done in {timings['prepare_scorer']:.1f} s")

    log(f"phase 2: queue {len(groups)} experiments, dvc queue start -j {jobs}")
    start = time.perf_counter()
    for exp_name, group in zip(exp_names, groups):
        targets = [f"{stage}@{name}" for name in group for stage in ("train", "evaluate")]
        estimate = f", ~{sum(seconds[n] + STAGE_OVERHEAD_S for n in group):.0f} s" if seconds else ""
        log(f"  {exp_name}: {len(group)} experiments{estimate}: {' '.join(group)}")
        run(["dvc", "exp", "run", "--queue", "--name", exp_name, *targets], clone, env)
    # The workers `dvc queue start` leaves behind inherit its stdout/stderr: not pipes we would wait on.
    started = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=clone, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if started.returncode != 0:
        raise RuntimeError(f"`dvc queue start -j {jobs}` exited {started.returncode}")
    wait_for_queue(clone, env, exp_names, poll=poll)
    timings["queue"] = time.perf_counter() - start
    log(f"phase 2 done in {timings['queue']:.1f} s")

    log("phase 3: collect the queued experiments' results into the workspace, then dvc repro (report)")
    start = time.perf_counter()
    collected = collect_results(clone, env, exp_names, groups)
    timings["collect"] = time.perf_counter() - start
    log(f"  collected {collected} train/evaluate stages in {timings['collect']:.1f} s")
    repro = run(["dvc", "repro"], clone, env)
    timings["final_repro"] = time.perf_counter() - start
    output = repro.stdout + repro.stderr
    ran = [line for line in output.splitlines() if line.startswith("Running stage")]
    restored = [line for line in output.splitlines() if "is cached - skipping run" in line]
    log(f"phase 3 done in {timings['final_repro']:.1f} s: stages run by the final dvc repro: {len(ran)}")
    timings["total"] = time.perf_counter() - total_start

    status = run(["dvc", "status"], clone, env).stdout.strip()
    missing = [name for name in names if not (clone / "metrics" / f"{name}.json").exists()]
    no_model = [name for name in names if not (clone / "models" / name / "best.ckpt").exists()]
    # runs/NAME.json: written where the training ran (a queued experiment's copy keeps its own)
    summaries = [clone / "runs" / f"{name}.json" for name in names]
    elsewhere = sorted({json.loads(path.read_text()).get("tracking_uri") for path in summaries if path.exists()}
                       - {f"sqlite:///{clone / 'mlflow.db'}"})
    report = clone / "reports" / "comparison.md"
    return {
        "jobs": jobs,
        "poll_seconds": poll,
        "omp_num_threads": env.get("OMP_NUM_THREADS", "unset"),
        "groups": dict(zip(exp_names, groups)),
        "balanced_by": "train_seconds" if seconds else "params.yaml order",
        "seconds": timings,
        "metrics_missing": missing,
        "all_metrics": not missing,
        "models_missing": no_model,
        "tracking_uris_not_the_clone_store": elsewhere,
        "report_exists": report.exists(),
        "report_targets_not_met": [line for line in report.read_text().splitlines() if line.rstrip().endswith("| no |")]
        if report.exists() else None,
        "stages_ran_in_final_repro": [line.split("'")[1] if "'" in line else line for line in ran],
        "stages_restored_in_final_repro": len(restored),
        "dvc_status_clean": status in ("", "Data and pipelines are up to date."),
        "dvc_status": status,
        "mlflow_runs": mlflow_runs(clone),
    }


def table(result: dict) -> str:
    seconds = result["seconds"]
    rows = [
        ("`dvc repro prepare scorer baselines` (workspace)", seconds["prepare_scorer"]),
        (f"{len(result['groups'])} × `dvc exp run --queue train@… evaluate@…`, `dvc queue start -j {result['jobs']}`", seconds["queue"]),
        ("collect results (`git checkout` from the exp refs, dvc.lock entries, `dvc checkout`) + `dvc repro` (report only)", seconds["final_repro"]),
        ("total (after the clone)", seconds["total"]),
    ]
    lines = ["| phase | wall s |", "|---|---|", *(f"| {name} | {value:.1f} |" for name, value in rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="queued experiments and queue workers (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone and print its path")
    parser.add_argument("--costs-from", type=Path, default=None,
                        help="a checkout whose runs/*.json give the train_seconds to balance by "
                             "(default: this repository; params.yaml order if it has none)")
    parser.add_argument("--poll", type=float, default=15.0, help="seconds between `dvc queue status` polls (default 15)")
    parser.add_argument("--threads", type=int, default=None,
                        help="params.yaml's threads and OMP_NUM_THREADS for every stage (default: the environment's "
                             "OMP_NUM_THREADS, else cores // jobs; 0: leave both, and JOBS workers oversubscribe the cores)")
    args = parser.parse_args()
    env = clean_env(None)
    source = Path(run(["git", "rev-parse", "--show-toplevel"], ROOT, env).stdout.strip())
    tmp = Path(tempfile.mkdtemp(prefix="dvc-parallel-"))
    clone = tmp / "clone"
    try:
        start = time.perf_counter()
        log(f"git clone {source} {clone}")
        run(["git", "clone", "-q", str(source), str(clone)], ROOT, env)
        clone_s = time.perf_counter() - start
        threads = args.threads
        if threads is None and not os.environ.get("OMP_NUM_THREADS"):
            threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
        result = run_parallel(clone, args.jobs, source=args.costs_from or source, threads=threads or None, poll=args.poll)
        result["seconds"]["clone"] = clone_s
        print()
        print(table(result))
        print()
        for exp_name, group in result["groups"].items():
            print(f"{exp_name}: {', '.join(group)}")
        print(f"OMP_NUM_THREADS: {result['omp_num_threads']}; balanced by {result['balanced_by']}; all metrics: {result['all_metrics']}; "
              f"report: {result['report_exists']}; final repro ran: {result['stages_ran_in_final_repro']}, "
              f"restored {result['stages_restored_in_final_repro']}; dvc status clean: {result['dvc_status_clean']}")
        runs = result["mlflow_runs"]
        print(f"MLflow runs in the clone's mlflow.db: {sum(runs.values())} for {len(runs)} experiments")
        if not result["dvc_status_clean"]:
            print(result["dvc_status"])
        if not result["all_metrics"]:
            sys.exit(f"missing metrics: {result['metrics_missing']}")
    finally:
        if args.keep:
            print(f"kept {clone}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
