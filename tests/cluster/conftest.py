"""The `slurm_cluster` fixture: one real single-node SLURM cluster on localhost per test session.

This folder is a package (it has an __init__.py) so that this file is imported as
`cluster.conftest` and does not replace the top-level `conftest` module that other tests import
helpers from.
"""

from __future__ import annotations

import pytest
from slurm_cluster import SlurmCluster, ensure_binaries


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A started SlurmCluster; skipped only when SLURM/munge are absent and cannot be installed."""
    missing, why = ensure_binaries()
    if missing:
        pytest.skip(f"SLURM cluster unavailable: missing {', '.join(missing)}; {why}")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
