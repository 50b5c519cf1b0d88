"""build_surface: names, filters and the collision rule, from plain data and no I/O."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from funnel_proxy import Conflict, FunnelConfig, Reason, build_surface
from funnel_proxy._visibility import VisibilityPolicy


@dataclass(frozen=True)
class State:
    name: str
    status: str = "connected"
    lists: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)


def tools(*names: str) -> tuple[dict[str, Any], ...]:
    return tuple({"name": n, "inputSchema": {"type": "object"}} for n in names)


def backend(
    name: str,
    *,
    status: str = "connected",
    tool_names: Sequence[str] = (),
    prompts: Sequence[str] = (),
    resources: Sequence[str] = (),
    templates: Sequence[str] = (),
) -> State:
    return State(
        name,
        status,
        {
            "tools": tools(*tool_names),
            "prompts": tuple({"name": p} for p in prompts),
            "resources": tuple({"uri": u, "name": u} for u in resources),
            "resourceTemplates": tuple({"uriTemplate": t, "name": t} for t in templates),
        },
    )


POLICY = VisibilityPolicy(FunnelConfig())


def test_default_names_are_namespaced_by_the_server_name() -> None:
    surface = build_surface([backend("github", tool_names=["create_issue"])], POLICY)
    (entry,) = surface.tools
    assert (entry.name, entry.server, entry.original) == (
        "github__create_issue",
        "github",
        "create_issue",
    )
    assert entry.definition["name"] == "github__create_issue"
    assert surface.exposed_tools == [
        {"name": "github__create_issue", "inputSchema": {"type": "object"}}
    ]
    assert surface.conflicts == ()


def test_an_empty_prefix_makes_the_funnel_transparent() -> None:
    state = backend(
        "everything",
        tool_names=["test_simple_text"],
        prompts=["test_simple_prompt"],
        resources=["test://static-text"],
        templates=["test://template/{id}/data"],
    )
    surface = build_surface([state], POLICY, prefixes={"everything": ""})
    assert [t["name"] for t in surface.exposed_tools] == ["test_simple_text"]
    assert surface.by_name["test_simple_text"].original == "test_simple_text"
    assert [p["name"] for p in surface.prompts] == ["test_simple_prompt"]
    assert surface.prompt_owner == {"test_simple_prompt": ("everything", "test_simple_prompt")}
    assert surface.owner_of_resource("test://static-text") == "everything"
    assert surface.owner_of_resource("test://template/7/data") == "everything"
    assert surface.owner_of_resource("other://x") is None


def test_prompts_follow_the_prefix_too() -> None:
    surface = build_surface([backend("s", prompts=["greet"])], POLICY, prefixes={"s": "p"})
    assert surface.prompts == ({"name": "p__greet"},)
    assert surface.prompt_owner == {"p__greet": ("s", "greet")}


def test_two_transparent_backends_with_one_tool_name_keep_both_tools() -> None:
    states = [backend("zeta", tool_names=["echo", "add"]), backend("alpha", tool_names=["echo"])]
    surface = build_surface(states, POLICY, prefixes={"zeta": "", "alpha": ""})
    assert {e.name: (e.server, e.original) for e in surface.tools} == {
        "alpha__echo": ("alpha", "echo"),
        "add": ("zeta", "add"),
        "echo": ("zeta", "echo"),
    }
    assert surface.conflicts == (Conflict("tool", "echo", "zeta", "alpha", "alpha__echo"),)
    assert surface.conflicts[0].describe() == (
        'tool "echo" is offered by zeta and alpha: zeta keeps the name, alpha\'s is "alpha__echo"'
    )


def test_the_config_order_decides_not_the_connect_order() -> None:
    # alpha is first in the config but down: zeta's echo still does not take its name.
    states = [
        backend("alpha", status="reconnecting", tool_names=["echo"]),
        backend("zeta", tool_names=["echo"]),
    ]
    surface = build_surface(states, POLICY, prefixes={"zeta": "", "alpha": ""})
    assert [e.name for e in surface.tools] == ["zeta__echo"]
    assert surface.unavailable == {"echo": "alpha"}


def test_the_first_server_owns_a_shared_resource_uri_and_the_conflict_is_recorded() -> None:
    states = [
        backend("b", resources=["file:///shared", "file:///b"], templates=["db://{table}"]),
        backend("a", resources=["file:///shared"], templates=["db://{table}", "db://users/{id}"]),
    ]
    surface = build_surface(states, POLICY)
    assert [r["uri"] for r in surface.resources] == ["file:///shared", "file:///b"]
    assert surface.owner_of_resource("file:///shared") == "b"
    assert [t["uriTemplate"] for t in surface.resource_templates] == [
        "db://{table}",
        "db://users/{id}",
    ]
    # The longest literal prefix wins: a's more specific template serves db://users/…
    assert surface.owner_of_resource("db://users/7") == "a"
    assert surface.owner_of_resource("db://orders") == "b"
    assert surface.conflicts == (
        Conflict("resource", "file:///shared", "b", "a"),
        Conflict("resource_template", "db://{table}", "b", "a"),
    )
    assert surface.conflicts[0].describe() == (
        'resource "file:///shared" is offered by b and a: b serves it, a\'s is not listed'
    )


def test_a_backend_that_is_down_serves_nothing_but_its_tools_are_known() -> None:
    states = [
        backend("up", tool_names=["x"]),
        backend("down", status="failed", tool_names=["y"], prompts=["p"], resources=["r://1"]),
    ]
    surface = build_surface(states, POLICY)
    assert [e.name for e in surface.tools] == ["up__x"]
    assert surface.unavailable == {"down__y": "down"}
    assert surface.prompts == ()
    assert surface.resources == ()


def test_patterns_match_the_exposed_names_plain_ones_under_an_empty_prefix() -> None:
    policy = VisibilityPolicy(
        FunnelConfig(hide_tools=("delete_*",), expose_tools=("get_*", "gh__list"))
    )
    states = [
        backend("fs", tool_names=["get_file", "delete_file", "put_file"]),
        backend("github", tool_names=["list", "delete_repo"]),
    ]
    surface = build_surface(states, policy, prefixes={"fs": "", "github": "gh"})
    verdicts = {e.name: (e.exposed, e.reason) for e in surface.tools}
    assert verdicts == {
        "get_file": (True, Reason.ALLOWLIST),
        "put_file": (False, Reason.ALLOWLIST),
        "gh__delete_repo": (False, Reason.ALLOWLIST),
        "gh__list": (True, Reason.ALLOWLIST),
    }


def test_a_disambiguated_name_is_matched_by_patterns_and_can_be_enabled() -> None:
    policy = VisibilityPolicy(FunnelConfig(expose_tools=()))
    states = [backend("a", tool_names=["echo"]), backend("b", tool_names=["echo"])]
    prefixes = {"a": "", "b": ""}
    before = build_surface(states, policy, prefixes=prefixes)
    assert [(e.name, e.exposed) for e in before.tools] == [("echo", False), ("b__echo", False)]
    after = build_surface(states, policy, {"b__echo"}, prefixes=prefixes)
    assert after.by_name["b__echo"].exposed
    assert after.by_name["b__echo"].reason is Reason.ENABLED
    assert not after.by_name["echo"].exposed


def test_the_same_states_always_give_the_same_surface() -> None:
    states = [backend("a", tool_names=["x/1", "x_1", "echo"]), backend("b", tool_names=["echo"])]
    first = build_surface(states, POLICY, prefixes={"a": "", "b": ""})
    again = build_surface(list(states), POLICY, prefixes={"a": "", "b": ""})
    assert first == again
    assert len({e.name for e in first.tools}) == 4
