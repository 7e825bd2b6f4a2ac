"""The project's root folder, how a folder registers its modules, and its one user-error type: the bottom layer, importing nothing of the
project, so that params, data, files and downloads can all use them without importing each other."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def listed(folder: Path) -> list[str]:
    """The modules a folder registers by holding them (the families in modules/, the datasets in
    pipeline/datasets/): every .py file but those starting with `_`, which hold what several share."""
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


class ConfigError(ValueError):
    """A user error in params.yaml or on the command line, described in one line."""
