"""The README's screenshots: reports/index.html, and the MLflow UI's compare view of a sweep's runs.

    python docs/screenshots.py [--sweep NAME] [--out docs/images]

Both are taken with headless Chromium (Debian's `chromium`). The compare view needs the sweep's runs
in the project's store (mlflow.db): this starts `mlflow ui` on it on a free local port, opens the
compare page of the runs tagged `sweep=NAME` (params, metrics, parallel coordinates), and stops the
server. Nothing here is part of the pipeline; it only redraws the pictures the README shows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("error: no chromium, chromium-browser or google-chrome on PATH (Debian: apt-get install chromium)")


def screenshot(url: str, png: Path, width: int, height: int, wait_ms: int) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}", f"--screenshot={png}", url],
            check=True, capture_output=True, timeout=180,
        )
    print(f"wrote {png.relative_to(ROOT)} ({png.stat().st_size // 1024} KB) from {url}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare_url(sweep: str, port: int) -> str:
    from mlflow import MlflowClient

    from pipeline.core import tracking
    from pipeline.params import load

    client = MlflowClient(tracking.tracking_uri())
    experiment = client.get_experiment_by_name(load(family_checks=False).tracking_experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.sweep = '{sweep}'", max_results=100)
    if not runs:
        sys.exit(f"error: no run tagged sweep={sweep} in {tracking.redacted(tracking.tracking_uri())}; run the README's sweep first")
    ids = json.dumps([run.info.run_id for run in runs])
    return (f"http://127.0.0.1:{port}/#/compare-runs?runs={quote(ids)}"
            f"&experiments={quote(json.dumps([experiment.experiment_id]))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="mlp-lr-width", help="the sweep whose runs the compare view shows")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()

    screenshot((ROOT / "reports" / "index.html").as_uri(), args.out / "report.png", 1280, 1500, 3000)

    from pipeline.core import tracking

    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "ui", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", tracking.tracking_uri()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("error: mlflow ui did not start within 120 s")
                time.sleep(1)
        screenshot(compare_url(args.sweep, port), args.out / "mlflow-compare.png", 1400, 1500, 15000)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
