"""Text search over a store, with a list of banned queries.

``reelsim search "QUERY"`` embeds the query with the store's text model
(all-MiniLM-L6-v2) and ranks items by the cosine between the query and each
item's text embedding, both centred the same way (the catalog's stored text
mean, :func:`reelsim.similarity.fusion.normalise_queries`). With a trained
model and ``space="learned"``, the query is also passed through the content
tower as an item that has only text, and items are ranked by the cosine of
learned-space vectors.

A banned-query list is a text file of phrases, one per line (blank lines
and lines starting with ``#`` are skipped). A query is refused when the
cosine between its raw MiniLM embedding and a phrase's is at least
``threshold`` (default :data:`BANNED_THRESHOLD`), or when it contains the
phrase as words (case-insensitive). Measured MiniLM cosines with the phrase
"how to make a bomb": "make a bomb" 0.88, "bomb making instructions" 0.86,
"how do I build an explosive device" 0.75, "bath bomb gift set" 0.42,
"the bomb dot com party music" 0.35 (docs/learning.md has more).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reelsim.errors import BannedQueryError, StoreError, UsageError
from reelsim.extractors.registry import load
from reelsim.similarity.answer import StoreReader
from reelsim.similarity.catalog import load_catalog
from reelsim.similarity.fusion import normalise_queries
from reelsim.similarity.hygiene import pair_scores, select_by
from reelsim.similarity.rebuild import store_text_model
from reelsim.similarity.search import Scored
from reelsim.similarity.spaces import has_model, id_rank, load_model, space_pair_scores, space_vectors
from reelsim.storage.layout import StoreLayout

#: MiniLM cosine at or above which a query counts as a banned phrase
BANNED_THRESHOLD = 0.6
SEARCH_SPACES = ("content", "learned")


class Hit(NamedTuple):
    """One search result: item id, score (cosine), title."""

    item: str
    score: float
    title: str


def read_banned(path: str | Path) -> list[tuple[int, str]]:
    """(line number, phrase) of a banned-phrases file; blank and ``#`` lines skipped.

    Raises
    ------
    UsageError
        Missing file, or no phrase in it.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such banned-phrases file")
    out = [(n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
           if line.strip() and not line.strip().startswith("#")]
    if not out:
        raise UsageError(f"{path}: the banned-phrases file has no phrase")
    return out


def banned_match(q: np.ndarray, query: str, phrases: list[tuple[int, str]], P: np.ndarray,
                 threshold: float) -> tuple[int, str, float] | None:
    """The first banned phrase the query matches, as (line, phrase, cosine), or None.

    Parameters
    ----------
    q : float32 (d,)
        Unit MiniLM embedding of ``query``.
    phrases : list of (line, phrase)
    P : float32 (p, d)
        Unit MiniLM embeddings of the phrases.
    threshold : float
        Cosine at or above which a query matches.

    Examples
    --------
    >>> P = np.array([[1.0, 0.0]], np.float32)
    >>> banned_match(np.array([0.8, 0.6], np.float32), "x", [(1, "bad")], P, 0.6)
    (1, 'bad', 0.8)
    >>> banned_match(np.array([0.0, 1.0], np.float32), "a bad idea", [(1, "bad")], P, 0.6)
    (1, 'bad', 0.0)
    >>> banned_match(np.array([0.0, 1.0], np.float32), "badminton", [(1, "bad")], P, 0.6) is None
    True
    """
    if not -1 <= threshold <= 1:
        raise UsageError(f"the banned-query threshold is a cosine in [-1, 1], got {threshold}")
    cos = P @ q
    words = _words(query)
    for j, (line, phrase) in enumerate(phrases):
        if cos[j] >= threshold or _words(phrase) in words:
            return line, phrase, round(float(cos[j]), 4)
    return None


def _words(text: str) -> str:
    """Lower-case words joined by single spaces, with a space at each end (for whole-word containment)."""
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def search(store: str | Path, query: str, k: int, *, space: str = "content", banned: str | Path | None = None,
           threshold: float = BANNED_THRESHOLD, text_model: str | None = None) -> list[Hit]:
    """Rank the store's items for a text query.

    Raises
    ------
    BannedQueryError
        The query matches a banned phrase (the message names the file and line, not the phrase).
    UsageError
        Empty query, bad ``k`` or space, no text embeddings in the store.
    StoreError
        No catalog, or ``space="learned"`` without a trained model.

    The results follow the store's hygiene (:func:`ranked_with_hygiene`): a
    blocklisted item is never returned.
    """
    import json

    if not query.strip():
        raise UsageError("the search query is empty")
    if k < 1:
        raise UsageError("-k must be at least 1")
    if space not in SEARCH_SPACES:
        raise UsageError(f"search space must be one of {', '.join(SEARCH_SPACES)}, got {space!r}")
    layout = StoreLayout(store)
    catalog = layout.require_catalog()
    text_model = text_model or store_text_model(layout.root)  # the model that embedded the items' texts
    model = load("text", text_model, device="cpu")
    phrases = read_banned(banned) if banned else []
    vecs = model.extract([query] + [p for _, p in phrases])
    if phrases:
        hit = banned_match(vecs[0], query, phrases, vecs[1:], threshold)
        if hit:
            line, _, cos = hit
            raise BannedQueryError(f"query refused: it matches the banned phrase on line {line} of {banned} "
                                   f"(text similarity {cos:.2f}, threshold {threshold:.2f}, or the phrase is in it)")
    cat, stored_w = load_catalog(catalog)
    if "text" not in cat.vectors or not cat.masks["text"].any():
        raise UsageError(f"the items in {store} have no text embeddings to search")
    if cat.raw_dim("text") != vecs.shape[1]:
        raise UsageError(f"the store's text embeddings have {cat.raw_dim('text')} dimensions, "
                         f"{text_model} gives {vecs.shape[1]}")
    uq, mq = normalise_queries(cat, {"text": vecs[:1]})
    sv = None
    if space == "content":
        scores = cat.vectors["text"] @ uq["text"][0]
        ok = cat.masks["text"].copy()
    else:
        if not has_model(store):
            raise StoreError(f"--space learned needs a trained model: run `reelsim train --interactions FILE "
                             f"--store {store}` first")
        learned = load_model(store)
        qv = learned.tower.embed(uq, mq)[0]
        sv = space_vectors(cat, learned, "learned")
        scores = sv.T @ qv
        ok = np.any(sv.T != 0, axis=1)
    scores = np.where(ok, np.round(scores.astype(np.float64), 6), -np.inf)
    rows = ranked_with_hygiene(StoreReader(store), cat, stored_w, sv, space, scores, k)
    meta = json.loads(layout.items_meta.read_text(encoding="utf-8")) if layout.items_meta.is_file() else {}
    return [Hit(cat.ids[r], float(scores[r]), meta.get(cat.ids[r], {}).get("title", "")) for r in rows]


def ranked_with_hygiene(reader: StoreReader, cat, weights: dict, sv, space: str, scores: np.ndarray,
                        k: int) -> list[int]:
    """The ``k`` best rows by ``scores`` (float64 (N,), -inf: not rankable), with the store's hygiene.

    The store's blocklist keeps its items out; the dedup and MMR of the
    space's lists work on a pool of the ``oversample * k`` best, with pair
    scores in that space (the fused content score, or the learned space's).
    """
    view = reader.view()
    blocked = reader.blocked_mask(view)
    if blocked is not None and blocked.size == scores.size:
        scores = np.where(blocked, -np.inf, scores)
    hygiene, oversample = view.hygiene_of(space)
    pool = k * oversample if hygiene.on else k
    order = np.lexsort((id_rank(cat.ids), -scores))[:pool]
    order = order[np.isfinite(scores[order])]
    if not hygiene.on or order.size == 0:
        return order[:k].tolist()
    I, S = order[None, :], scores[order][None, :]
    if sv is None:
        pair = pair_scores(cat, weights, [m for m in cat.vectors if weights.get(m, 0) > 0], I)
    else:
        pair = space_pair_scores(sv, I)
    picked = select_by(Scored(I, S, {}), k, pair, hygiene)
    return [int(r) for r in picked.I[0] if r >= 0]
