"""The README's first example runs, against the official-SDK test server."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(
    peers: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    server = peers.servers / "sdk_server.py"
    script = tmp_path / "example.py"
    script.write_text(example.replace('["server.py"]', f"[{str(server)!r}]"))
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "modern 2026-07-28"
    assert out[1].endswith("Echo: hi")
    assert "'echo'" in out[1]


def test_the_bad_input_example_runs(tmp_path: Path) -> None:
    (example,) = (
        block
        for block in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
        if "MAX_DEPTH" in block
    )
    script = tmp_path / "bad_input.py"
    script.write_text(example)
    runpy.run_path(str(script), run_name="__main__")
