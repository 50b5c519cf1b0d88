from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_usage_example_runs(funnel_home_in_tmp: Path) -> None:
    [usage, _contract] = python_blocks()
    exec(compile(usage, str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - running our own README
    # Under the default environment auto picked a store; either way nothing is left.
    tokens = funnel_home_in_tmp / "tokens.json"
    assert not tokens.exists() or "oauth:github" not in tokens.read_text()


def test_the_contract_example_defines_a_test_class() -> None:
    [_usage, contract] = python_blocks()
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(contract, str(README), "exec"), namespace)  # noqa: S102 - running our own README
    assert "TestMyStore" in namespace
