from __future__ import annotations

import funnel_tokenstore
import funnel_tokenstore.testing


def test_public_names_are_pinned() -> None:
    assert funnel_tokenstore.__all__ == [
        "STATE_KEY_ENV",
        "EncryptedTokenStore",
        "FileTokenStore",
        "InvalidKey",
        "KeyringTokenStore",
        "MemoryTokenStore",
        "RedisTokenStore",
        "Rotation",
        "StateKeys",
        "TokenStore",
        "TokenStoreConfigError",
        "TokenStoreCorrupt",
        "TokenStoreError",
        "TokenStoreKind",
        "TokenStoreLockTimeout",
        "TokenStoreUnavailable",
        "__version__",
        "funnel_home",
        "generate_state_key",
        "open_token_store",
    ]


def test_every_public_name_exists() -> None:
    for name in funnel_tokenstore.__all__:
        assert hasattr(funnel_tokenstore, name), name


def test_testing_module_exports_the_contract() -> None:
    assert funnel_tokenstore.testing.__all__ == [
        "KeyFactory",
        "RedisUnavailable",
        "TokenStoreContract",
        "redis_server",
    ]


def test_every_error_is_a_token_store_error() -> None:
    errors = [
        funnel_tokenstore.InvalidKey,
        funnel_tokenstore.TokenStoreConfigError,
        funnel_tokenstore.TokenStoreCorrupt,
        funnel_tokenstore.TokenStoreLockTimeout,
        funnel_tokenstore.TokenStoreUnavailable,
    ]
    for error in errors:
        assert issubclass(error, funnel_tokenstore.TokenStoreError)
    assert issubclass(funnel_tokenstore.TokenStoreLockTimeout, TimeoutError)
    assert issubclass(funnel_tokenstore.InvalidKey, ValueError)
    assert issubclass(funnel_tokenstore.TokenStoreConfigError, ValueError)
