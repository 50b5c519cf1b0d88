"""The optional semantic signal of discovery search: small static word embeddings.

`wordllama <https://pypi.org/project/wordllama/>`_ ships a 256-dimension static
embedding table (16 MB, float16) and its tokenizer inside its wheel: a text's vector is
the pooled rows of its tokens, so embedding a query is a table lookup (well under a
millisecond) and nothing is downloaded at run time. It is installed with the
``funnel-proxy[semantic]`` extra; without it :func:`load_embedder` returns ``None`` and
search is lexical alone.

The files are opened directly from the installed package, never through
``WordLlama.load()``: that looks for the tokenizer under a folder name the wheel does not
use and then tries to download it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors: TypeAlias = npt.NDArray[np.float32]
else:
    Vectors: TypeAlias = Any

__all__ = ["Embedder", "Vectors", "load_embedder"]

logger = logging.getLogger(__name__)

_WEIGHTS = ("weights", "l2_supercat_256.safetensors")
_TOKENIZER = ("tokenizers", "l2_supercat_tokenizer_config.json")


class Embedder:
    """Unit vectors for texts, and cosine similarities against a matrix of them.

    Args:
        model: A ``wordllama`` inference object (anything with ``embed(texts)``).
    """

    def __init__(self, model: Any) -> None:
        import numpy as np

        self._np = np
        self._model = model

    def embed(self, texts: Sequence[str]) -> list[Vectors]:
        """One unit vector (float32) per text."""
        if not texts:
            return []
        matrix = self._np.asarray(self._model.embed(list(texts), norm=True), dtype="float32")
        return list(matrix)

    def stack(self, vectors: Sequence[Vectors]) -> Vectors:
        """The vectors as one matrix, one row each."""
        return self._np.vstack(vectors).astype("float32", copy=False)

    def similarities(self, matrix: Vectors, query: str) -> Vectors:
        """Cosine similarity of ``query`` with every row of ``matrix``."""
        # einsum, not @ or np.dot: on a loaded two-core machine those went through a
        # multithreaded BLAS path 20 times slower for this matrix-vector product.
        return self._np.einsum("ij,j->i", matrix, self.embed([query])[0])  # type: ignore[no-any-return]


@functools.cache
def load_embedder() -> Embedder | None:
    """The embedder of the ``semantic`` extra, or ``None`` when it is not installed.

    Loads once (about 0.3 s, 16 MB); later calls return the same object.
    """
    try:
        import wordllama  # type: ignore[import-untyped]  # ships no type information
        from safetensors import safe_open
        from wordllama.inference import WordLlamaInference  # type: ignore[import-untyped]
        from wordllama.wordllama import WordLlama  # type: ignore[import-untyped]
    except ImportError:
        logger.info("discovery search is lexical: the semantic extra is not installed")
        return None
    root = Path(wordllama.__file__).parent
    try:
        tokenizer = WordLlama.load_tokenizer(root.joinpath(*_TOKENIZER), use_local_if_exists=True)
        with safe_open(str(root.joinpath(*_WEIGHTS)), framework="np", device="cpu") as weights:
            table = weights.get_tensor("embedding.weight")
        model = WordLlamaInference(table, tokenizer, binary=False)
    except Exception as exc:  # noqa: BLE001 - an optional extra that fails must not stop the funnel
        logger.warning("discovery search is lexical: wordllama did not load (%r)", exc)
        return None
    logger.info("discovery search is semantic and lexical (wordllama)")
    return Embedder(model)
