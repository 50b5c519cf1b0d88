from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The shipped contract suite uses plain asserts: have pytest explain their failures.
pytest.register_assert_rewrite("funnel_tokenstore.testing")


@pytest.fixture(autouse=True)
def funnel_home_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own funnel home, so nothing touches the real one."""
    home = tmp_path / "funnel-home"
    monkeypatch.setenv("MCP_FUNNEL_HOME", str(home))
    monkeypatch.delenv("MCP_FUNNEL_TOKEN_STORE", raising=False)
    monkeypatch.delenv("FUNNEL_STATE_KEY", raising=False)
    return home


@pytest.fixture
def anyio_backend() -> str:
    # redis-py runs on asyncio only; every store here works on it.
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One throwaway redis-server for the session (tests keep apart by namespace).

    Without the binary the Redis tests skip, saying how to get it, except under
    ``CI=true``, where CI installs it and its absence is a failure.
    """
    from funnel_tokenstore.testing import RedisUnavailable, redis_server

    try:
        with redis_server() as url:
            yield url
    except RedisUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))
