"""Stage entry points and their plumbing: no model math here."""

import os

# MLflow's telemetry fetches its settings from MLflow's servers at run time and sends them usage records;
# nothing here goes to the network by default. Where that fetch fails (no network), its thread removes a
# variable from os.environ while a request to a tracking server may be reading os.environ: that request
# fails (KeyError '_MLFLOW_TELEMETRY_SESSION_ID'). Set before MLflow is imported, in a fork server too.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipeline import forkserver  # noqa: E402

# `python -m pipeline.STAGE`: run in a preloaded server's child when one is there (pipeline/forkserver.py)
forkserver.handover()
