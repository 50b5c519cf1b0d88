import pickle

import pytest

from funnel_proxy import ConfigError, ConfigNotFound, ProxyError


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            ConfigError(
                'unknown key "trasport"',
                file=".mcp-funnel.json",
                path="$.servers.github.trasport",
                hint='did you mean "transport"?',
            ),
            '.mcp-funnel.json: $.servers.github.trasport: unknown key "trasport" (did you mean "transport"?)',
        ),
        (ConfigError("bad", path="$.x"), "$.x: bad"),
        (ConfigError("bad", file="f.json"), "f.json: bad"),
        (ConfigError("bad"), "bad"),
    ],
)
def test_config_error_reads_file_path_message_hint(error: ConfigError, text: str) -> None:
    assert str(error) == text


def test_config_errors_keep_their_parts_and_survive_pickling() -> None:
    error = ConfigNotFound("no config", file="x", path="$", hint="h")
    assert isinstance(error, ConfigError)
    assert isinstance(error, ProxyError)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 -- our own bytes, just made
    assert type(copy) is ConfigNotFound
    assert (copy.message, copy.path, copy.file, copy.hint) == ("no config", "$", "x", "h")
