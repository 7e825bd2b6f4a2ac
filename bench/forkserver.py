"""A stage command's wall time cold and through a warm fork server (pipeline/forkserver.py).

    python bench/forkserver.py [--experiment softmax_digits] [--repeats 5] [--data DIR]

In a temporary copy of the project (its tracked files, the prepared data of --data, default this
checkout's data/prepared, and its own MLflow store), trains the experiment once, then times
`python -m pipeline.evaluate EXPERIMENT` --repeats times cold (MEDL_FORKSERVER=0) and --repeats times
through a server already warm (its own socket directory; stopped at the end). Prints each run's
seconds and the medians. Timings only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_project(dest: Path, data: Path) -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if (ROOT / name).is_file() and name.split("/")[0] not in ("data", "models", "metrics", "plots", "reports"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(data, dest / "data" / "prepared")


def timed(command: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="softmax_digits")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fs-bench-") as temporary:
        project, sockets = Path(temporary) / "project", Path(temporary) / "s"
        copy_project(project, args.data)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "MEDL_"))}
        env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                    "MEDL_FORKSERVER_DIR": str(sockets)})
        cold_env = {**env, "MEDL_FORKSERVER": "0"}
        evaluate = [sys.executable, "-m", "pipeline.evaluate", args.experiment]
        print(f"train {args.experiment} (cold): {timed([sys.executable, '-m', 'pipeline.train', args.experiment], project, cold_env):.2f} s", flush=True)
        cold = [timed(evaluate, project, cold_env) for _ in range(args.repeats)]
        print("cold evaluate:", " ".join(f"{s:.2f}" for s in cold), flush=True)
        print(f"first run, which starts the server: {timed(evaluate, project, env):.2f} s", flush=True)
        deadline = time.monotonic() + 300
        while not any(sockets.glob("*.sock")) and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            warm = [timed(evaluate, project, env) for _ in range(args.repeats)]
        finally:
            for lock in sockets.glob("*.lock"):
                os.kill(int(lock.read_text()), signal.SIGTERM)
        print("warm evaluate:", " ".join(f"{s:.2f}" for s in warm), flush=True)
        print(f"median: cold {statistics.median(cold):.2f} s, through the server {statistics.median(warm):.2f} s")


if __name__ == "__main__":
    main()
