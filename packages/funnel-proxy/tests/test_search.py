import random
import string

import pytest

from funnel_proxy._search import SearchEntry, SearchHit, SearchIndex, words

CATALOGUE = [
    SearchEntry(
        "github__create_issue",
        "github",
        "Create a new issue in a GitHub repository",
        ("owner", "repo", "title", "body"),
    ),
    SearchEntry(
        "github__list_issues",
        "github",
        "List issues in a GitHub repository with filtering",
        ("owner", "repo", "state"),
    ),
    SearchEntry(
        "github__get_pull_request",
        "github",
        "Get details of a specific pull request",
        ("owner", "repo", "pullNumber"),
    ),
    SearchEntry(
        "github__create_pull_request",
        "github",
        "Create a new pull request",
        ("owner", "repo", "title", "head", "base"),
    ),
    SearchEntry(
        "github__search_repositories", "github", "Search for GitHub repositories", ("query",)
    ),
    SearchEntry(
        "fs__read_file",
        "fs",
        "Read the complete contents of a file from the file system",
        ("path",),
    ),
    SearchEntry(
        "fs__write_file",
        "fs",
        "Create a new file or overwrite an existing file",
        ("path", "content"),
    ),
    SearchEntry(
        "fs__list_directory", "fs", "Get a detailed listing of all files and directories", ("path",)
    ),
    SearchEntry(
        "memory__create_entities",
        "memory",
        "Create multiple new entities in the knowledge graph",
        ("entities",),
    ),
    SearchEntry(
        "slack__post_message",
        "slack",
        "Post a new message to a Slack channel",
        ("channel_id", "text"),
    ),
    SearchEntry(
        "time__get_current_time", "time", "Get the current time in a timezone", ("timezone",)
    ),
]


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    return SearchIndex(CATALOGUE)


def names(index: SearchIndex, query: str, limit: int = 10, **kwargs: bool) -> list[str]:
    return [hit.name for hit in index.search(query, limit, **kwargs)]


@pytest.mark.parametrize(
    ("query", "first"),
    [
        ("create issue", "github__create_issue"),
        ("createIssue", "github__create_issue"),
        ("create_issue", "github__create_issue"),
        ("CREATE-ISSUE", "github__create_issue"),
        ("read file", "fs__read_file"),
        ("write", "fs__write_file"),
        ("post message slack", "slack__post_message"),
        ("knowledge graph", "memory__create_entities"),
        ("timezone", "time__get_current_time"),
        ("repositories", "github__search_repositories"),
        ("get current time", "time__get_current_time"),
        ("the pull request", "github__get_pull_request"),
    ],
)
def test_the_obvious_tool_comes_first(index: SearchIndex, query: str, first: str) -> None:
    assert names(index, query)[0] == first


def test_name_hits_outrank_description_hits(index: SearchIndex) -> None:
    # "file" is in fs__write_file's name and only in list_directory's description.
    ranked = names(index, "file")
    assert ranked[:2] == ["fs__read_file", "fs__write_file"]
    assert ranked.index("fs__list_directory") > 1


def test_tools_matching_every_word_come_before_partial_matches(index: SearchIndex) -> None:
    ranked = names(index, "create issue")
    assert ranked[0] == "github__create_issue"
    partial = {"github__list_issues", "github__create_pull_request", "memory__create_entities"}
    assert partial <= set(ranked[1:])


def test_plural_and_prefix_forms_match(index: SearchIndex) -> None:
    assert names(index, "issues")[:2] == ["github__create_issue", "github__list_issues"]
    assert "github__search_repositories" in names(index, "repo")
    assert names(index, "dir")[0] == "fs__list_directory"


def test_parameters_are_searchable(index: SearchIndex) -> None:
    assert names(index, "channel")[0] == "slack__post_message"
    assert names(index, "pull number")[0] == "github__get_pull_request"


def test_server_names_are_searchable(index: SearchIndex) -> None:
    assert set(names(index, "slack")) == {"slack__post_message"}
    assert {name.split("__")[0] for name in names(index, "github", 5)} == {"github"}


def test_match_all_is_an_and_search(index: SearchIndex) -> None:
    assert names(index, "create pull", match_all=True) == ["github__create_pull_request"]
    assert names(index, "create zebra", match_all=True) == []


def test_no_match_empty_query_and_limits(index: SearchIndex) -> None:
    assert index.search("zebra") == []
    assert index.search("") == []
    assert index.search("   ,, ") == []
    assert index.search("create", limit=0) == []
    assert len(index.search("create", limit=2)) == 2
    assert len(index) == len(CATALOGUE)


def test_stop_words_alone_still_search_names() -> None:
    index = SearchIndex([SearchEntry("s__for_each", "s", "for all the items")])
    assert [h.name for h in index.search("for")] == ["s__for_each"]


def test_results_are_deterministic_with_ties_broken_by_name() -> None:
    twins = [SearchEntry(f"s__tool_{c}", "s", "twin words") for c in "cab"]
    index = SearchIndex(twins)
    hits = index.search("twin")
    assert [h.name for h in hits] == ["s__tool_a", "s__tool_b", "s__tool_c"]
    assert len({h.score for h in hits}) == 1
    assert SearchIndex(reversed(twins)).search("twin") == hits
    assert isinstance(hits[0], SearchHit)


def test_a_later_entry_replaces_an_earlier_one_of_the_same_name() -> None:
    index = SearchIndex([SearchEntry("s__a", "s", "old"), SearchEntry("s__a", "s", "new")])
    assert index.search("old") == []
    assert [h.name for h in index.search("new")] == ["s__a"]


def test_words_splits_every_naming_style() -> None:
    assert words("getPullRequest") == ["get", "pull", "request"]
    assert words("get_pull-request.v2/HTTPServer") == [
        "get",
        "pull",
        "request",
        "v",
        "2",
        "http",
        "server",
    ]
    assert words("repositories classes boxes status") == ["repositori", "class", "box", "status"]
    assert words("créer_fichier") == ["créer", "fichier"]
    assert words("charging charged charges") == ["charg"] * 3


def test_five_thousand_tools_index_and_search_sanely() -> None:
    rng = random.Random(7)
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(800)]
    entries = [
        SearchEntry(
            f"s{i % 25}__{'_'.join(rng.sample(vocab, 3))}_{i}",
            f"s{i % 25}",
            " ".join(rng.sample(vocab, 12)),
            tuple(rng.sample(vocab, 3)),
        )
        for i in range(5000)
    ]
    needle = SearchEntry("s1__frobnicate_widget", "s1", "Frobnicate a widget", ("widget_id",))
    index = SearchIndex([*entries, needle])
    assert len(index) == 5001
    assert index.search("frobnicate widget")[0].name == "s1__frobnicate_widget"
    for entry in rng.sample(entries, 20):
        tool = entry.name.split("__", 1)[1].rsplit("_", 1)[0]
        assert entry.name in [h.name for h in index.search(tool.replace("_", " "), 5)]


def test_a_brand_typed_whole_finds_its_camel_case_spelling() -> None:
    index = SearchIndex(
        [
            SearchEntry("vcs__open_issue", "vcs", "Open an issue on GitHub", ("repo",)),
            SearchEntry("vcs__open_ticket", "vcs", "Open a ticket in the tracker"),
        ]
    )
    assert [hit.name for hit in index.search("github")] == ["vcs__open_issue"]
    assert index.search("GitHub issue")[0].name == "vcs__open_issue"
