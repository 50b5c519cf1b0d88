"""Discovery search benchmark: quality on labelled query sets, and speed at 5,000 tools.

Usage::

    uv run --locked python tools/bench/search/evaluate.py                 # both splits, latency
    uv run --locked python tools/bench/search/evaluate.py --split dev --explain
    uv run --locked python tools/bench/search/evaluate.py --ablate        # what each part adds

Quality. The catalogue is the tool lists of two real servers (``real.json``: the npm
``server-everything`` and ``server-memory``, as they answer ``tools/list``) and of 22
servers written after public MCP servers (``modelled.json``). Each query (``queries_*.json``)
is phrased as an agent asks, with graded relevance: 2 for the tool that does it, 1 for a
useful alternative. Metrics, per split:

- Recall@k: share of queries with a grade-2 tool in the first k hits;
- MRR: mean of 1 / rank of the first grade-2 tool (0 when it is not in the top 10);
- nDCG@10: graded gains ``2**grade - 1``, ideal order from the labels.

``funnel`` is ``SearchIndex`` exactly as ``discover_tools_by_words`` builds it (the same
``search_entry`` conversion); ``bm25`` is a plain Okapi BM25 (k1 1.2, b 0.75) with the
same Snowball stemmer over the same text (name, server, description, parameter names),
split at non-alphanumerics, run in the same process on the same queries. The ``dev``
split is the only one the ranker's constants were tuned on; ``heldout`` never was.

Speed. 5,000 tools over 20 backends (the real and modelled tools, renamed per backend,
with their descriptions reworded by a seeded shuffle of resource nouns): time to build
the index from the tool list, to rebuild it after one backend changed (the incremental
path the core tools take), the very first query after a build and the p50/p95 of the
labelled queries, and the index's memory (tracemalloc over the build).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import re
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import Stemmer  # type: ignore[import-not-found]  # PyStemmer ships no type information

from funnel_proxy import SearchEntry, SearchIndex, load_embedder, search_entry
from funnel_proxy import _search as search_module

HERE = Path(__file__).parent
KS = (1, 3, 5, 10)

Ranker = Callable[[str], list[str]]
T = TypeVar("T")


def catalogue() -> list[SearchEntry]:
    """Every tool of ``real.json`` and ``modelled.json`` as the core tools index it."""
    entries: list[SearchEntry] = []
    real = json.loads((HERE / "real.json").read_text())
    entries.extend(
        search_entry(f"{server}__{tool['name']}", server, tool)
        for server, tools in real.items()
        for tool in tools
    )
    modelled = json.loads((HERE / "modelled.json").read_text())
    for server, tools in modelled.items():
        if server.startswith("_"):
            continue
        for name, description, params in tools:
            entries.append(
                search_entry(f"{server}__{name}", server, definition(name, description, params))
            )
    return entries


def definition(name: str, description: str, params: Sequence[str]) -> dict[str, Any]:
    """A tool definition from the compact form of ``modelled.json``."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in params:
        head, _, text = param.partition(":")
        key = head.rstrip("*")
        properties[key] = {"type": "string", **({"description": text} if text else {})}
        if head.endswith("*"):
            required.append(key)
    return {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties, "required": required},
    }


def queries(split: str) -> list[tuple[str, dict[str, int]]]:
    data = json.loads((HERE / f"queries_{split}.json").read_text())
    return [(query, dict(labels)) for query, labels in data["queries"]]


# ---------------------------------------------------------------------- the baseline


class PlainBM25:
    """Okapi BM25 over one bag of words per tool: name, server, description, parameters."""

    _split = re.compile(r"[A-Za-z0-9]+|[^\W\d_A-Za-z]+")

    def __init__(self, entries: Sequence[SearchEntry], k1: float = 1.2, b: float = 0.75) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._names = [entry.name for entry in entries]
        self._k1, self._b = k1, b
        docs = [
            self._terms(f"{e.name} {e.server} {e.description} {' '.join(e.parameters)}")
            for e in entries
        ]
        self._tf = [Counter(doc) for doc in docs]
        self._len = [len(doc) for doc in docs]
        self._avg = sum(self._len) / len(docs)
        df: Counter[str] = Counter(term for doc in self._tf for term in doc)
        n = len(docs)
        self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}

    def _terms(self, text: str) -> list[str]:
        return list(self._stemmer.stemWords([t.lower() for t in self._split.findall(text)]))

    def __call__(self, query: str) -> list[str]:
        words = [t for t in self._terms(query) if t in self._idf]
        scored = []
        for i, tf in enumerate(self._tf):
            norm = self._k1 * (1 - self._b + self._b * self._len[i] / self._avg)
            score = sum(self._idf[w] * tf[w] * (self._k1 + 1) / (tf[w] + norm) for w in words)
            if score > 0:
                scored.append((-score, self._names[i]))
        return [name for _, name in sorted(scored)[:10]]


# ---------------------------------------------------------------------- metrics


@dataclass
class Scores:
    recall: dict[int, float]
    mrr: float
    ndcg: float
    misses: list[tuple[str, list[str], dict[str, int]]]

    def row(self, label: str) -> str:
        recalls = "  ".join(f"{self.recall[k]:.3f}" for k in KS)
        return f"{label:<24} {recalls}  {self.mrr:.3f}  {self.ndcg:.3f}"


def evaluate(ranker: Ranker, labelled: Sequence[tuple[str, dict[str, int]]]) -> Scores:
    hits = dict.fromkeys(KS, 0)
    reciprocal = 0.0
    ndcg = 0.0
    misses = []
    for query, labels in labelled:
        ranked = ranker(query)[:10]
        best = max(labels.values())
        first = next((i for i, name in enumerate(ranked) if labels.get(name) == best), None)
        for k in KS:
            hits[k] += first is not None and first < k
        reciprocal += 1 / (first + 1) if first is not None else 0.0
        gains = [2 ** labels.get(name, 0) - 1 for name in ranked]
        ideal = sorted((2**g - 1 for g in labels.values()), reverse=True)[:10]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        ndcg += dcg / idcg
        if first != 0:
            misses.append((query, ranked, labels))
    n = len(labelled)
    return Scores({k: hits[k] / n for k in KS}, reciprocal / n, ndcg / n, misses)


def header(title: str, count: int) -> None:
    print(f"\n{title} ({count} queries)")
    print(f"{'ranker':<24} {'R@1':>5}  {'R@3':>5}  {'R@5':>5}  {'R@10':>5}  {'MRR':>5}  nDCG@10")


def ranked_names(index: SearchIndex) -> Ranker:
    return lambda query: [hit.name for hit in index.search(query, 10)]


def explain_misses(index: SearchIndex, scores: Scores) -> None:
    for query, ranked, labels in scores.misses:
        want = [name for name, grade in labels.items() if grade == max(labels.values())]
        rank = next((i + 1 for i, name in enumerate(ranked) if name in want), None)
        print(f"\n  {query!r}: wanted {want[0]} at {rank or '>10'}; top 3 {ranked[:3]}")
        for line in index.explain(query, want[0]):
            print(f"    want | {line}")
        if ranked:
            for line in index.explain(query, ranked[0]):
                print(f"    top1 | {line}")


# ---------------------------------------------------------------------- ablations


def ablations(entries: list[SearchEntry], labelled: list[tuple[str, dict[str, int]]]) -> None:
    embedder = load_embedder()
    variants: list[tuple[str, dict[str, float], bool]] = [
        ("funnel (all parts)", {}, True),
        ("lexical only", {}, False),
        ("lexical, no synonyms", {"_SYNONYM": 0.0}, False),
        ("lexical, no prefixes", {"_PREFIX": 0.0}, False),
        ("lexical, no coordination", {"COORDINATION": 0.0}, False),
    ]
    for label, patch, semantic in variants:
        saved = {key: getattr(search_module, key) for key in patch}
        for key, value in patch.items():
            setattr(search_module, key, value)
        try:
            index = SearchIndex(entries, embedder=embedder if semantic else None)
            print(evaluate(ranked_names(index), labelled).row(label))
        finally:
            for key, value in saved.items():
                setattr(search_module, key, value)
    if embedder is not None:
        matrix = embedder.stack(embedder.embed([f"{e.name} {e.description}" for e in entries]))
        names = [e.name for e in entries]

        def semantic_only(query: str) -> list[str]:
            cosines = embedder.similarities(matrix, query)
            order = sorted(range(len(names)), key=lambda i: -cosines[i])
            return [names[i] for i in order[:10]]

        print(evaluate(semantic_only, labelled).row("semantic only"))


# ---------------------------------------------------------------------- speed

NOUNS = [
    "record",
    "item",
    "entry",
    "object",
    "asset",
    "resource",
    "document",
    "report",
    "order",
    "ticket",
]


def synthetic(entries: list[SearchEntry], backends: int = 20, per: int = 250) -> list[SearchEntry]:
    """``backends`` x ``per`` tools made from the catalogue, reworded per backend."""
    rng = random.Random(14)
    made: list[SearchEntry] = []
    for b in range(backends):
        server = f"backend{b:02d}"
        for i in range(per):
            base = entries[(b * per + i) % len(entries)]
            tool = base.name.split("__", 1)[1]
            noun = rng.choice(NOUNS)
            made.append(
                SearchEntry(
                    name=f"{server}__{tool}_{noun}_{i}",
                    server=server,
                    description=f"{base.description} Works on the {noun} of {server}.",
                    parameters=base.parameters,
                    parameter_text=base.parameter_text,
                )
            )
    return made


@dataclass
class Timing:
    """Wall time and the process's CPU time (all threads) of one action, in seconds.

    On a shared machine a process waits for a core now and then; CPU time leaves that
    wait out, wall time keeps it. Both are printed.
    """

    wall: float
    cpu: float

    @classmethod
    def of(cls, action: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[Timing, T]:
        """Run ``action(*args, **kwargs)``: its timing and its result."""
        wall, cpu = time.perf_counter(), time.process_time()
        result = action(*args, **kwargs)
        return cls(time.perf_counter() - wall, time.process_time() - cpu), result


def _ms(values: Sequence[float], *, at: float | None = None) -> str:
    ordered = sorted(values)
    value = ordered[min(len(ordered) - 1, int(len(ordered) * at))] if at else ordered[0]
    return f"{value * 1000:8.2f}"


def speed(entries: list[SearchEntry], labelled: list[tuple[str, dict[str, int]]]) -> None:
    """Build, rebuild, query and memory figures at 5,000 tools, as the core tools run them.

    The core tools build the lexical index in a worker thread when the tool list
    changes, publish it, then add the semantic vectors (queries meanwhile wait for them).
    """
    embedder = load_embedder()
    big = synthetic(entries)
    print(f"\nspeed: {len(big)} tools over 20 backends, semantic={'on' if embedder else 'off'}")
    print(f"{'':40} {'wall ms':>8} {'cpu ms':>8}")
    rows: list[tuple[str, list[Timing], float | None]] = []
    builds = []
    for _ in range(3):
        gc.collect()
        builds.append(Timing.of(SearchIndex, big)[0])
    rows.append(("lexical build, cold (best of 3)", builds, None))
    index = SearchIndex(big)
    if embedder is not None:
        rows.append(
            ("+ semantic vectors, cold", [Timing.of(index.add_semantic, embedder)[0]], None)
        )
    changed = [
        SearchEntry(e.name, e.server, e.description + " (v2)", e.parameters, e.parameter_text)
        if e.server == "backend07"
        else e
        for e in big
    ]
    rebuilds: list[Timing] = []
    tops: list[Timing] = []
    for _ in range(3):
        gc.collect()
        timing, rebuilt = Timing.of(SearchIndex, changed, previous=index)
        rebuilds.append(timing)
        if embedder is not None:
            tops.append(Timing.of(rebuilt.add_semantic, embedder)[0])
        for doc in rebuilt._docs:  # undo the top-up, so the next round embeds again
            if "(v2)" in doc.semantic_text:
                doc.vector = None
    rows.append(("rebuild after 1 backend changed (best of 3)", rebuilds, None))
    if tops:
        rows.append(("+ its semantic vectors (best of 3)", tops, None))
    fresh = SearchIndex(big, embedder=embedder)
    rows.append(("first query after a build", [Timing.of(fresh.search, labelled[0][0])[0]], None))
    times = [Timing.of(fresh.search, query, 10)[0] for _ in range(5) for query, _labels in labelled]
    rows.append(("query p50", times, 0.5))
    rows.append(("query p95", times, 0.95))
    rows.append((f"query max ({len(times)} queries)", times, 0.9999))
    for label, timings, at in rows:
        wall = _ms([t.wall for t in timings], at=at)
        cpu = _ms([t.cpu for t in timings], at=at)
        print(f"  {label:<38} {wall} {cpu}")
    del index, fresh, rebuilt
    gc.collect()
    tracemalloc.start()
    held = SearchIndex(big, embedder=embedder)
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  index memory: {current / 2**20:.1f} MiB for {len(held)} tools", end="")
    print(" (plus the embedding table, 16 MiB, once per process)" if embedder else "")


async def _stdio(queries_: Sequence[str]) -> tuple[list[float], list[float], int]:
    sys.path.insert(0, str(HERE.parent))
    from _common import Workspace, funnel_command
    from _surface import SERVERS, _servers

    from funnel_transports import ClientSession, StdioTransport

    ws = Workspace()
    try:
        command = funnel_command(ws, _servers(), exposeTools=[])
        transport = StdioTransport(
            command.argv[0], command.argv[1:], env=dict(command.env), name="funnel"
        )
        async with transport, ClientSession(transport, mode="legacy") as client:
            listed = await client.list_tools()
            assert len(listed) == 4, "core tools mode lists only the core tools"
            searches: list[float] = []
            schemas: list[float] = []
            for query in queries_:
                start = time.perf_counter()
                result = await client.call_tool("discover_tools_by_words", {"words": query})
                searches.append(time.perf_counter() - start)
                assert not result.get("isError"), result
                # The round trip of a core tool that does next to nothing, interleaved:
                # what the pipe, the codec and the server cost without a search.
                start = time.perf_counter()
                await client.call_tool("get_tool_schema", {"tool": "github__echo"})
                schemas.append(time.perf_counter() - start)
    finally:
        ws.cleanup()
    return searches, schemas, SERVERS


def stdio(labelled: list[tuple[str, dict[str, int]]]) -> None:
    """``discover_tools_by_words`` through ``funnel-server --stdio``, from the client.

    20 copies of ``tools/bench/backend.py`` serve 250 tools each; the first query is
    sent right after the client's first ``tools/list`` answers, as an agent would.
    """
    import anyio

    searches, schemas, servers = anyio.run(_stdio, [query for query, _ in labelled] * 2)
    print(f"\nthrough funnel-server --stdio, {servers} backends x 250 tools, client round trip")
    print(f"{'':28} {'discover_tools_by_words':>24} {'get_tool_schema':>16}")
    for label, at in (("first call", None), ("p50", 0.5), ("p95 (first included)", 0.95)):
        if at is None:
            row = (searches[0], schemas[0])
        else:
            row = tuple(sorted(t)[int(len(t) * at)] for t in (searches, schemas))  # type: ignore[assignment]
        print(f"  {label:<26} {row[0] * 1000:21.2f} ms {row[1] * 1000:13.2f} ms")
    print(f"  ({len(searches)} calls of each, interleaved)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--split", choices=["dev", "heldout", "both"], default="both")
    parser.add_argument("--explain", action="store_true", help="explain every query not at 1")
    parser.add_argument("--ablate", action="store_true", help="what each part adds")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument(
        "--no-stdio", action="store_true", help="skip the funnel-server --stdio round trips"
    )
    args = parser.parse_args(argv)
    entries = catalogue()
    servers = len({e.server for e in entries})
    print(f"catalogue: {len(entries)} tools from {servers} servers")
    embedder = load_embedder()
    print(f"semantic signal: {'wordllama' if embedder else 'absent (lexical only)'}")
    index = SearchIndex(entries, embedder=embedder)
    baseline = PlainBM25(entries)
    splits = ["dev", "heldout"] if args.split == "both" else [args.split]
    for split in splits:
        labelled = queries(split)
        header(split, len(labelled))
        funnel = evaluate(ranked_names(index), labelled)
        plain = evaluate(baseline, labelled)
        print(funnel.row("funnel"))
        print(plain.row("plain BM25 + Snowball"))
        gain = " ".join(
            f"R@{k} {funnel.recall[k] - plain.recall[k]:+.3f}" for k in KS if k in (1, 5)
        )
        print(f"{'funnel - BM25':<24} {gain}  MRR {funnel.mrr - plain.mrr:+.3f}")
        if args.explain:
            explain_misses(index, funnel)
    if args.ablate:
        for split in splits:
            labelled = queries(split)
            header(f"ablation, {split}", len(labelled))
            ablations(entries, labelled)
    if not args.no_speed:
        speed(entries, queries("dev") + queries("heldout"))
    if not args.no_stdio:
        stdio(queries("dev") + queries("heldout"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
