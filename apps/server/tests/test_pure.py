"""Pure pieces: Host/Origin policy, credentials, the API token file, header checks, limits, audit."""

from __future__ import annotations

import io
import json
import logging
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funnel_server
from funnel_auth import AUDIT_LOGGER, RateLimiter
from funnel_server import _audit
from funnel_server._audit import (
    AuditLog,
    JsonLinesFormatter,
    RedactingFormatter,
    audit,
    configure_audit_log,
    remove_audit_handlers,
    scrub,
)
from funnel_server._security import (
    COOKIE_NAME,
    InboundAuth,
    OriginPolicy,
    is_loopback_host,
    load_api_token,
    safe_next_path,
)
from funnel_transports import write_batch


def test_the_public_names_are_pinned() -> None:
    assert funnel_server.__all__ == sorted(funnel_server.__all__)
    assert set(funnel_server.__all__) == {
        "AppSettings",
        "ServerFunnel",
        "ToolRateLimited",
        "__version__",
        "create_app",
        "main",
    }


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("app.localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),  # noqa: S104 - a host name under test, nothing is bound
        ("192.168.1.5", False),
        ("evil.example", False),
        ("localhost.evil.example", False),
    ],
)
def test_loopback_hosts_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:3456", True),
        ("localhost:3456", True),
        ("[::1]:3456", True),
        ("localhost", True),
        ("evil.example:3456", False),  # DNS rebinding: a foreign name pointing at 127.0.0.1
        ("", False),
        (None, False),
    ],
)
def test_a_loopback_server_accepts_only_loopback_host_names(host: str | None, ok: bool) -> None:
    assert OriginPolicy().host_ok(host) is ok


def test_configured_host_names_are_accepted_too() -> None:
    policy = OriginPolicy(allowed_hosts=("funnel.internal",))
    assert policy.host_ok("funnel.internal:3456")
    assert not policy.host_ok("other.internal:3456")


def test_a_public_bind_accepts_any_host_unless_names_are_configured() -> None:
    wildcard = "0.0.0.0"  # noqa: S104 - an address under test, nothing is bound
    assert OriginPolicy(bind_host=wildcard).host_ok("myhost.lan:3456")
    assert not OriginPolicy(bind_host=wildcard, allowed_hosts=("a.lan",)).host_ok("b.lan")


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        (None, True),
        ("http://127.0.0.1:3456", True),
        ("http://localhost:6274", True),
        ("https://evil.example", False),
        ("null", False),
        ("file://", False),
        ("chrome-extension://abc", False),
        ("http://localhost.evil.example", False),
    ],
)
def test_origins_must_be_loopback_or_configured(origin: str | None, ok: bool) -> None:
    assert OriginPolicy().origin_ok(origin, "127.0.0.1:3456") is ok


def test_configured_origins_and_the_same_origin_on_a_public_bind_are_accepted() -> None:
    assert OriginPolicy(allowed_origins=("https://app.example/",)).origin_ok(
        "https://app.example", "127.0.0.1:3456"
    )
    public = OriginPolicy(bind_host="0.0.0.0")  # noqa: S104 - no socket here
    assert public.origin_ok("http://myhost.lan:3456", "myhost.lan:3456")
    assert not public.origin_ok("http://evil.example:3456", "myhost.lan:3456")
    # On loopback the same-origin rule does not apply: that is what DNS rebinding looks like.
    assert not OriginPolicy().origin_ok("http://evil.example:3456", "evil.example:3456")


def test_credentials_are_judged_from_the_header_or_the_cookie() -> None:
    auth = InboundAuth("s3cret-token-0123456789", limiter=RateLimiter(max_attempts=1, window=1))
    assert auth.verdict({}) == "missing"
    assert auth.verdict({"authorization": "Bearer s3cret-token-0123456789"}) == "ok"
    assert auth.verdict({"authorization": "bearer  s3cret-token-0123456789 "}) == "ok"
    assert auth.verdict({"authorization": "Bearer wrong"}) == "invalid"
    assert auth.verdict({"authorization": "Basic s3cret-token-0123456789"}) == "invalid"
    assert auth.verdict({"authorization": "Bearer"}) == "invalid"
    assert auth.verdict({"cookie": f"a=b; {COOKIE_NAME}={auth.cookie_value}"}) == "ok"
    assert auth.verdict({"cookie": f"{COOKIE_NAME}=forged"}) == "invalid"
    assert auth.verdict({"cookie": "other=1"}) == "missing"
    assert "s3cret" not in auth.cookie_value, "the cookie is derived, not the token itself"
    header = auth.set_cookie_header(secure=False)
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Secure" not in header
    assert "; Secure" in auth.set_cookie_header(secure=True)


def test_the_api_token_comes_from_the_environment_first(tmp_path: Path) -> None:
    token, source = load_api_token(tmp_path, {"FUNNEL_API_TOKEN": " from-env-0123456789 "})
    assert (token, source) == ("from-env-0123456789", "FUNNEL_API_TOKEN")
    assert not (tmp_path / "api-token").exists()
    with pytest.raises(ValueError, match="too short"):
        load_api_token(tmp_path, {"FUNNEL_API_TOKEN": "short"})


def test_a_generated_token_is_stored_private_and_reused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    token, source = load_api_token(home, {})
    path = home / "api-token"
    assert source == str(path) and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_api_token(home, {})[0] == token
    path.chmod(0o644)
    assert load_api_token(home, {})[0] == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "a loosened file is made private again"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/"),
        ("/api/oauth/authorize/github", "/api/oauth/authorize/github"),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("relative", "/"),
    ],
)
def test_only_local_paths_are_followed_after_sign_in(value: str | None, expected: str) -> None:
    assert safe_next_path(value) == expected


def test_audit_events_become_redacted_json_lines_in_a_private_file(tmp_path: Path) -> None:
    stream_path = tmp_path / "stderr.txt"
    with stream_path.open("w") as stream:
        log = configure_audit_log(tmp_path / "home", stream=stream)
        try:
            audit(
                "tool.call",
                outcome="success",
                server="demo",
                tool="demo__echo",
                duration_ms=1.5,
                reason="Authorization: Bearer abc.def.ghi",
            )
            audit("inbound.auth_failed", outcome="denied", client="127.0.0.1", token="s3cr3t-x")
            logging.getLogger("funnel.audit").info("token=supersecret leaked", extra={"event": "x"})
        finally:
            remove_audit_handlers(log)
    path = tmp_path / "home" / "audit.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["tool.call", "inbound.auth_failed", "x"]
    assert lines[0]["server"] == "demo" and lines[0]["duration_ms"] == 1.5
    assert lines[0]["level"] == "INFO" and lines[0]["outcome"] == "success"
    assert lines[0]["logger"] == "funnel.audit" and lines[0]["time"].endswith("+00:00")
    assert lines[0]["message"] == (
        "tool.call outcome=success server=demo tool=demo__echo duration_ms=1.5 "
        "reason=Authorization: [REDACTED]"
    )
    assert lines[1]["level"] == "WARNING"
    text = path.read_text() + stream_path.read_text()
    for secret in ("abc.def.ghi", "supersecret", "s3cr3t-x"):
        assert secret not in text
    human = stream_path.read_text()
    assert "tool.call" not in human, "successes reach stderr only at DEBUG"
    assert "WARNING funnel.audit: inbound.auth_failed outcome=denied" in human


_AUDIT_TEXTS = [
    "demo__echo",
    "success",
    "Authorization: Bearer abc.def.ghi",
    "password=hunter2",
    "funnel_session=abc123; Path=/",
    "https://x.example/cb?code=c0de&state=s",
    "stdio",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_AUDIT_TEXTS) | st.text(max_size=300), min_size=1, max_size=8))
def test_a_repeated_audit_text_is_redacted_like_a_new_one(texts: list[str]) -> None:
    # The writer caches what redaction made of short texts: seen twice or once, the
    # answer is scrub()'s.
    for text in texts + texts:
        assert _audit._scrubbed(text) == scrub(text)


_field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        ["demo", "demo__echo", "stdio", "Bearer abc.def", "password=hunter2", 'a"b\\c\n']
    ),
)
_field_names = st.one_of(
    st.sampled_from(["server", "tool", "duration_ms", "reason", "token", "client_secret", "time"]),
    st.text(min_size=1, max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.tuples(
        st.sampled_from([logging.INFO, logging.WARNING]),
        st.sampled_from(["tool.call", "inbound.auth_failed", "ev\u00e9nt"]),
        st.sampled_from(["success", "error", "failure", "limited"]),
    ),
    fields=st.dictionaries(_field_names, _field_values, max_size=6),
    events=st.lists(
        st.tuples(st.floats(min_value=0, max_value=4e9), st.integers(), st.floats()),
        min_size=1,
        max_size=3,
    ),
)
def test_a_compiled_audit_line_is_byte_for_byte_the_general_one(
    shape: tuple[int, str, str],
    fields: dict[str, object],
    events: list[tuple[float, int, float]],
) -> None:
    # A shape's template is compiled on its first event and reused by the next ones, whose
    # times and numbers differ: each must be written as the general path (redact, build
    # the message, encode) writes it.
    level, event, outcome = shape
    for created, integer, number in events:
        renumbered = {
            name: integer if type(value) is int else number if type(value) is float else value
            for name, value in fields.items()
        }
        extra = _audit._fields(event, outcome, renumbered)
        general = _audit._json_line(
            created,
            logging.getLevelName(level),
            AUDIT_LOGGER,
            _audit._message(event, extra),
            extra,
        )
        assert _audit._event_line(created, level, event, outcome, renumbered) == general


def test_events_in_the_same_second_and_across_seconds_get_their_own_times() -> None:
    # The formatted second is cached; the milliseconds and the next second are not.
    assert _audit._timestamp(1_700_000_000.25) == "2023-11-14T22:13:20.250+00:00"
    assert _audit._timestamp(1_700_000_000.999) == "2023-11-14T22:13:20.999+00:00"
    assert _audit._timestamp(1_700_000_001.0) == "2023-11-14T22:13:21.000+00:00"
    assert _audit._timestamp(1_600_000_000.5) == "2020-09-13T12:26:40.500+00:00"


def test_a_secret_repeated_across_events_is_masked_every_time(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", stream=io.StringIO(), linger=0)
    try:
        for _ in range(3):
            log.submit(
                logging.INFO,
                "tool.call",
                "failure",
                {"server": "demo", "reason": "Authorization: Bearer abc.def.ghi", "token": "t0k"},
            )
    finally:
        log.close()
    text = (tmp_path / "audit.log").read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert len(entries) == 3
    assert all(e["reason"] == "Authorization: [REDACTED]" for e in entries)
    assert all(e["token"] == "[REDACTED]" for e in entries)
    assert "abc.def.ghi" not in text and "t0k" not in text


def test_every_event_reaches_stderr_at_debug(tmp_path: Path) -> None:
    stream_path = tmp_path / "stderr.txt"
    with stream_path.open("w") as stream:
        log = configure_audit_log(tmp_path / "home", stream=stream, stream_level=logging.DEBUG)
        try:
            audit("tool.call", outcome="success", server="demo", tool="demo__echo")
            assert log.flush()
            assert "INFO funnel.audit: tool.call outcome=success server=demo" in (
                stream_path.read_text()
            )
        finally:
            remove_audit_handlers(log)


def test_a_clean_stop_writes_every_queued_event(tmp_path: Path) -> None:
    log = configure_audit_log(tmp_path / "home", stream=io.StringIO())
    for n in range(5000):
        audit("tool.call", outcome="success", server="demo", tool="demo__echo", n=n)
    remove_audit_handlers(log)
    lines = (tmp_path / "home" / "audit.log").read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(5000))
    assert log.dropped == 0


def test_a_full_queue_drops_new_events_counts_them_and_says_so(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = AuditLog(tmp_path / "audit.log", stream=stream, max_queue=10, linger=0)
    # Hold the writer up: the file's first write blocks until released.
    release = threading.Event()
    blocked = threading.Event()
    real_append = log._append  # the seam a slow disk would be

    def slow_append(data: bytes) -> None:
        blocked.set()
        release.wait(10)
        real_append(data)

    log._append = slow_append  # type: ignore[method-assign] # the seam above
    try:
        log.submit(logging.INFO, "tool.call", "success", {"n": -1})
        assert blocked.wait(10), "the writer took the first event"
        for n in range(25):
            log.submit(logging.INFO, "tool.call", "success", {"n": n})
        assert log.dropped == 15
    finally:
        release.set()
        log.close()
    entries = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [e["n"] for e in entries if e["event"] == "tool.call"] == list(range(-1, 10))
    [dropped] = [e for e in entries if e["event"] == "audit.dropped"]
    assert dropped["count"] == 15 and dropped["level"] == "WARNING"
    assert "audit.dropped outcome=failure count=15" in stream.getvalue()


def test_the_file_rotates_and_every_copy_stays_private(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", stream=io.StringIO(), max_bytes=2000, backups=2)
    try:
        for n in range(40):
            log.submit(logging.INFO, "tool.call", "success", {"server": "demo", "n": n})
            assert log.flush()
    finally:
        log.close()
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["audit.log", "audit.log.1", "audit.log.2"]
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_size <= 2000
    last = [json.loads(line)["n"] for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert last[-1] == 39


def test_without_an_audit_log_events_go_to_the_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "funnel.audit")
    audit("tool.call", outcome="success", server="demo", reason="password=hunter2")
    [record] = [r for r in caplog.records if r.name == "funnel.audit"]
    assert record.getMessage() == "tool.call outcome=success server=demo reason=password=[REDACTED]"
    assert vars(record)["server"] == "demo"


def test_the_json_formatter_keeps_extra_fields_only() -> None:
    record = logging.LogRecord("funnel.audit", logging.WARNING, "f", 1, "m %s", ("x",), None)
    record.event = "inbound.auth_failed"
    line = json.loads(JsonLinesFormatter().format(record))
    assert line["message"] == "m x" and line["event"] == "inbound.auth_failed"
    assert "args" not in line and "pathname" not in line


def test_header_dumps_in_debug_logs_are_masked() -> None:
    formatter = RedactingFormatter("%(message)s")
    for line, secret in (
        ("< cookie: a=1; funnel_session=0123abcd", "0123abcd"),
        ("< authorization: Bearer tok-123", "tok-123"),
    ):
        record = logging.LogRecord("uvicorn.error", logging.DEBUG, "f", 1, line, None, None)
        text = formatter.format(record)
        assert secret not in text and "[REDACTED]" in text
    assert scrub("nothing to hide") == "nothing to hide"


def test_a_program_that_exits_without_closing_the_audit_log_loses_nothing(tmp_path: Path) -> None:
    script = (
        "import io, sys; from pathlib import Path\n"
        "from funnel_server._audit import audit, configure_audit_log\n"
        "configure_audit_log(Path(sys.argv[1]), stream=io.StringIO())\n"
        "for n in range(300): audit('tool.call', outcome='success', n=n)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(300))


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [("success", None), ("error", None), ("cancelled", None), ("failure", "RpcError")],
)
@pytest.mark.parametrize("stream_level", [logging.WARNING, logging.DEBUG])
@pytest.mark.parametrize("in_batch", [False, True], ids=["alone", "in a reader's batch"])
def test_a_tool_call_line_is_the_line_audit_writes(
    tmp_path: Path, outcome: str, reason: str | None, stream_level: int, in_batch: bool
) -> None:
    # ToolCallLines keeps a template per outcome; what it writes (file and stderr copy)
    # must be what audit() writes for the same call, on its first use and after.
    fields = {"server": "demo", "tool": "demo__echo", "client": "stdio"}
    lines = _audit.ToolCallLines(fields)
    written: dict[str, tuple[list[str], str]] = {}
    for kind in ("compiled", "audit"):
        stream = io.StringIO()
        log = configure_audit_log(tmp_path / kind, stream=stream, stream_level=stream_level)
        try:
            for duration in (0.25, 12.5, 1e-05):
                if kind == "compiled" and in_batch:
                    # Rendered when the batch ends (after its answers are written).
                    with write_batch():
                        lines.record(outcome, duration, reason)
                elif kind == "compiled":
                    lines.record(outcome, duration, reason)
                else:
                    audit(
                        "tool.call", outcome=outcome, duration_ms=duration, reason=reason, **fields
                    )
            assert log.flush()
        finally:
            remove_audit_handlers(log)
        # Byte for byte, but for the time of writing.
        entries = [
            re.sub(r'^\{"time":"[^"]+"', "", line)
            for line in (tmp_path / kind / "audit.log").read_text().splitlines()
        ]
        human = "\n".join(line[24:] for line in stream.getvalue().splitlines())
        written[kind] = (entries, human)
    assert written["compiled"] == written["audit"]
    assert [json.loads("{" + e[1:])["duration_ms"] for e in written["compiled"][0]] == [
        0.25,
        12.5,
        1e-05,
    ]
