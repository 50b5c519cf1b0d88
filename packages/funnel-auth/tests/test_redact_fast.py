"""``redact_fast``: the audit hot path's redactor gives exactly what ``redact`` gives."""

from __future__ import annotations

import random

import pytest

from funnel_auth import redact
from funnel_auth._redact import redact_fast

SECRET_BEARING = [
    "Authorization: Bearer abc.def-ghi",
    "header authorization=Basic dXNlcjpwYXNz",
    "https://app/cb?code=SplxlOBeZQQYbYS6WxSbIA&state=xyz",
    "grant_type=refresh_token&refresh_token=tGzv3JOkF0XG5Qx2TlKWIA",
    '{"access_token": "2YotnFZFEjr1zCsicMWpAA", "token_type": "Bearer"}',
    '{"code_verifier":"dBjftJeZ4CVP"}',
    "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "password=pa55",
    "BEARER tok-123",
    "dpop abcdef",
    "basic Zm9vOmJhcg==",
    "AUTHORIZATION = whatever, next",
    "funnel_session=0123abcd",
]
ORDINARY = ["demo__echo", "success", "stdio", "ws", "127.0.0.1", "RequestTimeout", "tool.call"]


@pytest.mark.parametrize("text", SECRET_BEARING + ORDINARY)
def test_the_fast_path_agrees_with_redact(text: str) -> None:
    assert redact_fast(text) == redact(text)


def test_names_skip_the_patterns_and_come_back_as_they_are() -> None:
    for text in ORDINARY:
        assert redact_fast(text) is text


def test_the_fast_path_agrees_with_redact_on_arbitrary_text() -> None:
    # Fragments every pattern is made of, shuffled into arbitrary strings: a pattern
    # added to redact without its trigger in redact_fast shows up here.
    fragments = [
        "Bearer ", "basic ", "DPoP ", "authorization", ": ", "=", '"', "'", "eyJ", "abc",
        "token", "code", "state", "secret", ".", "-", "_", " ", "&", ";", ",", "\n", "é",
        "access_token", "client_secret", "password", "x9", "A.b", "/", "+", "~",
    ]  # fmt: skip
    rng = random.Random(12)  # reproducible test data
    for _ in range(5000):
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 12)))
        assert redact_fast(text) == redact(text), text
