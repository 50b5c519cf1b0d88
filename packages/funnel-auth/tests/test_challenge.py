"""The WWW-Authenticate parser, exhaustively, without I/O."""

from __future__ import annotations

import pytest

from funnel_auth import BearerChallenge, Challenge, find_bearer, parse_www_authenticate


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", []),
        (",, ,", []),
        ("Bearer", [Challenge("bearer")]),
        ("bearer", [Challenge("bearer")]),
        ('Bearer realm="example"', [Challenge("bearer", {"realm": "example"})]),
        ("Bearer realm=example", [Challenge("bearer", {"realm": "example"})]),
        ('Bearer REALM="x"', [Challenge("bearer", {"realm": "x"})]),
        (
            'Bearer realm = "x" , scope = "a b"',
            [Challenge("bearer", {"realm": "x", "scope": "a b"})],
        ),
        ('Bearer realm="a, b"', [Challenge("bearer", {"realm": "a, b"})]),
        (
            r'Bearer error_description="say \"hi\" \\ ok"',
            [Challenge("bearer", {"error_description": 'say "hi" \\ ok'})],
        ),
        ('Bearer realm="x", realm="y"', [Challenge("bearer", {"realm": "x"})]),
        ('Bearer error="unterminated', [Challenge("bearer", {"error": "unterminated"})]),
        ("Bearer ,,realm=x,, scope=y", [Challenge("bearer", {"realm": "x", "scope": "y"})]),
        (
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            [Challenge("basic", token68="YWxhZGRpbjpvcGVuc2VzYW1l")],
        ),
        ("Basic abc==", [Challenge("basic", token68="abc==")]),
        ("Basic abc=, Bearer", [Challenge("basic", token68="abc="), Challenge("bearer")]),
        (
            'Basic realm="simple", Bearer error="insufficient_scope", scope="files:write"',
            [
                Challenge("basic", {"realm": "simple"}),
                Challenge("bearer", {"error": "insufficient_scope", "scope": "files:write"}),
            ],
        ),
        (
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
            ],
        ),
        (
            "Bearer resource_metadata=https://rs.example/.well-known/oauth-protected-resource?x=1, scope=a",
            [
                Challenge(
                    "bearer",
                    {
                        "resource_metadata": "https://rs.example/.well-known/oauth-protected-resource?x=1",
                        "scope": "a",
                    },
                )
            ],
        ),
        ("Bearer\trealm=x", [Challenge("bearer", {"realm": "x"})]),
        ('DPoP algs="ES256", Bearer', [Challenge("dpop", {"algs": "ES256"}), Challenge("bearer")]),
    ],
)
def test_headers_parse_into_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


@pytest.mark.parametrize(
    "junk",
    [
        '"',
        "=",
        "==,,==",
        '"""',
        "Bearer =x",
        "=Bearer",
        "\x00\x01",
        "Bearer x=",
        "(",
        "Bearer a=b c d",
    ],
)
def test_garbage_never_raises(junk: str) -> None:
    for challenge in parse_www_authenticate(junk):
        assert isinstance(challenge, Challenge)


def test_several_header_lines_are_combined() -> None:
    assert parse_www_authenticate(['Basic realm="a"', "Bearer scope=x"]) == [
        Challenge("basic", {"realm": "a"}),
        Challenge("bearer", {"scope": "x"}),
    ]


def test_the_mcp_insufficient_scope_challenge_is_understood() -> None:
    header = (
        'Bearer error="insufficient_scope", scope="files:read files:write", '
        'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource", '
        'error_description="File write permission required"'
    )
    bearer = find_bearer(header)
    assert bearer == BearerChallenge(
        error="insufficient_scope",
        error_description="File write permission required",
        scope="files:read files:write",
        resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource",
    )
    assert bearer.scopes == ("files:read", "files:write")


def test_find_bearer_skips_other_schemes_and_returns_none_without_bearer() -> None:
    assert find_bearer(['Basic realm="x"']) is None
    assert find_bearer([]) is None
    found = find_bearer(['Basic realm="x", Bearer scope=""'])
    assert found == BearerChallenge()
    assert found.scopes == ()
