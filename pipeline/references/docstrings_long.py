"""docstrings_long's reference: the same Kneser-Ney models as docstrings' (pipeline/references/docstrings.py),
fitted on its training text and scored on the test characters its windows predict."""

from __future__ import annotations

from pipeline.references.docstrings import reference_rows  # noqa: F401  (the report imports it from here)
