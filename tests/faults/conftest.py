"""Fixtures of the fault suite; the harness itself is ``support.faults``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faults import HttpBackend


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module-scoped so that one funnel-server process serves every probe of a module.
    return "asyncio"


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def http_backend() -> Iterator[HttpBackend]:
    backend = HttpBackend()
    try:
        yield backend
    finally:
        backend.stop()
