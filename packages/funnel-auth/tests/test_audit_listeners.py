"""Audit listeners: an embedder counts audit events without parsing log records."""

from __future__ import annotations

import logging

import pytest

from funnel_auth import AUDIT_LOGGER, add_audit_listener
from funnel_auth._audit import audit


def test_a_listener_hears_every_event_with_redacted_fields_even_when_the_log_is_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[tuple[str, dict[str, object]]] = []
    remove = add_audit_listener(lambda event, fields: heard.append((event, dict(fields))))
    caplog.set_level(logging.ERROR, logger=AUDIT_LOGGER)  # INFO events are not logged
    try:
        audit("auth.token_refreshed", server="github", outcome="success", reason="x")
        audit(
            "auth.refresh_failed",
            server="github",
            outcome="failure",
            reason="token endpoint said access_token=abc123",
        )
    finally:
        remove()
    audit("auth.token_refreshed", server="github", outcome="success")  # after removal
    assert [event for event, _ in heard] == ["auth.token_refreshed", "auth.refresh_failed"]
    assert heard[0][1]["server"] == "github"
    assert heard[0][1]["outcome"] == "success"
    assert "abc123" not in str(heard[1][1]["reason"])
    assert not caplog.records


def test_a_failing_listener_never_breaks_the_code_that_audits() -> None:
    def broken(event: str, fields: object) -> None:
        raise RuntimeError("listener bug")

    heard: list[str] = []
    remove_broken = add_audit_listener(broken)
    remove = add_audit_listener(lambda event, _: heard.append(event))
    try:
        audit("auth.token_acquired", server="s", outcome="success")
    finally:
        remove_broken()
        remove()
    assert heard == ["auth.token_acquired"]
