"""Ranked keyword search over tools, for ``discover_tools_by_words``.

Theory of operation. Every tool is cut into words from four fields: its name (the part
after ``server__``, split at ``_``, ``-``, ``.``, ``/``, case changes and digits, so
``getPullRequest`` and ``get_pull_request`` give the same words), its server, its
parameter names and its description. Words are lower-cased and lightly stemmed
(``issues`` → ``issue``, ``repositories`` → ``repository``); common English words are
dropped from descriptions and queries.

The index maps each word to the tools that contain it, with a weight per field: a word
in the name counts 8, in the server 3, in a parameter 2, in the description up to ~2
(BM25-saturated, shorter descriptions count more). A query word also reaches the
words it is a prefix of (``repo`` → ``repository``, at 0.6) and the words that are a
prefix of it (``repositories`` → ``repo``, at 0.5). Rarer words count more (IDF).

A tool's score is the sum over query words of its best match for each, multiplied by
``(matched query words / query words)²``, so tools that match every word come first,
by 1.5 when every query word hits the name, and by 2 when the whole query is the name.
Only tools reached through the inverted index are scored: a query costs the size of
its posting lists, not of the catalogue.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["SearchEntry", "SearchHit", "SearchIndex", "words"]

# ASCII capitals start camelCase words; every other letter (lower case, accented, CJK)
# continues one, so "créer" stays whole.
_WORD: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[^\W\dA-Z_]+|[A-Z]+|\d+")
_STOP: Final = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "for",
        "from",
        "has",
        "have",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "use",
        "used",
        "uses",
        "using",
        "was",
        "will",
        "with",
        "you",
        "your",
    ]
)
_NAME_WEIGHT: Final = 8.0
_SERVER_WEIGHT: Final = 3.0
_PARAM_WEIGHT: Final = 2.0
_DESC_WEIGHT: Final = 1.0
_PREFIX_OF_WORD: Final = 0.6
_WORD_IS_PREFIX: Final = 0.5
_MIN_PREFIX: Final = 3
_BM25_K: Final = 1.2
_BM25_B: Final = 0.75


@functools.lru_cache(maxsize=1 << 16)
def _normalize(token: str) -> str:
    return _stem(token.lower())


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """The normalised words of ``text``, in order (stop words kept).

    Example:
        >>> words("getPullRequests for my-repo_v2")
        ['get', 'pull', 'request', 'for', 'my', 'repo', 'v', '2']
    """
    return [_normalize(token) for token in _WORD.findall(text)]


_CHUNK: Final = re.compile(r"[A-Za-z0-9]+")


def _terms(text: str) -> list[str]:
    """:func:`words`, plus each mixed-case word whole: ``GitHub`` → git, hub, github.

    People type brand names whole ("github", "openai") while text spells them in
    camel case; indexing both spellings lets either match.
    """
    terms = words(text)
    for chunk in _CHUNK.findall(text):
        if len(words(chunk)) > 1:
            terms.append(_normalize(chunk))
    return terms


@dataclass(frozen=True, slots=True)
class SearchEntry:
    """One searchable tool.

    Attributes:
        name: The exposed name (``server__tool``), returned in hits.
        server: The server's name.
        description: The tool's description.
        parameters: Names of its input parameters.
    """

    name: str
    server: str
    description: str = ""
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A search result.

    Attributes:
        name: The tool's exposed name.
        score: Relevance; only the order is meaningful.
    """

    name: str
    score: float


class SearchIndex:
    """An inverted index over tools, built once, searched many times.

    Args:
        entries: The tools; a later entry with the same name replaces an earlier one.

    Example:
        >>> index = SearchIndex([
        ...     SearchEntry("github__create_issue", "github", "Open a new issue", ("title",)),
        ...     SearchEntry("github__list_repos", "github", "List repositories"),
        ... ])
        >>> [hit.name for hit in index.search("create issue")]
        ['github__create_issue']
    """

    __slots__ = ("_full_names", "_in_name", "_names", "_postings", "_vocabulary")

    def __init__(self, entries: Iterable[SearchEntry]) -> None:
        unique = {entry.name: entry for entry in entries}
        self._names: list[str] = sorted(unique)
        self._postings: dict[str, dict[int, float]] = defaultdict(dict)
        self._in_name: dict[str, set[int]] = defaultdict(set)
        self._full_names: list[str] = []
        descriptions = [
            [w for w in _terms(unique[name].description) if w not in _STOP] for name in self._names
        ]
        average = sum(map(len, descriptions)) / len(descriptions) if descriptions else 0.0
        for doc, name in enumerate(self._names):
            entry = unique[name]
            tool = name.split("__", 1)[1] if name.startswith(f"{entry.server}__") else name
            name_words = words(tool)
            self._full_names.append("".join(name_words))
            scores: dict[str, float] = defaultdict(float)
            for word in set(name_words):
                scores[word] += _NAME_WEIGHT
                self._in_name[word].add(doc)
            for word in set(_terms(entry.server)):
                scores[word] += _SERVER_WEIGHT
            for word in {w for p in entry.parameters for w in _terms(p)}:
                scores[word] += _PARAM_WEIGHT
            length_norm = (
                1 - _BM25_B + _BM25_B * (len(descriptions[doc]) / average if average else 0)
            )
            for word, tf in Counter(descriptions[doc]).items():
                scores[word] += _DESC_WEIGHT * tf * (_BM25_K + 1) / (tf + _BM25_K * length_norm)
            for word, score in scores.items():
                self._postings[word][doc] = score
        self._vocabulary = sorted(self._postings)

    def __len__(self) -> int:
        return len(self._names)

    def _idf(self, word: str) -> float:
        return math.log(1 + len(self._names) / len(self._postings[word]))

    def _expansions(self, word: str) -> list[tuple[str, float]]:
        found = [(word, 1.0)] if word in self._postings else []
        if len(word) >= _MIN_PREFIX:
            start = bisect.bisect_left(self._vocabulary, word)
            stop = bisect.bisect_right(self._vocabulary, word + "\U0010ffff", lo=start)
            found.extend(
                (candidate, _PREFIX_OF_WORD)
                for candidate in self._vocabulary[start:stop]
                if candidate != word
            )
            found.extend(
                (word[:end], _WORD_IS_PREFIX)
                for end in range(len(word) - 1, _MIN_PREFIX, -1)
                if word[:end] in self._postings
            )
        return found

    def search(self, query: str, limit: int = 10, *, match_all: bool = False) -> list[SearchHit]:
        """The best ``limit`` tools for ``query``, best first (ties by name).

        Args:
            query: Keywords, in any spelling (``create issue``, ``createIssue``).
            limit: How many hits at most.
            match_all: Only tools matching every query word (an AND search).
        """
        all_words = list(dict.fromkeys(words(query)))
        query_words = [w for w in all_words if w not in _STOP] or all_words
        if not query_words or limit <= 0:
            return []
        best: dict[int, list[float]] = {}
        name_hits: Counter[int] = Counter()
        for position, word in enumerate(query_words):
            reached: dict[int, float] = {}
            in_name: set[int] = set()
            for term, factor in self._expansions(word):
                idf = self._idf(term) * factor
                for doc, score in self._postings[term].items():
                    value = score * idf
                    if value > reached.get(doc, 0.0):
                        reached[doc] = value
                in_name |= self._in_name.get(term, set())
            for doc, value in reached.items():
                scores = best.setdefault(doc, [0.0] * len(query_words))
                scores[position] = value
            name_hits.update(in_name)
        total = len(query_words)
        whole = "".join(query_words)
        ranked: list[tuple[float, str]] = []
        for doc, scores in best.items():
            matched = sum(1 for value in scores if value > 0)
            if match_all and matched < total:
                continue
            score = sum(scores) * (matched / total) ** 2
            if name_hits[doc] >= total:
                score *= 1.5
            if self._full_names[doc] == whole:
                score *= 2
            ranked.append((score, self._names[doc]))
        top = heapq.nsmallest(limit, ranked, key=lambda item: (-item[0], item[1]))
        return [SearchHit(name=name, score=round(score, 6)) for score, name in top]
