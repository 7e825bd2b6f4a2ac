"""The datasets: one file each in this folder, named as params.yaml names the dataset, defining
`DATASET` (a pipeline.spec.Dataset). Files starting with `_` hold what several datasets share.

The registry is found from the folder, as the families are found from modules/, so adding a dataset
is adding its file: prepare's process imports every file here, and pipeline/codedeps.py counts them
among the files every stage that imports this registry depends on, so a new or edited file reruns
prepare.

A dataset file imports its heavy libraries (scikit-learn, networkx, gymnasium) inside the functions
that make its data: every stage imports the registry, and only prepare makes the data.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pipeline.base import listed
from pipeline.spec import Dataset


def _discover() -> dict[str, Dataset]:
    return {name: importlib.import_module(f"{__name__}.{name}").DATASET for name in listed(Path(__file__).parent)}


DATASETS: dict[str, Dataset] = _discover()
