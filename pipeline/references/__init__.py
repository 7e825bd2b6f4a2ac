"""The report's reference rows of a dataset beyond the scikit-learn baselines: what gives a model's
number its meaning where no scikit-learn model applies (an n-gram model of a text, value iteration on a
known environment, nearest neighbours on one-shot episodes, the features alone of a graph).

One file in this folder per dataset, named as params.yaml names the dataset, defining
`reference_rows(dataset) -> list[dict]`: each row a `name`, a `family` (what it is, in a few words)
and its `test/...` metrics, computed from the prepared data (pipeline.data) as the models' are. Only
the report stage imports this folder, so editing a file here reruns the report alone. Files starting
with `_` hold what several share.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pipeline.base import listed

DATASETS = tuple(listed(Path(__file__).parent))


def reference_rows(dataset: str) -> list[dict]:
    """The reference rows of `dataset`, as its file here computes them; none if it has no file."""
    if dataset not in DATASETS:
        return []
    return importlib.import_module(f"{__name__}.{dataset}").reference_rows(dataset)
