"""Text into search terms: identifier splitting, stop words, Snowball stems, CJK bigrams.

Theory of operation. Tool names, parameter names and descriptions are cut into
*tokens*: runs of letters split where an identifier changes style (``getPullRequest``,
``get_pull_request``, ``get-pull-request`` and ``GetPULLRequest`` all give get, pull,
request), runs of digits, and runs of CJK characters. A CJK run has no spaces to split
at, so it becomes its overlapping character bigrams (``推荐菜谱`` → 推荐, 荐菜, 菜谱): a
phrase that appears verbatim in a description then shares every bigram with it.

Each latin token is lower-cased and reduced to its Snowball (Porter 2) English stem, so
"charging", "charged" and "charge" meet; acronym plurals that Porter 2 keeps
("pdfs", "urls") lose their ``s`` too. Stop words (English function words and the filler
of questions an agent asks: "how do I", "can you", "please") are dropped from queries
and descriptions, never from names.
"""

from __future__ import annotations

import functools
import re
from typing import Final

import Stemmer  # type: ignore[import-not-found]  # PyStemmer ships no type information

__all__ = ["STOP_WORDS", "stem", "terms", "tokens"]

_CJK: Final = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
# ASCII capitals start camelCase words; every other letter (lower case, accented)
# continues one, so "créer" stays whole. CJK runs are matched on their own.
_TOKEN: Final = re.compile(rf"[{_CJK}]+|[A-Z]+(?=[A-Z][a-z])|[A-Z]?[^\W\dA-Z_{_CJK}]+|[A-Z]+|\d+")
_IS_CJK: Final = re.compile(rf"[{_CJK}]")
_VOWELS: Final = frozenset("aeiouy")

STOP_WORDS: Final = frozenset(
    # A word list reads better as text than as 170 quoted strings.
    """
    a about above after again all also am an and any anything are as at be been being
    below between both but by can could did do does doing done each either else etc
    every few for from further get gets had has have having he her here hers him his how
    i if in into is it its itself just let lets like may me might mine more most must my
    myself need needs no nor not now of off ok okay on once only or other our ours out
    over own please possible same shall she should so some something somehow such than
    that the their theirs them then there these they thing things this those through to
    too tool tools under until up us use used uses using via want wants was way we were
    what whats when where whether which while who whom whose why will with within without
    would yes yet you your yours yourself
    """.split()  # noqa: SIM905
)
"""Words a query or description may contain that say nothing about which tool is meant.

"get" is here: nearly every read-only tool is called ``get_*``, so the word does not
tell tools apart and let a name win on a verb alone. Names keep their stop words (a tool
called ``for_each`` is still found by "for each").
"""

_stemmer: Final = Stemmer.Stemmer("english")


@functools.lru_cache(maxsize=1 << 17)
def stem(word: str) -> str:
    """The search form of one lower-case token: its Snowball stem.

    Example:
        >>> [stem(w) for w in ["charging", "charges", "pdfs", "repositories"]]
        ['charg', 'charg', 'pdf', 'repositori']
    """
    if not word or word.isdigit() or _IS_CJK.match(word):
        return word
    stemmed: str = _stemmer.stemWord(word)
    if (
        stemmed == word
        and len(word) >= 4
        and word.endswith("s")
        and not word.endswith("ss")
        and not _VOWELS.intersection(word[:-1])
    ):
        # Porter 2 keeps the "s" of vowel-less acronyms: "pdfs", "urls", "ssds".
        return word[:-1]
    return stemmed


def tokens(text: str) -> list[str]:
    """The lower-cased tokens of ``text`` (identifiers split, CJK runs whole).

    Example:
        >>> tokens("getPullRequests for my-repo_v2")
        ['get', 'pull', 'requests', 'for', 'my', 'repo', 'v', '2']
    """
    return [token.lower() for token in _TOKEN.findall(text)]


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


@functools.lru_cache(maxsize=1 << 17)
def _analysed(token: str) -> tuple[tuple[str, ...], bool]:
    """A raw token's terms and whether it is a stop word (cached: text repeats a lot)."""
    if _IS_CJK.match(token):
        return tuple(_bigrams(token)), False
    lower = token.lower()
    return (stem(lower),), lower in STOP_WORDS


def terms(text: str, *, drop_stop_words: bool = False) -> list[str]:
    """The search terms of ``text``, in order: stems, and CJK character bigrams.

    Args:
        text: Any text: a name, a description, a query.
        drop_stop_words: Leave out :data:`STOP_WORDS`.

    Example:
        >>> terms("Create new issues")
        ['creat', 'new', 'issu']
        >>> terms("推荐菜谱")
        ['推荐', '荐菜', '菜谱']
    """
    found: list[str] = []
    for token in _TOKEN.findall(text):
        analysed, stop = _analysed(token)
        if not (drop_stop_words and stop):
            found.extend(analysed)
    return found
