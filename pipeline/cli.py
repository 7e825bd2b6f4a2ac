"""How every stage entry point reports a user error: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import sys
from typing import Callable

from pipeline import stagestats
from pipeline.params import ConfigError


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    stagestats.begin()  # off unless MEDL_STAGE_STATS is set (bench/benchmarks.py)
    try:
        return main(argv) or 0
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
