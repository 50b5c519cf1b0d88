import random

import pytest

from funnel_proxy._names import (
    NameCollision,
    NameTable,
    is_valid_tool_name,
    namespaced_name,
    server_name_problem,
    suggest_server_name,
)


def test_plain_names_are_server_double_underscore_tool() -> None:
    table = NameTable([("github", "create_issue"), ("memory", "store-entity")])
    assert table.name_for("github", "create_issue") == "github__create_issue"
    assert table.name_for("memory", "store-entity") == "memory__store-entity"
    assert table.lookup("github__create_issue") == ("github", "create_issue")
    assert table.lookup("nope") is None
    assert namespaced_name("a", "b") == "a__b"
    assert namespaced_name("", "b") == "b"


@pytest.mark.parametrize(
    "tool", ["files/read", "créer", "with space", "x" * 70, "a.b.c", "", "////", "工具"]
)
def test_names_that_would_be_invalid_get_a_valid_alias(tool: str) -> None:
    table = NameTable([("srv", tool)])
    name = table.name_for("srv", tool)
    assert is_valid_tool_name(name), name
    assert name.startswith("srv__")
    assert table.lookup(name) == ("srv", tool)


def test_alias_is_readable_and_carries_a_stable_hash() -> None:
    name = NameTable([("fs", "files/read")]).name_for("fs", "files/read")
    # Pinned: the alias must not change between releases, or saved settings break.
    assert name == "fs__files_read_d5ed4591"


def test_long_names_are_cut_to_64_characters() -> None:
    server = "s" * 32
    tool = "t" * 40
    name = NameTable([(server, tool)]).name_for(server, tool)
    assert len(name) == 64
    assert is_valid_tool_name(name)


def test_aliases_do_not_depend_on_insertion_order() -> None:
    pairs = [("srv", f"tool.{i}") for i in range(50)] + [("srv", f"tool_{i}") for i in range(50)]
    first = NameTable(pairs)
    shuffled = pairs[:]
    random.Random(4).shuffle(shuffled)
    second = NameTable(shuffled + pairs[:10])
    assert dict(first.items()) == dict(second.items())
    assert list(first) == list(second)


def test_an_alias_never_collides_with_a_plain_name() -> None:
    table = NameTable([("srv", "a.b"), ("srv", "a_b")])
    assert table.name_for("srv", "a_b") == "srv__a_b"
    assert table.name_for("srv", "a.b") != "srv__a_b"
    assert len(set(table)) == 2


def test_colliding_plain_names_are_resolved_deterministically() -> None:
    # Only possible with server names the config would reject; the table copes anyway.
    pairs = [("a__b", "c"), ("a", "b__c")]
    table = NameTable(pairs)
    assert table.name_for("a", "b__c") == "a__b__c"  # sorts first, keeps the plain name
    other = table.name_for("a__b", "c")
    assert other != "a__b__c"
    assert is_valid_tool_name(other)
    assert NameTable(reversed(pairs)).name_for("a__b", "c") == other


def test_a_taken_alias_gets_a_longer_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    import funnel_proxy._names as names

    real = names._alias
    # Force the first-choice aliases of two pairs to coincide.
    monkeypatch.setattr(
        names,
        "_alias",
        lambda p, s, t, n: "srv__same_00000000" if n == 8 else real(p, s, t, n),
    )
    table = NameTable([("srv", "x/1"), ("srv", "x/2")])
    assert table.name_for("srv", "x/1") == "srv__same_00000000"
    longer = table.name_for("srv", "x/2")
    assert longer == real("srv", "srv", "x/2", 12)
    assert len(longer.rsplit("_", 1)[1]) == 12


def test_five_thousand_tools_get_unique_valid_names() -> None:
    pairs = [(f"s{i % 7}", f"tool/{i}" if i % 3 else f"tool_{i}") for i in range(5000)]
    table = NameTable(pairs)
    assert len(table) == 5000
    assert len(set(table)) == 5000
    assert all(is_valid_tool_name(name) for name in table)
    assert all(table.lookup(table.name_for(*pair)) == pair for pair in pairs)


def test_table_iterates_by_server_then_tool() -> None:
    table = NameTable([("b", "x"), ("a", "z"), ("a", "y")])
    assert list(table) == ["a__y", "a__z", "b__x"]
    assert "a__y" in table
    assert len(table) == 3
    assert repr(table) == "<NameTable 3 tools>"
    with pytest.raises(KeyError):
        table.name_for("c", "x")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("github", None),
        ("my-server_2", None),
        ("a", None),
        ("x" * 32, None),
        ("", "a server name must not be empty"),
        ("x" * 33, "a server name must be at most 32 characters"),
        ("Brave Search", 'a server name may only contain letters, digits, "-" and "_"'),
        ("my.server", 'a server name may only contain letters, digits, "-" and "_"'),
        ("-lead", "a server name must start and end with a letter or a digit"),
        ("trail_", "a server name must start and end with a letter or a digit"),
        ("a__b", 'a server name must not contain "__" (it separates server and tool)'),
    ],
)
def test_server_name_rules(name: str, problem: str | None) -> None:
    assert server_name_problem(name) == problem


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Brave Search", "Brave-Search"),
        ("my.server", "my-server"),
        ("a__b", "a_b"),
        ("...", "server"),
    ],
)
def test_suggested_server_names_are_usable(name: str, suggestion: str) -> None:
    assert suggest_server_name(name) == suggestion
    assert server_name_problem(suggestion) is None


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("a.b", False),
        ("a-b_C9", True),
    ],
)
def test_tool_name_validity(name: str, valid: bool) -> None:
    assert is_valid_tool_name(name) is valid


def test_a_prefix_replaces_the_server_name_in_exposed_names() -> None:
    table = NameTable([("github-enterprise", "create_issue")], prefixes={"github-enterprise": "gh"})
    assert table.name_for("github-enterprise", "create_issue") == "gh__create_issue"
    assert table.lookup("gh__create_issue") == ("github-enterprise", "create_issue")
    assert table.collisions == ()


def test_an_empty_prefix_exposes_the_backends_own_names() -> None:
    table = NameTable(
        [("everything", "echo"), ("everything", "files/read")], prefixes={"everything": ""}
    )
    assert table.name_for("everything", "echo") == "echo"
    alias = table.name_for("everything", "files/read")
    assert alias == "files_read_" + alias.rsplit("_", 1)[1]
    assert is_valid_tool_name(alias)
    assert table.collisions == ()


def test_the_first_server_in_config_order_keeps_a_contested_plain_name() -> None:
    pairs = [("zeta", "echo"), ("alpha", "echo"), ("alpha", "add")]
    prefixes = {"zeta": "", "alpha": ""}
    table = NameTable(pairs, prefixes=prefixes, priority=["zeta", "alpha"])
    assert table.name_for("zeta", "echo") == "echo"
    assert table.name_for("alpha", "echo") == "alpha__echo"
    assert table.name_for("alpha", "add") == "add"
    assert table.collisions == (NameCollision("echo", "zeta", "alpha", "echo", "alpha__echo"),)
    # The other order of the config gives the other winner; the input order never matters.
    flipped = NameTable(reversed(pairs), prefixes=prefixes, priority=["alpha", "zeta"])
    assert flipped.name_for("alpha", "echo") == "echo"
    assert flipped.name_for("zeta", "echo") == "zeta__echo"


def test_two_servers_given_one_prefix_follow_the_same_rule() -> None:
    table = NameTable(
        [("a", "x"), ("b", "x"), ("b", "y")], prefixes={"a": "p", "b": "p"}, priority=["a", "b"]
    )
    assert [table.name_for("a", "x"), table.name_for("b", "x"), table.name_for("b", "y")] == [
        "p__x",
        "b__x",
        "p__y",
    ]
    assert [c.resolved for c in table.collisions] == ["b__x"]


def test_a_disambiguated_name_never_takes_a_name_another_tool_wants() -> None:
    # "b__echo" is wanted as-is by the transparent server a, so b's echo gets an alias.
    table = NameTable(
        [("a", "echo"), ("a", "b__echo"), ("b", "echo")],
        prefixes={"a": "", "b": ""},
        priority=["a", "b"],
    )
    assert table.name_for("a", "b__echo") == "b__echo"
    other = table.name_for("b", "echo")
    assert other not in ("echo", "b__echo")
    assert other.startswith("echo_")
    assert is_valid_tool_name(other)
    assert table.collisions[0].resolved == other


def test_prompt_tables_accept_names_that_are_not_tool_names() -> None:
    table = NameTable([("s", "a prompt")], prefixes={"s": ""}, require_valid=False)
    assert table.name_for("s", "a prompt") == "a prompt"
