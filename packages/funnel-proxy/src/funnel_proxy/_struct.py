"""The base of every config model, and masking for values that may be secret."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

__all__ = ["ConfigStruct", "masked"]


class ConfigStruct(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="camel"
):
    """Config models: keyword-only, immutable, camelCase in JSON, unknown keys refused."""


def masked(values: Mapping[str, str]) -> dict[str, str]:
    """The keys of ``values`` with every value replaced by ``***`` (for ``repr``)."""
    return dict.fromkeys(values, "***")
