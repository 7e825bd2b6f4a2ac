"""The docstrings text (docstrings.py, the same characters and split) in longer windows, for the larger
character language models of params.yaml's examples: windows of T = 256 characters whose last L = 192
positions are targets, with stride L, so each predicted character has at least 64 characters of
context before it (in docstrings' windows of 64 the first characters of a window have almost none).
"""

from __future__ import annotations

from pipeline.datasets import docstrings
from pipeline.spec import Dataset, DataSpec

WINDOW = 256  # T, characters per window
TARGETS = 192  # L, the window's last positions that are targets (and the stride)


def make_splits(config) -> tuple[dict, dict]:
    return docstrings.make_splits(config, WINDOW, TARGETS)


DATASET = Dataset(
    DataSpec("sequence", (WINDOW,), len(docstrings.VOCABULARY), vocab_size=len(docstrings.VOCABULARY), target_length=TARGETS),
    None,
    f"the docstrings of {len(docstrings.MODULES)} standard-library modules, windows of {WINDOW} characters predicting "
    f"their last {TARGETS}, split by position",
    "none", make_splits,
)
