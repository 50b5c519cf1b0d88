"""The ranker's parts, each seen through search results: stems, CJK, compounds,
prefixes, synonyms, the semantic signal, the pure-Python path and incremental builds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from funnel_proxy import SearchEntry, SearchIndex, load_embedder, search_entry
from funnel_proxy import _search as search_module

TOOLS = [
    SearchEntry("fs__move_file", "fs", "Move or relocate files and directories.", ("source",)),
    SearchEntry("fs__read_file", "fs", "Read the contents of a file.", ("path",)),
    SearchEntry("pay__charge_card", "pay", "Charge a card for an amount.", ("amount",)),
    SearchEntry("crm__add_contact", "crm", "Add a contact person.", ("name",)),
    SearchEntry("crm__set_address", "crm", "Set the postal address of a contact.", ("address",)),
    SearchEntry("pdf__merge_pdfs", "pdf", "Merge several PDF documents into one.", ("paths",)),
    SearchEntry("weather__get_forecast", "weather", "Weather forecast for a place.", ("lat",)),
    SearchEntry("datagov__package_search", "datagov", "Search the catalogue.", ("q",)),
    SearchEntry("data__describe", "data", "Describe a data table.", ()),
    SearchEntry("gov__agencies", "gov", "List agencies.", ()),
    SearchEntry("cook__recommend", "cook", "根据人数智能推荐菜谱 创建膳食计划", ("count",)),
    SearchEntry("cook__all", "cook", "获取所有菜谱", ()),
]


@pytest.fixture(params=["numpy", "pure"])
def scoring(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every ranking test runs on both scoring paths, which must agree."""
    if request.param == "pure":
        monkeypatch.setattr(search_module, "_numpy", None)
    return str(request.param)


def top(query: str, entries: list[SearchEntry] = TOOLS, **kwargs: bool) -> list[str]:
    return [hit.name for hit in SearchIndex(entries).search(query, 5, **kwargs)]


def test_inflections_meet_through_the_snowball_stemmer(scoring: str) -> None:
    assert top("charging")[0] == "pay__charge_card"
    assert top("merging pdf")[0] == "pdf__merge_pdfs"


def test_a_query_that_shares_no_word_finds_the_tool_through_synonyms(scoring: str) -> None:
    assert top("rename a file")[0] == "fs__move_file"
    assert top("combine documents")[0] == "pdf__merge_pdfs"
    assert top("will it rain")[0] == "weather__get_forecast"


def test_short_words_do_not_prefix_match_into_other_words(scoring: str) -> None:
    ranked = top("add")
    assert ranked[0] == "crm__add_contact"
    assert "crm__set_address" not in ranked
    assert "crm__set_address" not in top("how")


def test_question_filler_is_ignored(scoring: str) -> None:
    assert top("how do I read a file please")[0] == "fs__read_file"


def test_chinese_phrases_match_through_character_bigrams(scoring: str) -> None:
    assert top("推荐菜谱")[0] == "cook__recommend"
    assert top("膳食计划") == ["cook__recommend"]
    assert set(top("菜谱")) == {"cook__recommend", "cook__all"}


def test_compound_server_names_split_into_known_words(scoring: str) -> None:
    assert top("datagov")[0] == "datagov__package_search"
    assert "datagov__package_search" in top("gov search")
    assert top("data.gov search")[0] == "datagov__package_search"


def test_and_searches_keep_only_tools_matching_every_word(scoring: str) -> None:
    assert top("read file", match_all=True) == ["fs__read_file"]
    assert top("read zebra", match_all=True) == []


def test_both_scoring_paths_give_the_same_ranking(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = ["rename a file", "charge", "推荐", "datagov", "contact address", "zebra"]
    fast = [SearchIndex(TOOLS).search(q, 10) for q in queries]
    monkeypatch.setattr(search_module, "_numpy", None)
    pure = [SearchIndex(TOOLS).search(q, 10) for q in queries]
    assert [[h.name for h in hits] for hits in fast] == [[h.name for h in hits] for hits in pure]
    for a, b in zip(fast, pure, strict=True):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-5)


def test_an_incremental_rebuild_ranks_like_a_fresh_build() -> None:
    first = SearchIndex(TOOLS)
    changed = [*TOOLS[1:], SearchEntry("fs__move_file", "fs", "Rename a file in place.")]
    rebuilt = SearchIndex(changed, previous=first)
    fresh = SearchIndex(changed)
    for query in ["move", "rename", "relocate", "charge"]:
        assert rebuilt.search(query) == fresh.search(query)
    assert len(rebuilt) == len(TOOLS)


def test_search_entry_reads_a_tool_definition() -> None:
    entry = search_entry(
        "gh__create_issue",
        "gh",
        {
            "description": "Create an issue",
            "inputSchema": {
                "type": "object",
                "properties": {"title": {"description": "Issue title"}, "body": {}},
            },
        },
    )
    assert entry.parameters == ("title", "body")
    assert entry.parameter_text == "Issue title"
    assert search_entry("x__y", "x", {"inputSchema": "garbage"}).parameters == ()


def test_explain_names_the_terms_that_matched() -> None:
    index = SearchIndex(TOOLS)
    lines = index.explain("rename file", "fs__move_file")
    assert lines[0] == "concepts: renam, file"
    assert "via move x0.6" in lines[1]
    assert "via file x1" in lines[2]
    assert index.explain("rename", "nope__nothing") == ["nope__nothing: not in the index"]


def test_the_semantic_signal_finds_tools_no_word_reaches() -> None:
    embedder = load_embedder()
    if embedder is None:
        pytest.skip("the semantic extra (wordllama) is not installed")
    entries = [
        SearchEntry("fx__latest", "fx", "Latest conversion figures between two monies."),
        SearchEntry("fs__read_file", "fs", "Read the contents of a file."),
        SearchEntry("fs__list_directory", "fs", "List a directory."),
    ]
    assert SearchIndex(entries).search("how much is a yen in euros") == []
    index = SearchIndex(entries, embedder=embedder)
    assert index.semantic
    assert index.search("how much is a yen in euros")[0].name == "fx__latest"
    assert index.search("read file")[0].name == "fs__read_file"


_RANK_IN_A_CHILD = """
from funnel_proxy import SearchEntry, SearchIndex
tools = [
    SearchEntry("gh__list_pull_requests", "gh", "List pull requests"),
    SearchEntry("gl__list_merge_requests", "gl", "List merge requests"),
    SearchEntry("fs__move_file", "fs", "Move or relocate a file"),
    SearchEntry("pay__charge", "pay", "Charge money for an invoice"),
]
index = SearchIndex(tools)
for query in ["list prs", "rename file", "bill someone", "remove a file"]:
    print([(h.name, h.score) for h in index.search(query)])
"""


def test_the_ranking_does_not_depend_on_the_hash_seed() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-c", _RANK_IN_A_CHILD],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(outputs) == 1
    assert "gh__list_pull_requests" in outputs.pop()


def test_without_the_semantic_extra_search_is_lexical(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "wordllama", None)  # importing it now fails
    assert load_embedder.__wrapped__() is None
    assert "lexical: the semantic extra is not installed" in caplog.text
    index = SearchIndex(TOOLS, embedder=None)
    assert not index.semantic
    assert index.search("rename a file")[0].name == "fs__move_file"
