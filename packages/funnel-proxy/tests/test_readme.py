"""The README's config examples are real configs: each one loads."""

import re
from pathlib import Path

import pytest

from funnel_proxy import parse_config

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```json\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
ENVIRON = {
    "GITHUB_TOKEN": "t",
    "GITHUB_PERSONAL_ACCESS_TOKEN": "t",
    "A_TOKEN": "t",
    "B_CLIENT_ID": "id",
    "B_CLIENT_SECRET": "s",
}


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("block", BLOCKS)
def test_every_readme_example_loads(block: str, tmp_path: Path) -> None:
    parse_config(block, environ=ENVIRON, base_dir=tmp_path)


def test_the_tracing_example_runs_and_turns_telemetry_on() -> None:
    from funnel_proxy import _telemetry, disable_telemetry

    section = README.read_text(encoding="utf-8").split("## Tracing and metrics", 1)[1]
    [code] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    namespace: dict[str, object] = {}
    try:
        exec(code, namespace)  # noqa: S102 - the README's own example
        assert _telemetry.enabled
    finally:
        disable_telemetry()
        provider = namespace.get("provider")
        if provider is not None:
            provider.shutdown()  # type: ignore[attr-defined]
    assert not _telemetry.enabled
