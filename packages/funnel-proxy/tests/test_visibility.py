import pytest

from funnel_proxy import FunnelConfig, Reason
from funnel_proxy._names import CORE_TOOL_NAMES
from funnel_proxy._visibility import Visibility, VisibilityPolicy


def policy(**kwargs: object) -> VisibilityPolicy:
    return VisibilityPolicy(FunnelConfig(**kwargs))  # type: ignore[arg-type]


# (config, tool, enabled names, registered, exposed, reason)
TABLE: list[tuple[dict[str, object], str, tuple[str, ...], bool, bool, Reason]] = [
    ({}, "gh__x", (), True, True, Reason.DEFAULT),
    ({"hide_tools": ("gh__x",)}, "gh__x", (), False, False, Reason.HIDDEN),
    (
        {"hide_tools": ("gh__*",)},
        "gh__x",
        ("gh__x",),
        False,
        False,
        Reason.HIDDEN,
    ),  # firewall beats enabling
    (
        {"hide_tools": ("gh__*",), "always_visible_tools": ("gh__x",)},
        "gh__x",
        (),
        True,
        True,
        Reason.ALWAYS,
    ),
    (
        {"hide_tools": ("gh__*",), "always_visible_tools": ("gh__x",)},
        "gh__y",
        (),
        False,
        False,
        Reason.HIDDEN,
    ),
    ({"expose_tools": ()}, "gh__x", (), True, False, Reason.ALLOWLIST),
    ({"expose_tools": ()}, "gh__x", ("gh__x",), True, True, Reason.ENABLED),
    ({"expose_tools": ("gh__*",)}, "gh__x", (), True, True, Reason.ALLOWLIST),
    ({"expose_tools": ("gh__*",)}, "fs__x", (), True, False, Reason.ALLOWLIST),
    (
        {"expose_tools": (), "always_visible_tools": ("gh__x",)},
        "gh__x",
        (),
        True,
        True,
        Reason.ALWAYS,
    ),
    (
        {"always_visible_tools": ("gh__x",)},
        "gh__x",
        ("gh__x",),
        True,
        True,
        Reason.ALWAYS,
    ),  # always before enabled
    ({}, "gh__x", ("gh__x",), True, True, Reason.ENABLED),
    ({"hide_tools": ("fs__*",)}, "gh__x", (), True, True, Reason.DEFAULT),
]


Case = tuple[dict[str, object], str, tuple[str, ...], bool, bool, Reason]


@pytest.mark.parametrize("case", TABLE, ids=lambda case: f"{case[1]}-{case[5]}")
def test_filter_precedence(case: Case) -> None:
    config, tool, enabled, registered, exposed, reason = case
    verdict = policy(**config).decide(tool, enabled=frozenset(enabled))
    assert verdict == Visibility(registered=registered, exposed=exposed, reason=reason)
    assert policy(**config).registered(tool) is registered


def test_patterns_also_match_the_alias() -> None:
    p = policy(hide_tools=("fs__files_read_*",), expose_tools=("gh__*",))
    assert p.decide("fs__files/read", alias="fs__files_read_d5ed4591").reason is Reason.HIDDEN
    assert p.decide("gh__a.b", alias="gh__a_b_1234").exposed
    assert p.decide("x__a.b", alias="x__a_b_1", enabled={"x__a_b_1"}).reason is Reason.ENABLED


@pytest.mark.parametrize(
    ("expose_core_tools", "offered"),
    [
        (None, CORE_TOOL_NAMES),
        ((), ()),
        (("get_tool_schema",), ("get_tool_schema",)),
        (("*_tool_*",), ("bridge_tool_request", "get_tool_schema")),
    ],
)
def test_core_tools_follow_expose_core_tools(
    expose_core_tools: tuple[str, ...] | None, offered: tuple[str, ...]
) -> None:
    p = policy(expose_core_tools=expose_core_tools, hide_tools=("*",), expose_tools=())
    assert p.core_tools == offered
    for name in CORE_TOOL_NAMES:
        verdict = p.decide(name)
        assert p.core_tool_enabled(name) is (name in offered)
        if name in offered:
            # Core tools ignore hideTools and the allowlist.
            assert verdict == Visibility(registered=True, exposed=True, reason=Reason.CORE)
        else:
            assert verdict == Visibility(registered=False, exposed=False, reason=Reason.HIDDEN)


def test_core_tools_mode_is_an_empty_expose_tools() -> None:
    assert policy(expose_tools=()).core_tools_mode is True
    assert policy().core_tools_mode is False
    assert policy(expose_tools=("a__*",)).core_tools_mode is False


def test_toolsets() -> None:
    p = policy(toolsets={"review": ("gh__*_pull_request*",), "a": ()})
    assert p.toolset_names == ("a", "review")
    review = p.toolset("review")
    assert review is not None
    assert review.matches("gh__get_pull_request")
    assert p.toolset("nope") is None
