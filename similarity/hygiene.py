"""List hygiene, off by default: near-duplicate collapse, MMR diversification, a text blocklist.

Each works on a query's *pool*, its best candidates scored exactly
(:class:`reelsim.similarity.search.Scored`, ``oversample * k`` of them),
and returns ``k``:

- **collapse** (``dedup``): walk the pool best first and drop a candidate
  whose fused score with an already kept neighbour is ``>= dedup``, so
  re-encodes of one video take one slot, not five.
- **MMR** (``mmr``, lambda in [0, 1]): pick greedily the candidate maximising
  ``lambda * score(q, c) - (1 - lambda) * max_{s picked} score(c, s)``;
  1 is the plain ranking, lower values diversify. Rank follows the picking
  order; ``score`` stays the relevance score.
- **blocklist**: items whose raw text embedding has cosine ``>= threshold``
  with any blocked phrase's embedding (same text model) never appear as a
  neighbour (:func:`blocked_rows`).

Pair scores between candidates use the same fusion rule as the lists
(weighted mean of cosines over the modalities both candidates have).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from reelsim.config import check_range
from reelsim.similarity.catalog import CatalogEmbeddings
from reelsim.similarity.fusion import shared_score
from reelsim.similarity.search import Scored


@dataclass(frozen=True)
class Hygiene:
    """Settings: ``dedup`` threshold on the fused score, ``mmr`` lambda; None turns each off.

    ``copies``: with ``dedup``, pairs of items that copy evidence shows to be
    true copies (:class:`reelsim.similarity.copies.CopyPairs`: ``mask(I) ->
    bool (B, C, C)``) collapse too, whatever their fused score (a
    picture-in-picture of a video scores low as a whole frame).
    """

    dedup: float | None = None
    mmr: float | None = None
    copies: object | None = field(default=None, compare=False)

    def __post_init__(self):
        check_range("dedup threshold", self.dedup, -1, 1)
        check_range("MMR lambda", self.mmr, 0, 1)

    @property
    def on(self) -> bool:
        return self.dedup is not None or self.mmr is not None


def pair_scores(cat: CatalogEmbeddings, w: Mapping[str, float], active, I: np.ndarray) -> np.ndarray:
    """Fused scores between the candidates of each query: float64 (B, C, C), -inf where nothing is shared.

    ``I`` int64 (B, C) catalog rows, -1 for none.
    """
    rows = np.maximum(I, 0)

    def terms():
        for m in active:
            has = cat.masks[m][rows] & (I >= 0)
            u = cat.vectors[m][rows]
            yield m, np.einsum("bid,bjd->bij", u, u), has[:, :, None] & has[:, None, :]

    return shared_score(terms(), w, decimals=None)


def collapse(valid: np.ndarray, pair: np.ndarray, threshold: float) -> np.ndarray:
    """Keep-mask (B, C): best first, drop a candidate scoring ``>= threshold`` with a kept one."""
    kept = np.zeros_like(valid)
    for j in range(valid.shape[1]):
        dup = np.any(kept[:, :j] & (pair[:, j, :j] >= threshold), axis=1)
        kept[:, j] = valid[:, j] & ~dup
    return kept


def mmr_order(rel: np.ndarray, valid: np.ndarray, pair: np.ndarray, lam: float, k: int) -> np.ndarray:
    """Positions (B, k) picked by maximal marginal relevance, -1 when a pool runs out."""
    B, C = rel.shape
    out = np.full((B, k), -1, dtype=np.int64)
    left = valid.copy()
    maxsim = np.zeros((B, C))
    first = True
    b = np.arange(B)
    for t in range(k):
        gain = lam * rel - (0.0 if first else (1 - lam)) * maxsim
        gain = np.where(left, gain, -np.inf)
        j = np.argmax(gain, axis=1)
        ok = left[b, j]
        out[ok, t] = j[ok]
        left[b[ok], j[ok]] = False
        sim = np.where(np.isfinite(pair[b, j]), pair[b, j], 0.0)
        maxsim = sim if first else np.maximum(maxsim, sim)
        first = False
    return out


def select(scored, k: int, cat: CatalogEmbeddings, w: Mapping[str, float], active, hygiene: Hygiene):
    """Apply ``hygiene`` to a pool (:class:`Scored` (B, C), best first) in the content space; :class:`Scored` (B, k)."""
    return select_by(scored, k, pair_scores(cat, w, active, scored.I) if hygiene.on else None, hygiene)


def select_by(scored, k: int, pair: np.ndarray | None, hygiene: Hygiene):
    """Apply ``hygiene`` to a pool given the scores between its candidates in the pool's own space.

    Parameters
    ----------
    scored : Scored (B, C), best first
    k : list length
    pair : float64 (B, C, C), score of candidate i with candidate j (-inf: none); needed when ``hygiene.on``
    hygiene : dedup threshold and MMR lambda, in the units of ``pair``

    Returns
    -------
    Scored (B, k)
    """
    I, S = scored.I, scored.S
    valid = I >= 0
    if hygiene.dedup is not None:
        dup = pair if hygiene.copies is None else np.where(hygiene.copies.mask(I), np.inf, pair)
        valid = collapse(valid, dup, hygiene.dedup)
    if hygiene.mmr is not None:
        pos = mmr_order(np.where(valid, S, 0.0), valid, pair, hygiene.mmr, k)
    else:  # first k kept, in score order
        rank = np.where(valid, np.cumsum(valid, axis=1) - 1, -1)
        pos = np.full((I.shape[0], k), -1, dtype=np.int64)
        q, j = np.nonzero((rank >= 0) & (rank < k))
        pos[q, rank[q, j]] = j
    ok = pos >= 0
    take = lambda a, fill: np.where(ok, np.take_along_axis(a, np.maximum(pos, 0), axis=1), fill)
    return Scored(take(I, -1), take(S, -np.inf), {m: take(c, np.nan) for m, c in scored.cos.items()})


def blocked_rows(text: np.ndarray, has_text: np.ndarray, phrases: np.ndarray, threshold: float) -> np.ndarray:
    """Items whose text is too close to a blocked phrase.

    Parameters
    ----------
    text : float32 (N, d)
        Raw item text embeddings (unit rows for MiniLM); rows without text are ignored.
    has_text : bool (N,)
    phrases : float32 (P, d)
        Embeddings of the blocked phrases, same model.
    threshold : float
        Cosine at or above which an item is blocked.

    Returns
    -------
    bool (N,)

    Examples
    --------
    >>> t = np.array([[1, 0], [0, 1]], np.float32)
    >>> blocked_rows(t, np.array([True, True]), np.array([[0.8, 0.6]], np.float32), 0.7).tolist()
    [True, False]
    """
    if phrases.size == 0 or text.size == 0:
        return np.zeros(len(has_text), bool)
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cos = unit(text.astype(np.float32)) @ unit(phrases.astype(np.float32)).T
    return has_text & (cos.max(axis=1) >= threshold)
