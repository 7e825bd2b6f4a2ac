"""The evaluate stage's work, one module per kind of family (pipeline.core.supervised, graph,
generative, reinforcement): test metrics through torchmetrics, the DVC plot rows, the figures. It uses
only what a family exposes about its model (`predict`, `sample`, `act_greedy`, ...), so the
LightningModules know nothing of plots or of the evaluate stage.

A kind's class names its evaluation (`EVALUATION = "supervised"` is this package's supervised.py),
and the evaluate stage imports only that module: a supervised model's evaluation never loads the
generated images' scorer nor gymnasium, and editing one kind's evaluation reruns only the evaluate
stages of that kind (pipeline.codedeps reads the same name from the family's classes).
"""

from __future__ import annotations

import csv
import importlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import files
from pipeline.base import listed
from pipeline.config import ExperimentConfig

KINDS = tuple(listed(Path(__file__).parent))  # supervised.py, graph.py, ...: each defines evaluate(model, context)


@dataclass
class Context:
    """What an evaluation gets: the experiment, the test split (as prepared; None for an environment), the dataset's
    facts, where its figures go (PNG, into a staging folder that becomes plots/figures/EXPERIMENT/) and its DVC plot rows
    (plots/predictions/EXPERIMENT.csv: actual, predicted); `examples` is text it may leave for MLflow."""

    experiment: ExperimentConfig
    x: Any
    y: Any
    meta: dict
    figures: Path
    predictions: Path
    examples: str | None = None


def write_csv(path: Path, header: list[str], rows) -> None:
    """Replace the CSV file `path` whole: a kill or a full disk leaves the old file or the new one."""
    text = io.StringIO(newline="")  # the csv module ends rows with \r\n itself
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    encoded = text.getvalue().encode("utf-8")
    with files.replacing(path, size=len(encoded)) as handle:  # the path its caller chose (tests pass their own)
        handle.write(encoded)


def evaluate(model, context: Context) -> dict[str, float] | None:
    """The test metrics of `model` (written plots and figures into context's paths) by its kind's
    evaluation; None on processes other than global rank 0."""
    kind = getattr(model, "EVALUATION", None)
    if kind not in KINDS:
        raise TypeError(f"{type(model).__name__}.EVALUATION: {kind!r}; a family subclasses one of the kinds, "
                        f"whose EVALUATION is one of {', '.join(KINDS)}")
    return importlib.import_module(f"{__name__}.{kind}").evaluate(model, context)
