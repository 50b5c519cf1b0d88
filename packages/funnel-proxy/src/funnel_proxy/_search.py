"""Ranked search over tools, for ``discover_tools_by_words``.

Theory of operation. Each tool has five fields: its name (the part after ``server__``),
its server, its parameter names, its parameters' descriptions and its description.
Each field is cut into terms by :mod:`funnel_proxy._text` (identifiers split, Snowball
stems, CJK bigrams); mixed-case words are also indexed whole (``GitHub`` gives git,
hub and github) and long name words are split into two known words where the corpus
allows (``datagov`` gives data and gov too).

Scoring is BM25F: a term's frequency in each field is weighted (a name counts most) and
normalised by the field's length, the weighted sum is saturated once (``k1``), and the
result is multiplied by the term's IDF. Saturating the *sum* rather than each field is
what keeps one field from swamping the rest: a word in the name outweighs the same word
in the description, but two query words in the description beat one in the name.

A query is cut the same way, its stop words dropped, and each remaining word becomes a
*concept* that reaches, besides its own stem:

- the stems of its synonyms (:mod:`funnel_proxy._synonyms`), at a reduced weight; a
  word the index does not know whose synonym is a phrase becomes the phrase's words
  (``pr`` → pull, request);
- longer terms it is a prefix of (from four letters) and shorter terms it extends by at
  most two letters, at about a third of the weight: ``repo`` → ``repositori``, never
  ``add`` → ``address`` or ``report`` → ``repo``;
- a word unknown to the index that splits into two known terms becomes both
  (``filesystem`` → file, system); two adjacent query words whose concatenation is a
  term add it (``git hub`` → ``github``).

A concept scores a tool by its best reach into it; a tool's lexical score is the sum
over concepts, times ``(matched concepts / concepts) ** COORDINATION`` so that tools
matching every concept come first. Only tools in the posting lists of reached terms
are scored: a query costs its posting lists, not the catalogue. With numpy installed
(the semantic extra brings it) the same sums run over dense arrays, ten times faster
at 5,000 tools; the two paths rank alike (a test holds them to it).

With an embedder (:mod:`funnel_proxy._semantic`, an optional extra), every tool also
has a unit vector of its name and description, the query gets one too, and the two
rankings are fused: ``lexical / best lexical + SEMANTIC_WEIGHT * max(0, cosine)``. A
tool no query word reaches can then still be found ("will it rain" → a forecast tool).
Without one the ranking is lexical alone.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import re
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from funnel_proxy._synonyms import synonyms
from funnel_proxy._text import STOP_WORDS, stem, terms, tokens

if TYPE_CHECKING:
    from funnel_proxy._semantic import Embedder, Vectors

_UNLOADED: Final[Any] = object()
#: numpy once looked for (``None``: not installed); the tests set ``None`` for the pure path.
_numpy: ModuleType | Any | None = _UNLOADED
#: Below this many tools the pure-Python scoring is as fast, and numpy (20 MiB of a
#: process that may never search) is not imported for it.
_NUMPY_FROM: Final = 256


def _np() -> ModuleType | None:
    """Numpy (it comes with the semantic extra), imported on first need; else ``None``."""
    global _numpy  # noqa: PLW0603 - a lazily imported module, looked up once
    if _numpy is _UNLOADED:
        try:
            import numpy
        except ImportError:  # pragma: no cover - the tests force the pure path instead
            _numpy = None
        else:
            _numpy = numpy
    return _numpy


__all__ = ["SearchEntry", "SearchHit", "SearchIndex", "search_entry", "words"]

# Field weights and length normalisation (b) of BM25F; k1 saturates their sum.
_FIELDS: Final = ("name", "server", "params", "param_text", "description")
_WEIGHT: Final = {"name": 3.0, "server": 1.0, "params": 1.0, "param_text": 0.4, "description": 1.0}
_B: Final = {"name": 0.3, "server": 0.0, "params": 0.3, "param_text": 0.5, "description": 0.75}
_K1: Final = 0.9
# Reach of a query concept beyond its own stem.
_SYNONYM: Final = 0.6
_PREFIX: Final = 0.35
_SPLIT: Final = 0.6
_PHRASE: Final = 0.8
_MIN_PREFIX: Final = 4
COORDINATION: Final = 1.0
"""Exponent of the share of query concepts a tool matches, applied to its score."""
_WHOLE_NAME: Final = 1.3
SEMANTIC_WEIGHT: Final = 1.0
"""Weight of the cosine similarity against the normalised lexical score."""
_SEMANTIC_FLOOR: Final = 0.0
_CHUNK: Final = re.compile(r"[A-Za-z0-9]+")
# Past this, a description (some run to pages) adds build time more than relevance.
_DESCRIPTION_CHARS: Final = 2000
# The name and the description's start say what a tool does; the embedder's cost grows
# with the text.
_SEMANTIC_CHARS: Final = 300


def words(text: str) -> list[str]:
    """The search terms of ``text``, in order (stop words kept).

    Example:
        >>> words("getPullRequests for my-repo_v2")
        ['get', 'pull', 'request', 'for', 'my', 'repo', 'v', '2']
    """
    return terms(text)


def _whole_words(text: str) -> list[str]:
    """Mixed-case and multi-part chunks indexed whole: ``GitHub`` → github."""
    found = []
    for chunk in _CHUNK.findall(text):
        if chunk.isalpha() and (chunk.islower() or chunk.isupper() or chunk[1:].islower()):
            continue  # one word: nothing to join
        if chunk.isdigit():
            continue
        parts = tokens(chunk)
        if len(parts) > 1:
            found.append(stem("".join(parts)))
    return found


@dataclass(frozen=True, slots=True)
class SearchEntry:
    """One searchable tool.

    Attributes:
        name: The exposed name (``server__tool``), returned in hits.
        server: The server's name.
        description: The tool's description.
        parameters: Names of its input parameters.
        parameter_text: The descriptions of its parameters, joined.
    """

    name: str
    server: str
    description: str = ""
    parameters: tuple[str, ...] = ()
    parameter_text: str = ""


def search_entry(name: str, server: str, definition: Mapping[str, object]) -> SearchEntry:
    """The searchable form of a tool definition (``description``, ``inputSchema``).

    Args:
        name: The exposed name.
        server: The owning server.
        definition: The MCP tool definition; malformed parts are ignored.
    """
    description = definition.get("description")
    schema = definition.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    parameters: list[str] = []
    texts: list[str] = []
    if isinstance(properties, dict):
        for key, spec in properties.items():
            parameters.append(str(key))
            if isinstance(spec, dict) and isinstance(spec.get("description"), str):
                texts.append(spec["description"])
    return SearchEntry(
        name=name,
        server=server,
        description=description if isinstance(description, str) else "",
        parameters=tuple(parameters),
        parameter_text=" ".join(texts)[:1000],
    )


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A search result.

    Attributes:
        name: The tool's exposed name.
        score: Relevance; only the order is meaningful.
    """

    name: str
    score: float


@dataclass(slots=True)
class _Document:
    """One tool's analysed fields: what does not depend on the rest of the corpus."""

    fields: dict[str, Counter[str]]
    lengths: dict[str, int]
    name_terms: frozenset[str]
    raw_name_tokens: tuple[str, ...]
    semantic_text: str
    vector: Any = None
    extra: Counter[str] = field(default_factory=Counter)


@functools.lru_cache(maxsize=1 << 14)
def _identifier_terms(identifier: str) -> tuple[str, ...]:
    """Terms of a server or parameter name (cached: the same few recur in every tool)."""
    return (*terms(identifier), *_whole_words(identifier))


def _analyse(entry: SearchEntry) -> _Document:
    tool = (
        entry.name.split("__", 1)[1] if entry.name.startswith(f"{entry.server}__") else entry.name
    )
    name = terms(tool) + _whole_words(tool)
    server = _identifier_terms(entry.server)
    params = [t for p in entry.parameters for t in _identifier_terms(p)]
    param_text = terms(entry.parameter_text[:_DESCRIPTION_CHARS], drop_stop_words=True)
    text = entry.description[:_DESCRIPTION_CHARS]
    description = terms(text, drop_stop_words=True) + _whole_words(text)
    fields = {
        "name": Counter(name),
        "server": Counter(server),
        "params": Counter(params),
        "param_text": Counter(param_text),
        "description": Counter(description),
    }
    readable = " ".join(tokens(tool))
    return _Document(
        fields=fields,
        lengths={key: sum(counter.values()) for key, counter in fields.items()},
        name_terms=frozenset(terms(tool)),
        raw_name_tokens=tuple(tokens(tool) + tokens(entry.server)),
        semantic_text=f"{readable}. {entry.description}"[:_SEMANTIC_CHARS],
    )


@dataclass(frozen=True, slots=True)
class _Concept:
    word: str
    reach: Mapping[str, float]


class SearchIndex:
    """An index over tools, built once per tool list, searched many times.

    Args:
        entries: The tools; a later entry with the same name replaces an earlier one.
        embedder: Adds a semantic signal (see :func:`funnel_proxy.load_embedder`).
        previous: An index of an earlier tool list: tools it already analysed (and
            embedded) are reused, so a rebuild costs little more than what changed.
            Give the same embedder to both (there is one per process).

    Example:
        >>> index = SearchIndex([
        ...     SearchEntry("github__create_issue", "github", "Open a new issue", ("title",)),
        ...     SearchEntry("github__list_repos", "github", "List repositories"),
        ... ])
        >>> [hit.name for hit in index.search("create issue")]
        ['github__create_issue']
    """

    __slots__ = (
        "_docs",
        "_entries",
        "_names",
        "_postings",
        "_semantic",
        "_vocabulary",
        "_whole_names",
    )

    def __init__(
        self,
        entries: Iterable[SearchEntry],
        *,
        embedder: Embedder | None = None,
        previous: SearchIndex | None = None,
    ) -> None:
        unique = {entry.name: entry for entry in entries}
        self._names: list[str] = sorted(unique)
        self._entries: dict[str, SearchEntry] = {name: unique[name] for name in self._names}
        known: dict[SearchEntry, _Document] = {}
        if previous is not None:
            known = dict(zip(previous._entries.values(), previous._docs, strict=True))
        self._docs: list[_Document] = [known.get(e) or _analyse(e) for e in self._entries.values()]
        self._split_compounds()
        self._build_postings()
        # The embedder and the matrix of tool vectors, set together (one assignment,
        # so a search in another thread sees both or neither).
        self._semantic: tuple[Embedder, Vectors] | None = None
        if embedder is not None:
            self.add_semantic(embedder)

    def add_semantic(self, embedder: Embedder) -> None:
        """Add the semantic signal to a lexical index (embeds the tools not embedded yet).

        Searches may run meanwhile, in another thread: they stay lexical until the
        vectors are all there.
        """
        if not self._docs:
            return
        missing = [doc for doc in self._docs if doc.vector is None]
        if missing:
            vectors = embedder.embed([doc.semantic_text for doc in missing])
            for doc, vector in zip(missing, vectors, strict=True):
                doc.vector = vector
        self._semantic = (embedder, embedder.stack([doc.vector for doc in self._docs]))

    # ------------------------------------------------------------------ building

    def _split_compounds(self) -> None:
        """Index ``datagov`` as data and gov too, when both are words elsewhere."""
        vocabulary: set[str] = set()
        for doc in self._docs:
            for counter in doc.fields.values():
                vocabulary.update(counter)
        splits: dict[str, tuple[str, str] | None] = {}
        for doc in self._docs:
            doc.extra = Counter()
            for token in doc.raw_name_tokens:
                if len(token) < 6 or not token.isalpha():
                    continue
                if token not in splits:
                    splits[token] = next(
                        (
                            (stem(token[:cut]), stem(token[cut:]))
                            for cut in range(3, len(token) - 2)
                            if stem(token[:cut]) in vocabulary and stem(token[cut:]) in vocabulary
                        ),
                        None,
                    )
                halves = splits[token]
                if halves is not None:
                    doc.extra.update(halves)

    def _build_postings(self) -> None:
        count = len(self._docs)
        average = {
            key: (sum(doc.lengths[key] for doc in self._docs) / count if count else 0.0) or 1.0
            for key in _FIELDS
        }
        weighted: defaultdict[str, dict[int, float]] = defaultdict(dict)

        def idf(df: int) -> float:
            return math.log(1 + (count - df + 0.5) / (df + 0.5))

        for position, doc in enumerate(self._docs):
            combined: defaultdict[str, float] = defaultdict(float)
            for key in _FIELDS:
                counter = doc.fields[key]
                if not counter:
                    continue
                norm = 1 - _B[key] + _B[key] * doc.lengths[key] / average[key]
                scale = _WEIGHT[key] / norm
                for term, tf in counter.items():
                    combined[term] += tf * scale
            for term, halves in doc.extra.items():
                # Halves of a split compound are weaker than the words themselves.
                combined[term] += halves * _WEIGHT["name"] * _SPLIT
            for term, weight in combined.items():
                weighted[term][position] = weight * (_K1 + 1) / (weight + _K1)
        self._postings: dict[str, tuple[array[int], array[float]]] = {}
        for term, docs in weighted.items():
            weight = idf(len(docs))
            self._postings[term] = (
                array("i", docs),
                array("f", [v * weight for v in docs.values()]),
            )
        self._vocabulary: list[str] = sorted(self._postings)
        whole_names: defaultdict[frozenset[str], list[int]] = defaultdict(list)
        for position, doc in enumerate(self._docs):
            whole_names[doc.name_terms].append(position)
        self._whole_names: dict[frozenset[str], list[int]] = dict(whole_names)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def semantic(self) -> bool:
        """Whether the index has a semantic signal."""
        return self._semantic is not None

    # ------------------------------------------------------------------ queries

    def _concepts(self, query: str) -> list[_Concept]:
        raw = list(tokens(query))
        kept = [t for t in raw if t not in STOP_WORDS] or raw
        words_: list[str] = []
        for token in kept:
            words_.extend(terms(token))
        words_ = list(dict.fromkeys(words_))
        concepts: list[_Concept] = []
        for word in words_:
            if word not in self._postings and len(word) >= 6 and word.isalpha():
                halves = self._split(word)
                if halves:
                    concepts.extend(_Concept(h, self._reach(h)) for h in halves)
                    continue
            reach = self._reach(word)
            if word not in self._postings:
                phrase = next(
                    (
                        p
                        for p in synonyms(word)
                        if " " in p and all(part in self._postings for part in p.split())
                    ),
                    None,
                )
                if phrase is not None:
                    concepts.extend(_Concept(part, {part: _PHRASE}) for part in phrase.split())
                    continue
            concepts.append(_Concept(word, reach))
        for first, second in itertools.pairwise(kept):
            joined = stem(first + second)
            if joined in self._postings and joined not in words_:
                concepts.append(_Concept(joined, {joined: 1.0}))
        return concepts

    def _reached(self, query: str, *, match_all: bool) -> list[_Concept]:
        """The query's concepts that reach some term; none if an AND search has a miss."""
        concepts = self._concepts(query)
        if match_all and any(not concept.reach for concept in concepts):
            return []
        return [concept for concept in concepts if concept.reach]

    def _split(self, word: str) -> tuple[str, str] | None:
        for cut in range(3, len(word) - 2):
            left, right = stem(word[:cut]), stem(word[cut:])
            if left in self._postings and right in self._postings:
                return left, right
        return None

    def _reach(self, word: str) -> dict[str, float]:
        reach: dict[str, float] = {}
        if word in self._postings:
            reach[word] = 1.0
        for other in synonyms(word):
            if " " not in other and other in self._postings and other not in reach:
                reach[other] = _SYNONYM
        if len(word) >= _MIN_PREFIX and word.isalpha():
            start = bisect_left(self._vocabulary, word)
            stop = bisect_right(self._vocabulary, word + "\U0010ffff", lo=start)
            for other in self._vocabulary[start:stop]:
                reach.setdefault(other, _PREFIX)
            # A shorter known term is reached only through an inflection-sized
            # remainder: "emails" → "email", never "report" → "repo".
            for end in range(len(word) - 1, max(_MIN_PREFIX, len(word) - 2) - 1, -1):
                if word[:end] in self._postings:
                    reach.setdefault(word[:end], _PREFIX)
        return reach

    def _lexical(self, concepts: Sequence[_Concept]) -> tuple[dict[int, float], Counter[int]]:
        """Per tool: the sum of each concept's best reach, and how many concepts reach it."""
        total: dict[int, float] = {}
        matched: Counter[int] = Counter()
        for concept in concepts:
            best: dict[int, float] = {}
            # The concept's own stem first: its whole posting list goes in at C speed.
            for term, factor in sorted(concept.reach.items(), key=lambda item: -item[1]):
                docs, values = self._postings[term]
                if not best:
                    best = dict(zip(docs, [value * factor for value in values], strict=True))
                    continue
                get = best.get
                for doc, raw in zip(docs, values, strict=True):
                    value = raw * factor
                    if value > get(doc, 0.0):
                        best[doc] = value
            get_total = total.get
            for doc, value in best.items():
                total[doc] = get_total(doc, 0.0) + value
            matched.update(best.keys())
        return total, matched

    def _scores(self, query: str, *, match_all: bool) -> dict[int, float]:
        """Every reached tool's score (the path without numpy)."""
        concepts = self._reached(query, match_all=match_all)
        total = len(concepts)
        lexical: dict[int, float] = {}
        if total:
            sums, matched = self._lexical(concepts)
            coordination = [(count / total) ** COORDINATION for count in range(total + 1)]
            for doc, summed in sums.items():
                if match_all and matched[doc] < total:
                    continue
                lexical[doc] = summed * coordination[matched[doc]]
            for doc in self._whole_names.get(frozenset(c.word for c in concepts), ()):
                if doc in lexical:
                    lexical[doc] *= _WHOLE_NAME
        semantic = self._semantic
        if semantic is None or match_all:
            return lexical
        top = max(lexical.values(), default=0.0) or 1.0
        fused = {doc: score / top for doc, score in lexical.items()}
        embedder, matrix = semantic
        for doc, cosine in enumerate(embedder.similarities(matrix, query).tolist()):
            if cosine > _SEMANTIC_FLOOR:
                fused[doc] = fused.get(doc, 0.0) + SEMANTIC_WEIGHT * cosine
        return fused

    def _ranked_numpy(self, query: str, limit: int, *, match_all: bool) -> list[tuple[int, float]]:
        """The same scores as :meth:`_scores`, computed over dense arrays."""
        np = _np()
        if np is None:  # pragma: no cover - _ranked only calls this with numpy
            raise RuntimeError("numpy is not installed")
        concepts = self._reached(query, match_all=match_all)
        total = len(concepts)
        count = len(self._docs)
        score = np.zeros(count, dtype=np.float64)
        if total:
            sums = np.zeros(count, dtype=np.float64)
            matched = np.zeros(count, dtype=np.int64)
            for concept in concepts:
                best = np.zeros(count, dtype=np.float64)
                for term, factor in concept.reach.items():
                    raw_docs, raw_values = self._postings[term]
                    docs = np.frombuffer(raw_docs, dtype=np.int32)
                    values = np.frombuffer(raw_values, dtype=np.float32) * factor
                    best[docs] = np.maximum(best[docs], values)
                sums += best
                matched += best > 0
            coordination = (np.arange(total + 1) / total) ** COORDINATION
            score = sums * coordination[matched]
            if match_all:
                score[matched < total] = 0.0
            for doc in self._whole_names.get(frozenset(c.word for c in concepts), ()):
                score[doc] *= _WHOLE_NAME
        semantic = self._semantic
        if semantic is not None and not match_all:
            top = float(score.max()) or 1.0
            embedder, matrix = semantic
            cosines = embedder.similarities(matrix, query)
            score = score / top + SEMANTIC_WEIGHT * np.where(
                cosines > _SEMANTIC_FLOOR, cosines, 0.0
            )
        found = np.flatnonzero(score > 0)
        if len(found) > limit:
            # Everything tied with the last place is kept, so ties still go by name.
            kth = np.partition(score[found], len(found) - limit)[len(found) - limit]
            found = found[score[found] >= kth]
        return [(int(doc), float(score[doc])) for doc in found]

    def _ranked(self, query: str, limit: int, *, match_all: bool) -> list[tuple[int, float]]:
        dense = self._docs and (self.semantic or len(self._docs) >= _NUMPY_FROM)
        if dense and _np() is not None:
            candidates = self._ranked_numpy(query, limit, match_all=match_all)
        else:
            candidates = list(self._scores(query, match_all=match_all).items())
        return heapq.nsmallest(limit, candidates, key=lambda item: (-item[1], self._names[item[0]]))

    def search(self, query: str, limit: int = 10, *, match_all: bool = False) -> list[SearchHit]:
        """The best ``limit`` tools for ``query``, best first (ties by name).

        Args:
            query: Keywords or a question, in any spelling (``create issue``,
                ``createIssue``, "how do I open a ticket?").
            limit: How many hits at most.
            match_all: Only tools every query word reaches (an AND search; lexical only).
        """
        if limit <= 0:
            return []
        return [
            SearchHit(name=self._names[doc], score=round(score, 6))
            for doc, score in self._ranked(query, limit, match_all=match_all)
        ]

    def explain(self, query: str, name: str) -> list[str]:
        """Why ``name`` scores what it does for ``query``: one line per contribution.

        Args:
            query: The query.
            name: A tool's exposed name.
        """
        if name not in self._entries:
            return [f"{name}: not in the index"]
        doc = self._names.index(name)
        concepts = self._reached(query, match_all=False)
        lines = [f"concepts: {', '.join(c.word for c in concepts) or '(none)'}"]
        for concept in concepts:
            best, via = 0.0, ""
            for term, factor in concept.reach.items():
                docs, values = self._postings[term]
                at = bisect_left(docs, doc)
                if at < len(docs) and docs[at] == doc:
                    value = values[at] * factor
                    if value > best:
                        best, via = value, f"{term} x{factor:g} (in {len(docs)} tools)"
            lines.append(
                f"  {concept.word}: {best:.3f}" + (f" via {via}" if via else " (no match)")
            )
        scores = dict(self._ranked(query, len(self._docs), match_all=False))
        lines.append(f"total: {scores.get(doc, 0.0):.4f}")
        if self._semantic is not None:
            embedder, matrix = self._semantic
            cosine = float(embedder.similarities(matrix, query)[doc])
            lines.append(f"semantic cosine: {cosine:.3f}")
        return lines
