"""Put on PYTHONPATH by the end-to-end tests: every Python process of a stage writes, when it exits, the
project files it imported to $MEDL_IMPORT_LOG/<pid>.json with its DVC_STAGE, so that a test can compare
them with the stage's derived code dependencies (pipeline/codedeps.py)."""

import atexit
import json
import os
import sys
from pathlib import Path


def _write() -> None:
    root = Path.cwd().resolve()
    imported = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            path = Path(path).resolve()
            if path.is_relative_to(root) and path.parts[len(root.parts)] in ("pipeline", "modules"):
                imported.add(path.relative_to(root).as_posix())
    record = {"stage": os.environ.get("DVC_STAGE"), "argv": sys.argv, "files": sorted(imported)}
    (Path(os.environ["MEDL_IMPORT_LOG"]) / f"{os.getpid()}.json").write_text(json.dumps(record))


if os.environ.get("MEDL_IMPORT_LOG"):
    atexit.register(_write)
