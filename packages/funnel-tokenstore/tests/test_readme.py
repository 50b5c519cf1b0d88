from __future__ import annotations

import re
from pathlib import Path

import pytest

from funnel_tokenstore import generate_state_key

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_usage_example_runs(funnel_home_in_tmp: Path) -> None:
    [usage, *_] = python_blocks()
    exec(compile(usage, str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - running our own README
    # Under the default environment auto picked a store; either way nothing is left.
    tokens = funnel_home_in_tmp / "tokens.json"
    assert not tokens.exists() or "oauth:github" not in tokens.read_text()


def test_the_redis_example_runs(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    [_usage, redis_example, *_] = python_blocks()
    monkeypatch.setenv("REDIS_URL", redis_url.replace("/0", "/3"))  # a database of its own
    monkeypatch.setenv("FUNNEL_STATE_KEY", generate_state_key())
    exec(compile(redis_example, str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - running our own README


def test_the_encryption_example_runs(funnel_home_in_tmp: Path) -> None:
    [_usage, _redis, encryption, _contract] = python_blocks()
    exec(compile(encryption, str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - running our own README
    assert b"access_token" not in (funnel_home_in_tmp / "tokens.json").read_bytes()


def test_the_contract_example_defines_a_test_class() -> None:
    [*_, contract] = python_blocks()
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(contract, str(README), "exec"), namespace)  # noqa: S102 - running our own README
    assert "TestMyStore" in namespace
