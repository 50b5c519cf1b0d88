"""The multi-replica harness as a fixture (see :mod:`support.replicas`)."""

from __future__ import annotations

import pytest
from support.replicas import ClusterFactory, replicas


@pytest.fixture
def cluster() -> ClusterFactory:
    """The factory: ``async with cluster(config_path, tmp_path) as c: ...``."""
    return replicas
