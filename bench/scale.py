"""Training throughput on this machine's CPU: 1 process against 2 DDP processes, 32-true against bf16-mixed.

    python bench/scale.py [--experiment mlp_digits] [--epochs 20] [--repeats 3] [--out bench/results/scale.md]

Copies the project (code and params, no outputs) to a temporary folder, prepares the data once, then
runs the real train stage (`python -m pipeline.train EXPERIMENT`) for each setting, the settings in
alternating order each round. Samples per second = epochs x training-split size / the stage's own
`train_seconds` (Trainer.fit: training, validation, checkpoints, logging; not process start-up).
The batch size is per device, so 2 DDP processes take optimizer steps of twice the samples.
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
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import files  # noqa: E402
OUTPUTS = ("data", "models", "metrics", "plots", "reports", "dvc.lock", "mlflow.db", "dvc_plots", "bench")

SETTINGS = {
    "1 process, 32-true": {"devices": 1, "strategy": "auto", "precision": "32-true"},
    "1 process, bf16-mixed": {"devices": 1, "strategy": "auto", "precision": "bf16-mixed"},
    "2 DDP processes (gloo), 32-true": {"devices": 2, "strategy": "ddp", "precision": "32-true"},
    "2 DDP processes (gloo), bf16-mixed": {"devices": 2, "strategy": "ddp", "precision": "bf16-mixed"},
}


def copy_project(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if name.split("/")[0] not in OUTPUTS and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def cpu_info() -> str:
    model, flags = platform.processor() or "unknown", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    shown = {flag: ("yes" if flag in flags else "no") for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}
    return f"{model}, {os.cpu_count()} cores; " + ", ".join(f"{k} {v}" for k, v in shown.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="mlp_digits")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=files.bench_report, default=ROOT / "bench" / "results" / "scale.md")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PYTHONWARNINGS"] = "ignore"
    results: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        project = Path(tmp)
        copy_project(project)
        params_file = project / "params.yaml"
        raw = yaml.safe_load(params_file.read_text())
        experiment = raw["experiments"][args.experiment]
        experiment["max_epochs"] = args.epochs
        subprocess.run([sys.executable, "-m", "pipeline.prepare"], cwd=project, env=env, check=True, capture_output=True)
        train_size = len(__import__("torch").load(project / "data" / "prepared" / experiment["dataset"] / "train.pt")["x"])
        names = list(SETTINGS)
        for round_ in range(args.repeats):
            for name in names if round_ % 2 == 0 else names[::-1]:
                experiment["trainer"] = dict(SETTINGS[name])
                params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
                done = subprocess.run([sys.executable, "-m", "pipeline.train", args.experiment], cwd=project, env=env,
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{name}: the train stage failed\n{done.stderr[-2000:]}")
                summary = json.loads((project / "runs" / f"{args.experiment}.json").read_text())
                results[name].append(args.epochs * train_size / summary["train_seconds"])
                print(f"[{round_ + 1}/{args.repeats}] {name}: {results[name][-1]:.0f} samples/s", flush=True)
    base = statistics.median(results[names[0]])
    lines = [
        f"## Training throughput: `{args.experiment}`, {args.epochs} epochs of {train_size} samples, batch "
        f"{experiment.get('batch_size', raw['defaults']['batch_size'])} per device",
        "",
        f"CPU: {cpu_info()}. Python {platform.python_version()}. Command: `python bench/scale.py --experiment "
        f"{args.experiment} --epochs {args.epochs} --repeats {args.repeats}`; median of {args.repeats} alternating rounds.",
        "",
        "| setting | samples / s (median) | min - max | against 1 process, 32-true |",
        "|---|---:|---:|---:|",
    ]
    for name, values in results.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.0f} | {min(values):.0f} - {max(values):.0f} | {median / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    files.write_report(args.out, text)


if __name__ == "__main__":
    main()
