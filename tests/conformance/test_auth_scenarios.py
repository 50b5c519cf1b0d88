"""Every ``auth/*`` client scenario of the official conformance suite, funnel as the client.

Each scenario runs in its own harness process (they bind ports; a parallel run makes
false failures): ``npx conformance client --command "python auth_client.py" --scenario S``
from ``tools/conformance-0.1`` (release 0.1.16: 2025-11-25, 2025-03-26 back-compat, draft,
extensions) and ``tools/conformance-0.2`` (pre-release 0.2.0-alpha.12: 2026-07-28). The
harness judges what it saw and exits non-zero on any failure or warning; the test reads
``checks.json`` too, so that a failure names the checks that failed.

``auth_client.py`` drives funnel as a user does (config file, the real ``Funnel``, the
public login path), so a pass here means the product passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("auth_client.py")

# `npx conformance list --client`, the auth/* part, per installed revision.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "0.1": (
        "auth/metadata-default",
        "auth/metadata-var1",
        "auth/metadata-var2",
        "auth/metadata-var3",
        "auth/basic-cimd",
        "auth/scope-from-www-authenticate",
        "auth/scope-from-scopes-supported",
        "auth/scope-omitted-when-undefined",
        "auth/scope-step-up",
        "auth/scope-retry-limit",
        "auth/token-endpoint-auth-basic",
        "auth/token-endpoint-auth-post",
        "auth/token-endpoint-auth-none",
        "auth/pre-registration",
        "auth/2025-03-26-oauth-metadata-backcompat",
        "auth/2025-03-26-oauth-endpoint-fallback",
        "auth/resource-mismatch",
        "auth/offline-access-scope",
        "auth/offline-access-not-supported",
        "auth/client-credentials-jwt",
        "auth/client-credentials-basic",
        "auth/cross-app-access-complete-flow",
    ),
    "0.2": (
        "auth/metadata-default",
        "auth/metadata-var1",
        "auth/metadata-var2",
        "auth/metadata-var3",
        "auth/basic-cimd",
        "auth/scope-from-www-authenticate",
        "auth/scope-from-scopes-supported",
        "auth/scope-omitted-when-undefined",
        "auth/scope-step-up",
        "auth/scope-retry-limit",
        "auth/token-endpoint-auth-basic",
        "auth/token-endpoint-auth-post",
        "auth/token-endpoint-auth-none",
        "auth/pre-registration",
        "auth/2025-03-26-oauth-metadata-backcompat",
        "auth/2025-03-26-oauth-endpoint-fallback",
        "auth/resource-mismatch",
        "auth/offline-access-scope",
        "auth/offline-access-not-supported",
        "auth/authorization-server-migration",
        "auth/iss-supported",
        "auth/iss-not-advertised",
        "auth/iss-supported-missing",
        "auth/iss-wrong-issuer",
        "auth/iss-unexpected",
        "auth/iss-normalized",
        "auth/metadata-issuer-mismatch",
        "auth/client-credentials-jwt",
        "auth/client-credentials-basic",
        "auth/enterprise-managed-authorization",
        "auth/dpop",
        "auth/dpop-nonce",
        "auth/wif-jwt-bearer",
    ),
}

# Extension scenarios funnel does not implement (yet): expected to fail, strictly, so
# that an accidental pass is noticed and the mark removed.
NOT_IMPLEMENTED: dict[str, str] = {}


def _harness(revision: str) -> Path:
    folder = REPO / "tools" / f"conformance-{revision}"
    if (
        shutil.which("npx") is None
        or not (folder / "node_modules" / ".bin" / "conformance").exists()
    ):
        pytest.skip(f"the conformance suite is not installed (npm ci --prefix {folder})")
    return folder


def _run(revision: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    folder = _harness(revision)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CONFORMANCE")}
    return subprocess.run(
        ["npx", "--no-install", "conformance", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("revision", sorted(SCENARIOS))
def test_the_scenario_list_is_the_suites_own(revision: str) -> None:
    listed = _run(revision, "list", "--client", timeout=60)
    assert listed.returncode == 0, listed.stderr
    names = [
        line.strip()[2:].split(" [")[0]
        for line in listed.stdout.splitlines()
        if line.strip().startswith("- auth/")
    ]
    assert tuple(names) == SCENARIOS[revision]


CASES = [
    pytest.param(
        revision,
        scenario,
        id=f"{revision}-{scenario}",
        marks=[pytest.mark.xfail(reason=NOT_IMPLEMENTED[scenario], strict=True)]
        if scenario in NOT_IMPLEMENTED
        else [],
    )
    for revision, scenarios in sorted(SCENARIOS.items())
    for scenario in scenarios
]


@pytest.mark.npm
@pytest.mark.parametrize(("revision", "scenario"), CASES)
def test_funnel_passes_the_auth_scenario(revision: str, scenario: str, tmp_path: Path) -> None:
    command = f"{sys.executable} {CLIENT}"
    assert " " not in sys.executable and " " not in str(CLIENT), "the harness splits on spaces"
    result = _run(
        revision,
        "client",
        "--command",
        command,
        "--scenario",
        scenario,
        "--timeout",
        "60000",
        "-o",
        str(tmp_path),
        timeout=120,
    )
    checks: list[dict[str, object]] = []
    for path in tmp_path.rglob("checks.json"):
        checks.extend(json.loads(path.read_text()))
    bad = [
        f"{c.get('status')} {c.get('id')}: {c.get('errorMessage') or c.get('description')}"
        for c in checks
        if c.get("status") in ("FAILURE", "WARNING")
    ]
    detail = "\n".join(bad) or result.stdout[-3000:] + result.stderr[-3000:]
    assert checks, f"the harness wrote no checks:\n{detail}"
    assert result.returncode == 0 and not bad, f"{scenario} on {revision}:\n{detail}"
