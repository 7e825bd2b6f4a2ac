"""The project's benchmark: one command, a table in BENCHMARKS.md.

    python bench/benchmarks.py [--out BENCHMARKS.md] [--loop-repeats 9] [--no-parallel] [--keep DIR]

What it does, each step printed as it goes:

1. `git clone` of this repository's HEAD (commit first: work in progress is not measured) into a
   temporary folder, then the whole default `dvc repro` there (prepare, scorer, baselines, every experiment's
   train and evaluate, report), with this interpreter's environment on PATH and its own MLflow store.
   Every stage process appends its start-up, peak memory and heavy imports to a file
   (pipeline/stagestats.py, switched on by the MEDL_STAGE_STATS variable). Also read: each experiment's
   training seconds and throughput (runs/EXPERIMENT.json) and whether every target of
   reports/comparison.md holds.
2. A no-op `dvc repro` in the clone, timed --noop-repeats times; then one experiment's iteration
   (bench/iteration.py on the clone: `dvc exp run -S`, the same stages by `dvc repro`, each stage alone).
3. The import floor of each stage: a fresh `python -c "import <the heavy packages it imported>"`,
   timed 3 times (median), beside the stage's start-up (process start to the stage's own work: a train
   stage's training loop starting, an evaluate stage's test-split work, the scorer's training; prepare
   and report: their main() entered).
4. The training loop against a bare stock Lightning Trainer and a plain PyTorch loop, mlp_digits and cnn_digits
   (bench/train_loop.py, run in the clone on its prepared data).
5. The same pipeline from a second clean clone with `dvc exp run --queue` and `dvc queue start -j 2`
   (bench/parallel.py), unless --no-parallel.

Timings are wall seconds on the machine the table names; nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
STATS_ENV = "MEDL_STAGE_STATS"
GIB = 1024.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def env_with_venv() -> dict:
    """This interpreter's bin folder first on PATH (dvc, python), one torch thread per intra-op pool
    left to the pipeline's own settings."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own default store (its mlflow.db)
    env.pop(STATS_ENV, None)
    return env


def run_streaming(cmd: list[str], cwd: Path, env: dict, prefix: str = "  ") -> float:
    """Run a command, echoing its output lines (DVC's stage headers, the progress bars' last lines),
    and return its wall seconds; raise on a non-zero exit."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        for part in line.rstrip("\n").split("\r")[-1:]:  # a progress bar's redraws: the last only
            if part.strip():
                print(f"{prefix}{part}", flush=True)
    if process.wait():
        raise SystemExit(f"error: `{' '.join(cmd)}` failed with exit code {process.returncode} in {cwd}")
    return time.perf_counter() - start


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def clone(dest: Path) -> str:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return subprocess.run(["git", "-C", str(dest), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------------------------------------
# Reading what the pipeline wrote


def stage_records(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        marks = record["marks"]
        record["startup"] = marks.get("work", marks.get("main", 0.0))
    return records


def targets(report: Path) -> tuple[int, int]:
    """(targets holding, targets in all) from reports/comparison.md's Targets table."""
    text = report.read_text().split("## Targets", 1)[-1]
    cells = [line.rsplit("|", 2)[-2].strip() for line in text.splitlines() if line.startswith("| ") and line.count("|") >= 5]
    verdicts = [cell for cell in cells if cell in ("yes", "no", "unchecked")]
    return sum(v == "yes" for v in verdicts), len(verdicts)


def import_floor(packages: tuple[str, ...], env: dict, repeats: int = 3) -> float:
    code = "import " + ", ".join(packages) if packages else "pass"
    return statistics.median(timed([sys.executable, "-c", code], ROOT, env) for _ in range(repeats))


# ---------------------------------------------------------------------------------------------
# The table


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            memory = f"{int(line.split()[1]) / 1024 ** 2:.0f} GiB"
    versions = []
    for name in ("torch", "lightning", "torchmetrics", "mlflow", "dvc"):
        out = subprocess.run([sys.executable, "-c", f"import importlib.metadata as m; print(m.version('{name}'))"],
                             capture_output=True, text=True)
        versions.append(f"{name} {out.stdout.strip() or '?'}")
    return (f"CPU {cpu}, {os.cpu_count()} cores, {memory} memory, no GPU used; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}; " + ", ".join(versions))


def experiment_rows(clone_dir: Path, records: list[dict], floors: dict) -> list[str]:
    by_stage = {r["stage"]: r for r in records if r["rank"] == 0}
    names = [s.split("@", 1)[1] for s in by_stage if s.startswith("train@")]
    lines = [
        "| experiment | train s | throughput | train start-up s | import floor s | over floor s | train peak MiB | "
        "evaluate s | evaluate start-up s | evaluate peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        train, evaluate = by_stage[f"train@{name}"], by_stage.get(f"evaluate@{name}")
        run = json.loads((clone_dir / "runs" / f"{name}.json").read_text())
        floor = floors[tuple(train["imported"])]
        unit = run.get("throughput_unit", "").replace(" per second", "/s")
        lines.append(
            f"| {name} | {run['train_seconds']:.1f} | {run.get('throughput', float('nan')):,.0f} {unit} | "
            f"{train['startup']:.2f} | {floor:.2f} | {train['startup'] - floor:+.2f} | {train['peak_rss_mib']:.0f} | "
            + (f"{evaluate['exit']:.1f} | {evaluate['startup']:.2f} | {evaluate['peak_rss_mib']:.0f} |" if evaluate else "| | |")
        )
    return lines


def stage_kind_rows(records: list[dict], floors: dict) -> list[str]:
    """Per stage kind: processes, start-up seconds (sum, min-max), its floor, and the worst excess."""
    kinds: dict[str, list[dict]] = {}
    for record in records:
        kinds.setdefault(record["stage"].split("@", 1)[0] or record["argv"][0], []).append(record)
    lines = [
        "| stage | processes | heavy imports | start-up s (min-max) | import floor s (min-max) | worst start-up over its floor s | "
        "start-up s, all processes | peak MiB (max) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for kind, group in kinds.items():
        startups = [r["startup"] for r in group]
        floor_values = [floors[tuple(r["imported"])] for r in group]
        marked = [r["startup"] - floors[tuple(r["imported"])] for r in group if "work" in r["marks"]]
        imported = sorted({p for r in group for p in r["imported"]})
        lines.append(
            f"| {kind} | {len(group)} | {', '.join(imported) or '-'} | {min(startups):.2f}-{max(startups):.2f} | "
            f"{min(floor_values):.2f}-{max(floor_values):.2f} | {f'{max(marked):+.2f}' if marked else '-'} | {sum(startups):.1f} | "
            f"{max(r['peak_rss_mib'] for r in group):.0f} |"
        )
    return lines


def generative_rows(records: list[dict]) -> list[str]:
    lines = [
        "| experiment | evaluate s (process) | start-up s | sampling s | scoring s (FID, KID, classes, family metrics, grid) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in records:
        marks = r["marks"]
        if "sampling" in marks and "sampled" in marks:
            lines.append(
                f"| {r['stage'].split('@', 1)[-1]} | {r['exit']:.1f} | {r['startup']:.2f} | "
                f"{marks['sampled'] - marks['sampling']:.2f} | {r['exit'] - marks['sampled']:.2f} |"
            )
    return lines


def loop_rows(loops: dict) -> list[str]:
    lines = [
        "| experiment | plain ms / step | bare Lightning ms / step | ours ms / step | **ours / bare, per step** (target <= 1.03) | "
        "paired-run median ours / bare | ours / plain | bare / plain | bare, raw torch optimizer / plain | "
        "ours / plain per epoch with validation |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in loops.items():
        raw = f"{s['raw_ratio'][0]:.3f}" if "raw_ratio" in s else "-"
        lines.append(
            f"| {name} | {s['plain_step'][0] * 1e3:.3f} | {s['bare_step'][0] * 1e3:.3f} | {s['ours_step'][0] * 1e3:.3f} | "
            f"**{s['ours_bare_ratio'][0]:.3f}** | {s['ours_bare_paired_ratio'][0]:.3f} | {s['step_ratio'][0]:.3f} | "
            f"{s['bare_ratio'][0]:.3f} | {raw} | {s['epoch_ratio'][0]:.3f} |"
        )
    return lines


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=files.bench_report, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--noop-repeats", type=int, default=5)
    parser.add_argument("--loop-repeats", type=int, default=9, help="bench/train_loop.py --repeats")
    parser.add_argument("--iteration-repeats", type=int, default=3, help="bench/iteration.py --repeats")
    parser.add_argument("--no-parallel", action="store_true", help="skip the `dvc queue start -j 2` run")
    parser.add_argument("--jobs", type=int, default=2, help="queue workers for the parallel run")
    parser.add_argument("--keep", type=Path, help="work in this (new or empty) folder and keep it")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"error: --keep {args.keep}: not empty; give a new or empty folder")
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        log("note: the working tree has uncommitted changes; the benchmark measures the committed HEAD")
    env = env_with_venv()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        clone_dir = work / "clone"
        commit = clone(clone_dir)
        stats = work / "stages.jsonl"
        log(f"1/5 whole default `dvc repro` in a clean clone of {commit} ({clone_dir})")
        repro_env = {**env, STATS_ENV: str(stats)}
        full = run_streaming(["dvc", "repro"], clone_dir, repro_env)
        log(f"    done in {full:.1f} s")
        records = stage_records(stats)
        held, total = targets(clone_dir / "reports" / "comparison.md")

        log(f"2/5 no-op `dvc repro`, {args.noop_repeats} times")
        noops = [timed(["dvc", "repro"], clone_dir, env) for _ in range(args.noop_repeats)]
        status = subprocess.run(["dvc", "status"], cwd=clone_dir, env=env, capture_output=True, text=True).stdout.strip()
        iteration_md = clone_dir / "bench" / "results" / "iteration.md"  # the clone's: a report goes to its bench/results
        run_streaming([sys.executable, "bench/iteration.py", "--workspace", str(clone_dir), "--repeats",
                       str(args.iteration_repeats), "--out", str(iteration_md)], clone_dir, env, prefix="    ")
        iteration = iteration_md.read_text()

        log("3/5 import floors of the stages' heavy imports")
        floors = {}
        for packages in sorted({tuple(r["imported"]) for r in records}):
            floors[packages] = import_floor(packages, env)
            log(f"    {', '.join(packages) or '(bare interpreter)'}: {floors[packages]:.2f} s")

        log("4/5 training loop against a plain PyTorch loop (bench/train_loop.py)")
        loops = {}
        for name in ("mlp_digits", "cnn_digits"):
            out_json = clone_dir / "bench" / "results" / f"loop-{name}.json"
            run_streaming([sys.executable, "bench/train_loop.py", "--experiment", name, "--repeats", str(args.loop_repeats),
                           "--profile-epochs", "6", "--floors", "--out", str(out_json.with_suffix(".md")), "--json", str(out_json)],
                          clone_dir, env, prefix="    ")
            loops[name] = json.loads(out_json.read_text())

        parallel = None
        if not args.no_parallel:
            log(f"5/5 the same pipeline from a second clean clone, `dvc exp run --queue` + `dvc queue start -j {args.jobs}`")
            sys.path.insert(0, str(ROOT / "bench"))
            from parallel import run_parallel

            second = work / "clone-parallel"
            clone(second)
            threads = max(1, (os.cpu_count() or 1) // args.jobs)  # see bench/parallel.py: threads x workers <= cores
            parallel = run_parallel(second, jobs=args.jobs, python_bin_dir=Path(sys.executable).parent,
                                    source=clone_dir, threads=threads)

        text = render(commit, full, records, held, total, noops, status, floors, loops, parallel, clone_dir, iteration)
    files.write_report(args.out, text)
    log(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


def render(commit, full, records, held, total, noops, status, floors, loops, parallel, clone_dir, iteration) -> str:
    startup_total = sum(r["startup"] for r in records)
    process_total = sum(r["exit"] for r in records)
    peak = max(records, key=lambda r: r["peak_rss_mib"])
    train_total = sum(json.loads(p.read_text())["train_seconds"] for p in sorted((clone_dir / "runs").glob("*.json")))
    bare = floors.get((), None)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python bench/benchmarks.py` on {time.strftime('%Y-%m-%d')}, commit {commit}.",
        "",
        f"Machine: {machine()}.",
        "",
        "## Summary",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| whole default `dvc repro`, clean clone, {len([r for r in records if r['stage'].startswith('train@')])} experiments, "
        f"prepare included (no `pip install`) | {full:.0f} s ({full / 60:.1f} min) | at most 300 s: "
        f"{'met' if full <= 300 else 'NOT met'} |",
        f"| quality targets of reports/comparison.md holding after that run | {held} of {total} | all: "
        f"{'met' if held == total and total else 'NOT met'} |",
        f"| no-op `dvc repro` (median of {len(noops)}; min-max) | {statistics.median(noops):.2f} s "
        f"({min(noops):.2f}-{max(noops):.2f}) | at most 1.5 s: {'met' if statistics.median(noops) <= 1.5 else 'NOT met'} |",
        f"| stage processes | {len(records)} | |",
        f"| seconds the pipeline's stage processes spend starting (process start to the stage's own work), all summed "
        f"| {startup_total:.0f} s | |",
        f"| seconds in stage processes, all summed (start-up + work) | {process_total:.0f} s | |",
        f"| seconds training (train_seconds of every runs/*.json) | {train_total:.0f} s | |",
        f"| DVC's own time (whole repro minus the stage processes) | {full - process_total:.0f} s | |",
        f"| worst stage start-up over the import floor of what it imports | "
        f"{max(r['startup'] - floors[tuple(r['imported'])] for r in records if 'work' in r['marks']):+.2f} s | within 1 s |",
        f"| peak resident memory of any stage process | {peak['peak_rss_mib']:.0f} MiB ({peak['stage']}) | under 2 GiB: "
        f"{'met' if peak['peak_rss_mib'] < 2 * GIB else 'NOT met'} |",
    ]
    for name, s in loops.items():
        lines.append(f"| training loop `{name}`: ours / bare stock Lightning Trainer per step | {s['ours_bare_ratio'][0]:.3f} | "
                     f"at most 1.03: {'met' if s['ours_bare_ratio'][0] <= 1.03 else 'NOT met'} |")
        lines.append(f"| training loop `{name}`: ours / plain PyTorch per step | {s['step_ratio'][0]:.3f} | reported |")
    if parallel:
        total_parallel = parallel["seconds"]["total"]
        lines.append(f"| the same pipeline with `dvc exp run --queue` + `dvc queue start -j {parallel['jobs']}` "
                     f"(OMP_NUM_THREADS={parallel['omp_num_threads']}), clean clone | {total_parallel:.0f} s "
                     f"({total_parallel / 60:.1f} min) | reported |")
    lines += [
        "",
        f"`dvc status` after the no-op runs: {status.splitlines()[-1] if status else '(no output)'}",
        "",
        iteration.replace("# One experiment's iteration", "## One experiment's iteration", 1).rstrip(),
        "",
        "## Per experiment",
        "",
        "Train s: the fit's wall seconds (runs/EXPERIMENT.json). Throughput: training samples (epochs x training split; "
        "graph families: training nodes x epochs; reinforcement learning: environment steps) per second of the fit. "
        "Start-up: process start to the training loop starting (imports, MLflow run, data, Trainer set-up). "
        "Import floor: a fresh `python -c \"import ...\"` of the heavy packages the stage imported (median of 3). "
        "Evaluate s: the evaluate stage process, start to exit.",
        "",
        *experiment_rows(clone_dir, records, floors),
        "",
        "## Per stage kind",
        "",
        f"Heavy imports: the packages among {', '.join(_heavy())} in the process at exit. A bare interpreter "
        f"starts in {bare:.2f} s." if bare is not None else "",
        "",
        *stage_kind_rows(records, floors),
        "",
        "## Generative models: the evaluate stage's cost",
        "",
        "Sampling: the sampler's fit (autoencoders: a Gaussian on the training codes) and drawing as many samples as "
        "the test split has; scoring: FID and KID (torchmetrics) on the scorer CNN's features, the classes of the "
        "samples, the family's own test metrics, the sample grid and the MLflow logging.",
        "",
        *generative_rows(records),
        "",
        "## Training loop against a bare Lightning Trainer and plain PyTorch",
        "",
        "bench/train_loop.py: the same model, data, batches and optimizer, one torch thread; ours is the Trainer "
        "`python -m pipeline.train` builds (progress bar, checkpoint and learning-curve callbacks, MLflow logger).",
        "",
        *loop_rows(loops),
        "",
        "The target is ours at most 1.03 x a bare stock Lightning Trainer (no logger, callbacks, progress bar or "
        "checkpoint) on the same model, data, batches and optimizer, both on Lightning's automatic optimization "
        "(its closure); the plain-PyTorch ratio is reported beside it. What is left of the gap to plain PyTorch is "
        "Lightning's own loop: the raw torch optimizer and `loss.backward()` inside it (no backward or step hooks, "
        "no global step counted, so not a usable path) show what batch fetch, hooks and progress tracking cost. Per "
        "epoch with validation, ours also writes a checkpoint and logs the epoch's metrics to MLflow (SQLite), "
        "which the plain loop does not do; where an epoch goes on our path (cProfile's cumulative times over 6 "
        "epochs on the real split; a profile inflates Python-heavy parts, so read the shares):",
        "",
    ]
    for name, s in loops.items():
        lines += [f"| `{name}`: part of an epoch | ms / epoch (profiled) | share |", "|---|---:|---:|"]
        lines += [f"| {label} | {seconds * 1e3:.1f} | {share:.0%} |" for label, seconds, share in s.get("epoch_profile", [])]
        lines.append("")
    lines += [
        "",
    ]
    if parallel:
        from parallel import table as parallel_table

        lines += [
            f"## Parallel: `dvc exp run --queue`, `dvc queue start -j {parallel['jobs']}`",
            "",
            "bench/parallel.py in a second clean clone: prepare, scorer and baselines in the workspace, then the experiments split "
            f"over {len(parallel['groups'])} queued DVC experiments by their training seconds in the first clone, run "
            f"{parallel['jobs']} at a time with OMP_NUM_THREADS={parallel['omp_num_threads']} (two trainings with a "
            "thread per core each on the same cores run many times slower), then their results collected into the "
            "workspace and `dvc repro`, which runs only the report.",
            "",
            parallel_table(parallel),
            "",
            f"All metrics: {parallel['all_metrics']}; targets not met: {len(parallel['report_targets_not_met'] or [])}; "
            f"stages the final `dvc repro` ran: {', '.join(parallel['stages_ran_in_final_repro']) or 'none'}; "
            f"`dvc status` clean: {parallel['dvc_status_clean']}; MLflow runs per experiment: "
            f"{sorted(set(parallel['mlflow_runs'].values())) if parallel['mlflow_runs'] else '-'}.",
            "",
        ]
    return "\n".join(line for line in lines) + "\n"


def _heavy() -> tuple[str, ...]:
    sys.path.insert(0, str(ROOT))
    from pipeline.stagestats import HEAVY

    return HEAVY


if __name__ == "__main__":
    sys.exit(main())
