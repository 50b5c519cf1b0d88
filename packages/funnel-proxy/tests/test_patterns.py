import pytest

from funnel_proxy import PatternSet


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (["github__create_issue"], "github__create_issue", True),
        (["github__create_issue"], "github__create_issue2", False),
        (["github__create_issue"], "xgithub__create_issue", False),
        (["github__*"], "github__anything", True),
        (["github__*"], "github__", True),
        (["github__*"], "gitlab__anything", False),
        (["*__delete_*"], "fs__delete_file", True),
        (["*__delete_*"], "fs__undelete", False),
        (["*"], "", True),
        (["a*b*c"], "abc", True),
        (["a*b*c"], "aXbYc", True),
        (["a*b*c"], "acb", False),
        # Everything but "*" is literal: regex syntax has no power.
        (["a.c"], "abc", False),
        (["a.c"], "a.c", True),
        (["a?c"], "abc", False),
        (["[ab]"], "a", False),
        (["[ab]"], "[ab]", True),
        (["a+"], "aa", False),
        (["(x|y)"], "x", False),
        # Case-sensitive.
        (["GitHub__*"], "github__x", False),
        ([], "anything", False),
        (["x", "y__*"], "y__z", True),
        (["*"], "line\nbreak", True),
    ],
)
def test_pattern_matches_whole_names_with_star_as_only_wildcard(
    patterns: list[str], name: str, expected: bool
) -> None:
    assert PatternSet(patterns).matches(name) is expected
    assert (name in PatternSet(patterns)) is expected


def test_pattern_set_dedupes_keeps_order_and_compares_as_a_set() -> None:
    patterns = PatternSet(["b", "a", "b"])
    assert patterns.patterns == ("b", "a")
    assert list(patterns) == ["b", "a"]
    assert len(patterns) == 2
    assert patterns == PatternSet(["a", "b"])
    assert hash(patterns) == hash(PatternSet(["a", "b"]))
    assert patterns != PatternSet(["a"])
    assert bool(PatternSet()) is False
    assert repr(patterns) == "PatternSet(['b', 'a'])"
    assert 3 not in patterns


def test_many_patterns_compile_into_one_working_matcher() -> None:
    patterns = PatternSet(f"srv{i}__tool_*" for i in range(2000))
    assert patterns.matches("srv1999__tool_x")
    assert not patterns.matches("srv2000__tool_x")
