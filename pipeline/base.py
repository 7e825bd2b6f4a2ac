"""The project's root folder and its one user-error type: the bottom layer, importing nothing of the
project, so that params, data, files and downloads can all use them without importing each other."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A user error in params.yaml or on the command line, described in one line."""
