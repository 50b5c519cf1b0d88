from __future__ import annotations

import logging
import secrets
from pathlib import Path

import anyio
import keyring.backends.chainer
import keyring.backends.fail
import keyring.backends.null
import keyring.core
import pytest

from funnel_tokenstore import (
    EncryptedTokenStore,
    FileTokenStore,
    KeyringTokenStore,
    MemoryTokenStore,
    RedisTokenStore,
    StateKeys,
    TokenStoreConfigError,
    TokenStoreKind,
    TokenStoreUnavailable,
    generate_state_key,
    open_token_store,
)

# keyring's own backends have an untyped __init__; one place to say so.
FAIL = keyring.backends.fail.Keyring()  # type: ignore[no-untyped-call]
NULL = keyring.backends.null.Keyring()  # type: ignore[no-untyped-call]


class SecureKeychain:
    """Stands for an OS keychain backend (what macOS/Secret Service/Windows look like)."""

    priority: float = 5

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        pass

    def delete_password(self, service: str, username: str) -> None:
        pass


class AltPlaintextKeychain(SecureKeychain):
    """Stands for keyrings.alt.file.PlaintextKeyring."""

    priority: float = 5


AltPlaintextKeychain.__module__ = "keyrings.alt.file"


class NotRecommendedKeychain(SecureKeychain):
    priority = 0.5


@pytest.fixture
def info_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="funnel_tokenstore")
    return caplog


def the_one_info_line(caplog: pytest.LogCaptureFixture) -> str:
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "funnel_tokenstore" and r.levelno == logging.INFO
    ]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("backend", "why"),
    [
        (FAIL, "no OS keychain"),
        (NULL, "stores nothing"),
        (AltPlaintextKeychain(), "keyrings.alt"),
        (NotRecommendedKeychain(), "does not recommend"),
    ],
    ids=["fail", "null", "keyrings-alt", "low-priority"],
)
def test_auto_without_a_secure_keychain_picks_the_file_and_says_why(
    backend: object, why: str, funnel_home_in_tmp: Path, info_log: pytest.LogCaptureFixture
) -> None:
    store = open_token_store(keyring_backend=backend)  # type: ignore[arg-type]  # NULL/FAIL are untyped
    assert isinstance(store, FileTokenStore)
    assert store.path == funnel_home_in_tmp / "tokens.json"
    line = the_one_info_line(info_log)
    assert "file" in line
    assert why in line


def test_auto_uses_keyrings_own_choice_by_default(
    monkeypatch: pytest.MonkeyPatch, info_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(keyring.core, "_keyring_backend", FAIL)
    assert isinstance(open_token_store(), FileTokenStore)
    assert "keyring.backends.fail.Keyring" in the_one_info_line(info_log)


def test_auto_with_a_secure_keychain_picks_the_keyring(
    funnel_home_in_tmp: Path, info_log: pytest.LogCaptureFixture
) -> None:
    backend = SecureKeychain()
    store = open_token_store("auto", keyring_backend=backend)
    assert isinstance(store, KeyringTokenStore)
    assert store.backend is backend
    assert store.lock_dir == funnel_home_in_tmp / "locks"
    line = the_one_info_line(info_log)
    assert "keyring" in line
    assert "SecureKeychain" in line
    assert "secure OS keychain is available" in line


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([FAIL], FileTokenStore),
        ([NULL, FAIL], FileTokenStore),
        ([], FileTokenStore),
        ([AltPlaintextKeychain(), SecureKeychain()], FileTokenStore),
        ([SecureKeychain(), NULL], KeyringTokenStore),
    ],
    ids=["only-fail", "null-and-fail", "empty", "plaintext-first", "secure-first"],
)
def test_auto_judges_a_chainer_by_the_keychain_it_writes_to(
    members: list[object], expected: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyring.backends.chainer.ChainerBackend, "backends", members)
    chainer = keyring.backends.chainer.ChainerBackend()  # type: ignore[no-untyped-call]
    assert type(open_token_store(keyring_backend=chainer)) is expected


@pytest.mark.parametrize("backend", [FAIL, NULL], ids=["fail", "null"])
def test_asking_for_the_keyring_without_one_is_an_error_with_a_way_out(backend: object) -> None:
    with pytest.raises(TokenStoreUnavailable, match="MCP_FUNNEL_TOKEN_STORE=file") as caught:
        open_token_store("keyring", keyring_backend=backend)  # type: ignore[arg-type]  # untyped
    assert "'keyring' was asked for" in str(caught.value)


def test_asking_for_the_keyring_accepts_a_plaintext_backend_and_notes_it(
    info_log: pytest.LogCaptureFixture,
) -> None:
    store = open_token_store("keyring", keyring_backend=AltPlaintextKeychain())
    assert isinstance(store, KeyringTokenStore)
    assert "not an OS keychain" in the_one_info_line(info_log)


def test_file_and_memory_are_used_when_asked(
    tmp_path: Path, info_log: pytest.LogCaptureFixture
) -> None:
    store = open_token_store("file", env={"MCP_FUNNEL_HOME": str(tmp_path / "elsewhere")})
    assert isinstance(store, FileTokenStore)
    assert store.path == tmp_path / "elsewhere" / "tokens.json"
    assert str(store.path) in the_one_info_line(info_log)
    info_log.clear()
    assert isinstance(open_token_store("memory"), MemoryTokenStore)
    assert "memory" in the_one_info_line(info_log)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("memory", MemoryTokenStore), (" FILE ", FileTokenStore), ("", KeyringTokenStore)],
)
def test_the_environment_overrides_the_requested_kind(
    value: str, expected: type, info_log: pytest.LogCaptureFixture
) -> None:
    store = open_token_store(
        "keyring", env={"MCP_FUNNEL_TOKEN_STORE": value}, keyring_backend=SecureKeychain()
    )
    assert type(store) is expected
    if value.strip():
        assert f"MCP_FUNNEL_TOKEN_STORE={value.strip().lower()}" in the_one_info_line(info_log)


def test_an_unknown_store_in_the_environment_is_a_clear_error() -> None:
    with pytest.raises(TokenStoreConfigError, match="MCP_FUNNEL_TOKEN_STORE='vault'") as caught:
        open_token_store(env={"MCP_FUNNEL_TOKEN_STORE": "vault"})
    assert "auto, keyring, file, memory" in str(caught.value)


def test_an_unknown_kind_argument_is_a_clear_error() -> None:
    with pytest.raises(TokenStoreConfigError, match="'vault' is not a token store kind"):
        open_token_store("vault", env={})  # type: ignore[arg-type]  # the point of the test


def test_the_default_environment_is_os_environ(
    monkeypatch: pytest.MonkeyPatch, funnel_home_in_tmp: Path
) -> None:
    monkeypatch.setenv("MCP_FUNNEL_TOKEN_STORE", "file")
    store = open_token_store("memory")
    assert isinstance(store, FileTokenStore)
    assert store.path == funnel_home_in_tmp / "tokens.json"


@pytest.mark.keyring
def test_auto_picks_a_real_secret_service(info_log: pytest.LogCaptureFixture) -> None:
    import keyring.backends.SecretService

    if not isinstance(keyring.get_keyring(), keyring.backends.SecretService.Keyring):
        pytest.skip(
            "needs a real Secret Service keyring; run under tools/with-keyring.sh "
            f"(keyring chose {keyring.get_keyring()})"
        )
    assert isinstance(open_token_store(), KeyringTokenStore)
    assert "SecretService" in the_one_info_line(info_log)


# -- Redis and encryption at rest ---------------------------------------------------------


def test_a_state_key_encrypts_the_file_store(
    funnel_home_in_tmp: Path, info_log: pytest.LogCaptureFixture
) -> None:
    key = generate_state_key()
    store = open_token_store(
        "file", env={"FUNNEL_STATE_KEY": key, "MCP_FUNNEL_HOME": str(funnel_home_in_tmp)}
    )
    assert isinstance(store, EncryptedTokenStore)
    assert isinstance(store.inner, FileTokenStore)
    line = the_one_info_line(info_log)
    assert "encrypted at rest" in line
    assert key not in info_log.text

    async def round_trip() -> None:
        await store.set("oauth:github", b"token-in-clear")
        assert await store.get("oauth:github") == b"token-in-clear"

    anyio.run(round_trip)
    assert b"token-in-clear" not in (funnel_home_in_tmp / "tokens.json").read_bytes()


def test_auto_encrypts_the_file_it_falls_back_to() -> None:
    store = open_token_store(keyring_backend=FAIL, state_keys=generate_state_key())
    assert isinstance(store, EncryptedTokenStore)
    assert isinstance(store.inner, FileTokenStore)


@pytest.mark.parametrize("kind", ["auto", "keyring"])
def test_the_keychain_is_not_wrapped_and_the_log_says_why(
    kind: TokenStoreKind, info_log: pytest.LogCaptureFixture
) -> None:
    store = open_token_store(
        kind, keyring_backend=SecureKeychain(), env={"FUNNEL_STATE_KEY": generate_state_key()}
    )
    assert isinstance(store, KeyringTokenStore)
    assert "the OS keychain encrypts its entries itself" in the_one_info_line(info_log)


def test_memory_is_not_wrapped(info_log: pytest.LogCaptureFixture) -> None:
    store = open_token_store("memory", state_keys=StateKeys.parse(generate_state_key()))
    assert isinstance(store, MemoryTokenStore)
    assert "never leaves the process" in the_one_info_line(info_log)


def test_a_bad_state_key_in_the_environment_is_a_clear_error() -> None:
    with pytest.raises(TokenStoreConfigError, match="FUNNEL_STATE_KEY: state key 1") as caught:
        open_token_store("file", env={"FUNNEL_STATE_KEY": "not-a-key-secret"})
    assert "not-a-key-secret" not in str(caught.value)


def test_redis_needs_a_url() -> None:
    with pytest.raises(TokenStoreConfigError, match="needs a URL"):
        open_token_store("redis", env={})


def test_a_redis_url_in_the_environment_opens_redis_without_showing_its_password(
    redis_url: str, info_log: pytest.LogCaptureFixture
) -> None:
    url = redis_url.replace("redis://", "redis://default:pw-secret@")
    store = open_token_store("file", env={"MCP_FUNNEL_TOKEN_STORE": url}, namespace="opentest")
    assert isinstance(store, RedisTokenStore)
    assert store.namespace == "opentest"
    assert "token store: redis" in the_one_info_line(info_log)
    warnings = [r.getMessage() for r in info_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unencrypted" in warnings[0]
    assert "pw-secret" not in info_log.text


def test_redis_with_a_state_key_is_encrypted_and_shared(redis_url: str) -> None:
    key = generate_state_key()
    env = {"MCP_FUNNEL_TOKEN_STORE": redis_url, "FUNNEL_STATE_KEY": key}
    namespace = f"t{secrets.token_hex(6)}"
    one = open_token_store(env=env, namespace=namespace)
    two = open_token_store("redis", url=redis_url, state_keys=key, namespace=namespace)
    assert isinstance(one, EncryptedTokenStore)
    assert isinstance(two, EncryptedTokenStore)
    inners = [one.inner, two.inner]
    assert all(isinstance(inner, RedisTokenStore) for inner in inners)

    async def shared() -> None:
        await one.set("oauth:github", b"token-in-clear")
        assert await two.get("oauth:github") == b"token-in-clear"
        raw = await inners[0].get("oauth:github")
        assert raw is not None
        assert b"token-in-clear" not in raw
        for inner in inners:
            assert isinstance(inner, RedisTokenStore)
            await inner.aclose()

    anyio.run(shared)
