"""The environment of a stdio backend: built from parts, never inherited whole.

A child process gets exactly, later parts winning:

1. the **passthrough** variables of funnel's own environment: ``defaultPassthroughEnv``
   when the config has it (``[]`` passes nothing; ``*`` wildcards allowed, e.g.
   ``LC_*``), else :data:`DEFAULT_PASSTHROUGH_ENV`; on Windows also
   :data:`WINDOWS_ESSENTIAL_ENV` (system paths without which programs do not start;
   nothing secret), matched case-insensitively as Windows does;
2. the top-level ``defaultSecretProviders``;
3. the server's ``secretProviders`` (and VS Code ``envFile``);
4. the server's ``env``, whose ``${VAR}`` references are resolved against the
   environment built so far and then funnel's own environment. Naming a variable in
   the config is an explicit grant, so ``"TOKEN": "${GITHUB_TOKEN}"`` works as it does
   in Claude's configs; nothing that is not named or passed through reaches the child.
   Values do not see each other (``env`` is not order-dependent).

The original merged its whole ``process.env`` into every child; this is the fix.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from funnel_proxy._errors import ConfigError
from funnel_proxy._interpolate import interpolate
from funnel_proxy._models import FunnelConfig, ServerConfig
from funnel_proxy._patterns import PatternSet
from funnel_proxy._secrets import resolve_secrets

__all__ = [
    "DEFAULT_PASSTHROUGH_ENV",
    "WINDOWS_ESSENTIAL_ENV",
    "build_server_env",
    "passthrough_env",
]

DEFAULT_PASSTHROUGH_ENV: Final = (
    "HOME",
    "USER",
    "PATH",
    "TERM",
    "CI",
    "DEBUG",
    "NODE_ENV",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "SHELL",
)
"""What a stdio child inherits when the config has no ``defaultPassthroughEnv``."""

WINDOWS_ESSENTIAL_ENV: Final = (
    "SystemRoot",
    "SystemDrive",
    "ComSpec",
    "PATHEXT",
    "WINDIR",
    "ProgramFiles",
    "ProgramFiles(x86)",
    "ProgramW6432",
    "ProgramData",
    "APPDATA",
    "LOCALAPPDATA",
    "USERPROFILE",
    "USERNAME",
    "HOMEDRIVE",
    "HOMEPATH",
    "PUBLIC",
    "TEMP",
    "TMP",
)
"""Always passed on Windows, in addition to the passthrough list."""


def passthrough_env(
    config: FunnelConfig, *, environ: Mapping[str, str], platform: str = sys.platform
) -> dict[str, str]:
    """The variables of ``environ`` that every stdio child inherits (step 1)."""
    names = (
        DEFAULT_PASSTHROUGH_ENV
        if config.default_passthrough_env is None
        else config.default_passthrough_env
    )
    if platform == "win32":
        wanted = PatternSet(name.upper() for name in (*names, *WINDOWS_ESSENTIAL_ENV))
        return {key: value for key, value in environ.items() if wanted.matches(key.upper())}
    if not any("*" in name for name in names):
        return {name: environ[name] for name in names if name in environ}
    patterns = PatternSet(names)
    return {key: value for key, value in environ.items() if patterns.matches(key)}


def build_server_env(
    server: ServerConfig,
    config: FunnelConfig,
    *,
    environ: Mapping[str, str],
    base_dir: Path,
    platform: str = sys.platform,
) -> dict[str, str]:
    """The complete environment for ``server``'s process (see the module docs).

    Reads the dotenv files of the secret providers; call it at each (re)start so edits
    to them apply.

    Args:
        server: The server (its ``env`` is empty unless it is a stdio server).
        config: The whole config (passthrough list, default secret providers).
        environ: funnel's own environment.
        base_dir: What still-relative dotenv paths are relative to
            (:attr:`LoadedConfig.base_dir`).
        platform: ``sys.platform``, for tests.

    Raises:
        ConfigError: An ``env`` value names an unset variable without default, or a
            dotenv file cannot be parsed.
    """
    env = passthrough_env(config, environ=environ, platform=platform)
    env.update(resolve_secrets(config.default_secret_providers, environ=environ, base_dir=base_dir))
    env.update(resolve_secrets(server.secret_providers, environ=environ, base_dir=base_dir))
    built = dict(env)

    def lookup(name: str) -> str | None:
        found = built.get(name)
        return found if found is not None else environ.get(name)

    for key, template in server.env.items():
        try:
            env[key] = interpolate(template, lookup, path=f"$.servers.{server.name}.env.{key}")
        except ConfigError as exc:
            raise ConfigError(
                f"{exc.message} (needed to start server {server.name!r})",
                path=exc.path,
                hint=exc.hint,
            ) from None
    return env
