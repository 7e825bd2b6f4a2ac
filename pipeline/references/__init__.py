"""The report's reference rows of a dataset beyond the scikit-learn baselines: what gives a model's
number its meaning where no scikit-learn model applies (an n-gram model of a text, value iteration on a
known environment, nearest neighbours on one-shot episodes, the features alone of a graph).

One file in this folder per dataset, named as params.yaml names the dataset, defining
`reference_rows(dataset, **params) -> list[dict]`: each row a `name`, a `family` (what it is, in a few
words) and its `test/...` metrics, computed from the prepared data (pipeline.data) as the models' are.
A reference that depends on the experiments' params (value iteration at their discount) also defines
`params(dataset, config) -> dict`, what it reads from the checked params; the baselines stage passes
that as `params`, and its params file (pipeline.codedeps) holds it, so an edit of it reruns the
baselines. Files starting with `_` hold what several share.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pipeline.base import listed

DATASETS = tuple(listed(Path(__file__).parent))


def reference_params(dataset: str, config) -> dict:
    """What `dataset`'s reference reads from the checked params `config` (its file's `params`); {} if nothing."""
    if dataset not in DATASETS:
        return {}
    module = importlib.import_module(f"{__name__}.{dataset}")
    return module.params(dataset, config) if hasattr(module, "params") else {}


def reference_rows(dataset: str, params: dict | None = None) -> list[dict]:
    """The reference rows of `dataset`, as its file here computes them from `params` (reference_params's);
    none if it has no file."""
    if dataset not in DATASETS:
        return []
    return importlib.import_module(f"{__name__}.{dataset}").reference_rows(dataset, **(params or {}))
