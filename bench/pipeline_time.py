"""Wall time of the whole default `dvc repro` from a clean clone, and of a no-op `dvc repro`.

    python bench/pipeline_time.py [--repeats 3] [--out bench/results/pipeline_time.md] [--targets STAGE ...]

Clones the committed HEAD into a temporary folder, runs `dvc repro` there (prepare, every train and
evaluate stage, report), then `dvc repro` again with nothing changed, `--repeats` times. With
--targets, `dvc repro TARGETS` instead (those stages and what they depend on), e.g. the five
experiments of chapters 2 to 6:

    python bench/pipeline_time.py --repeats 2 --out bench/results/pipeline_time_five.md --targets \
        evaluate@linear_diabetes evaluate@logistic_breast_cancer evaluate@softmax_digits evaluate@mlp_digits evaluate@cnn_digits

The stage commands' `python` is this interpreter. The MLflow store is the clone's own mlflow.db.
"""

from __future__ import annotations

import argparse
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


def timed(args: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=files.bench_report, default=ROOT / "bench" / "results" / "pipeline_time.md")
    parser.add_argument("--targets", nargs="+", default=[], metavar="STAGE", help="dvc repro these stages only")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    dvc = [sys.executable, "-m", "dvc", "repro", *args.targets]
    what = f"`dvc repro {' '.join(args.targets)}`" if args.targets else "`dvc repro`"
    full, noop = [], []
    for index in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            full.append(timed(dvc, clone, env))
            noop.append(timed(dvc, clone, env))
        print(f"[{index + 1}/{args.repeats}] full {full[-1]:.1f} s, no-op {noop[-1]:.2f} s", flush=True)
    lines = [
        "# Pipeline wall time",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}.",
        f"Command: `python bench/pipeline_time.py --repeats {args.repeats}"
        f"{' --targets ' + ' '.join(args.targets) if args.targets else ''}` (a fresh clone of HEAD per repeat).",
        "",
        "| measurement | min s | median s | max s |",
        "|---|---|---|---|",
        f"| {what}, clean clone ({'these stages and their inputs' if args.targets else 'all stages'}) | {min(full):.1f} | "
        f"{statistics.median(full):.1f} | {max(full):.1f} |",
        f"| {what}, nothing changed | {min(noop):.2f} | {statistics.median(noop):.2f} | {max(noop):.2f} |",
        "",
    ]
    files.write_report(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
