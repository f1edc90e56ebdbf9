"""One score scale for the learned and blend spaces, and the choice of its settings on validation.

Every learned list ranks candidates ``b`` of a query item ``a`` by::

    score(a, b) = w · W(a, b) + min(s(a, b), τ) + π_b,   π_b = β · log(1 + n_b), or c if n_b = 0

- ``s(a, b) = Z_a · Z_b``, the *similarity*: ``(1 − γ) cos_tower + γ cos_content``
  (the content tower, with a skip connection to the item's own content of
  weight ``γ``);
- ``W(a, b)``, the *warm model*: EASE's weight ``B[a, b]`` divided by the
  largest weight of row ``a``, or the ELSA cosine; 0 where ``a`` or ``b`` has
  no row in it (a cold item);
- ``π_b``, the *popularity prior*: ``β · log(1 + n_b)``, ``n_b`` the item's
  users in training; an item without users (cold, or added after training)
  gets the constant ``c`` instead. In the learned space and the blend lists
  of warm items ``c`` is calibrated on validation so that such items get the
  share of list slots they have of held-out co-engagement
  (``learn.cold_share = fair``), not ranked as if nobody would ever want
  them; in the blend lists of cold items it is chosen for recall;
- ``min(s, τ)``, a *gate* (:func:`gate`): similarity counts up to τ (and
  a hundredth above it, to break ties), so candidates at least τ similar
  to the query are ranked by popularity and the warm model, and a less
  similar one pays its shortfall. ``τ ≥ 1`` makes the prior plain additive
  (``s + π_b``), ``τ = −1`` leaves similarity only to break ties.

All terms are in units of similarity, so one score ranks warm and cold
candidates alike. A :class:`Rule` holds ``(w, τ, β, c)``; a model has three,
each chosen on the validation split of ``reelsim train``
(:mod:`reelsim.similarity.heldout`) by coordinate ascent over
:data:`GRID` (:func:`choose_rule`), ``c`` by bisection (:func:`calibrate_cold`):

- ``learned``: no warm model (``w = 0``); chosen on pseudo-cold items for
  recall@10 of their held-out co-engagement, among rules whose lists keep a
  share ``topicality`` of their items within the query's ``2k`` most similar
  items (the list stays about the same kind of thing; popularity reorders it);
- ``blend_cold``: the same without that constraint (the blend's list of an
  item without a warm row);
- ``blend_warm``: the blend's list of an item with a warm row, chosen on
  warm items for recall@10 of their held-out co-engagement, ``c`` for the
  fair share (:func:`choose_fair_rule`).

Rules are compared on *pools*: each validation query's candidates are the
union of its top :data:`POOL` items by similarity, by warm score, by prior
and its top cold items by similarity (every item when the catalog has at
most :data:`FULL` items), so a choice costs O(queries x pool), not O(queries x N).

Examples
--------
>>> r = Rule(warm=0.5, tau=0.6, beta=0.1, cold=0.25)
>>> S = np.array([[0.9, 0.3]], np.float32); W = np.array([[1.0, 0.0]], np.float32); n = np.array([9, 0])
>>> np.round(r.apply(S, W, n).astype(float), 3).tolist()
[[1.333, 0.55]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

#: slope of the gate above τ (:func:`gate`)
GATE_SLOPE = 0.01
#: candidates per component in a validation pool
POOL = 128
#: catalogs up to this size are scored over every item, not pools
FULL = 1000
#: the values coordinate ascent tries for each setting of a rule (``cold``: quantiles of the warm items' prior)
GRID = {
    "warm": (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
    "tau": (-1.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 2.0),
    "beta": (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    "cold": (-2.0, -1.0, -0.5, -0.2, 0.0, 0.2, 0.5, 1.0, 2.0),
}


@dataclass(frozen=True)
class Rule:
    """``score = warm · W + min(s, tau) + π``, ``π = beta · log(1 + n)``, or ``cold`` where n = 0 (module docstring)."""

    warm: float = 0.0
    tau: float = 2.0
    beta: float = 0.0
    cold: float = 0.0

    def apply(self, S: np.ndarray, W: np.ndarray | None, counts: np.ndarray) -> np.ndarray:
        """Scores float32 (B, C) from similarities ``S`` (B, C), warm scores ``W`` (B, C) or None, and the
        candidates' training users ``counts`` (C,) or (B, C)."""
        out = gate(S, self.tau)
        out += prior_terms(counts, self.beta, self.cold)
        if self.warm and W is not None:
            out += np.float32(self.warm) * W
        return out

    def to_dict(self) -> dict:
        return {k: float(v) for k, v in asdict(self).items()}


def gate(S: np.ndarray, tau: float) -> np.ndarray:
    """``min(s, τ) + GATE_SLOPE · max(s − τ, 0)`` float32: similarity counts fully up to τ and a little
    above it, so that equally popular candidates above τ are still ranked by similarity (no ties)."""
    t = np.float32(tau)
    return np.minimum(S, t) + np.float32(GATE_SLOPE) * np.maximum(S - t, np.float32(0.0))


def prior_terms(counts: np.ndarray, beta: float, cold: float) -> np.ndarray:
    """``π`` float32, the shape of ``counts``: ``beta · log(1 + n)`` for items with users, ``cold`` for the others."""
    counts = np.asarray(counts)
    return np.where(counts > 0, np.float32(beta) * np.log1p(np.maximum(counts, 0)), cold).astype(np.float32)


@dataclass
class Pools:
    """Validation queries and their candidate pools.

    I : int64 (Q, P) candidate rows (-1 padding); S, W : float32 (Q, P) similarity and warm score;
    counts : int64 (Q, P) candidates' training users; hit : bool (Q, P) relevant;
    n_relevant : int64 (Q,); topical : bool (Q, P) among the query's ``2k`` most similar items;
    fair_share : share of the queries' relevant items that have no training users.
    """

    I: np.ndarray
    S: np.ndarray
    W: np.ndarray | None
    counts: np.ndarray
    hit: np.ndarray
    n_relevant: np.ndarray
    topical: np.ndarray
    fair_share: float = 0.0
    _lp: np.ndarray | None = None
    _cold: np.ndarray | None = None

    def lists(self, rule: Rule, k: int) -> np.ndarray:
        """int64 (Q, k): positions in the pool of each query's top ``k`` under ``rule``."""
        if self._lp is None:  # log(1 + n) and the cold mask, once
            self._lp = np.log1p(np.maximum(self.counts, 0)).astype(np.float32)
            self._cold = (self.counts <= 0).astype(np.float32)
        sc = gate(self.S, rule.tau)  # Rule.apply, with the prior's parts kept
        sc += np.float32(rule.beta) * self._lp + np.float32(rule.cold) * self._cold
        if rule.warm and self.W is not None:
            sc += np.float32(rule.warm) * self.W
        sc[self.I < 0] = -np.inf
        kk = min(k, sc.shape[1])
        P = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
        o = np.argsort(-np.take_along_axis(sc, P, axis=1), axis=1, kind="stable")
        return np.take_along_axis(P, o, axis=1)

    def recall(self, rule: Rule, k: int) -> tuple[float, float]:
        """(mean recall@k, mean share of list items that are topical) of ``rule`` on the pools."""
        P = self.lists(rule, k)
        h = np.take_along_axis(self.hit, P, axis=1).sum(axis=1)
        t = np.take_along_axis(self.topical, P, axis=1).mean(axis=1)
        return float(np.mean(h / np.maximum(np.minimum(k, self.n_relevant), 1))), float(np.mean(t))

    def exposure(self, rule: Rule, k: int) -> float:
        """Share of list slots under ``rule`` that hold an item without training users."""
        P = self.lists(rule, k)
        return float(np.mean(np.take_along_axis(self.counts, P, axis=1) <= 0))


def build_pools(queries: np.ndarray, relevant: list, similarity: Callable, warm: Callable | None,
                counts: np.ndarray, *, k: int, pool: int = POOL, block: int = 256,
                exclude: np.ndarray | None = None) -> Pools:
    """Candidate pools of ``queries`` (module docstring).

    Parameters
    ----------
    queries : int64 (Q,); relevant : list of int64 arrays, each query's relevant items.
    similarity : ``f(q) -> float32 (B, N)`` similarities of query rows to every item.
    warm : ``f(q) -> float32 (B, N)`` warm scores, or None.
    counts : int (N,) training users per item.
    k : list length (topical = among the ``2k`` most similar).
    exclude : bool (N,), optional
        Items that are never candidates: those the validation split cannot judge (no row at all in
        the log being split), so that they neither take list slots nor count as cold exposure.
    """
    n = counts.size
    full = n <= FULL
    lp = np.log1p(np.maximum(counts, 0))
    allowed = np.ones(n, bool) if exclude is None else ~np.asarray(exclude, bool)
    by_prior = np.argsort(np.where(allowed, -lp, np.inf), kind="stable")[:pool]
    cold = np.flatnonzero((counts <= 0) & allowed)
    parts = {name: [] for name in ("I", "S", "W", "topical")}
    for i0 in range(0, queries.size, block):
        q = queries[i0:i0 + block]
        S = np.asarray(similarity(q), np.float32)
        W = None if warm is None else np.asarray(warm(q), np.float32)
        S[np.arange(q.size), q] = -np.inf
        S[:, ~allowed] = -np.inf
        kk = min(2 * k, n - 1)
        near = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        if full:
            I = np.tile(np.arange(n), (q.size, 1))
            I[np.arange(q.size), q] = -1
            I[:, ~allowed] = -1
        else:
            cand = [np.argpartition(-S, pool - 1, axis=1)[:, :pool], np.tile(by_prior, (q.size, 1))]
            if W is not None:
                cand.append(np.argpartition(-W, pool - 1, axis=1)[:, :pool])
            if cold.size:
                c = min(pool // 2, cold.size)
                cand.append(cold[np.argpartition(-S[:, cold], c - 1, axis=1)[:, :c]])
            I = np.sort(np.concatenate(cand, axis=1), axis=1)
            dup = np.c_[np.zeros((q.size, 1), bool), I[:, 1:] == I[:, :-1]]
            I[dup | (I == q[:, None]) | ~allowed[I]] = -1
        J = np.maximum(I, 0)
        parts["I"].append(I)
        parts["S"].append(np.take_along_axis(S, J, axis=1))
        if W is not None:
            parts["W"].append(np.take_along_axis(W, J, axis=1))
        top = np.zeros((q.size, n), bool)
        np.put_along_axis(top, near, True, axis=1)
        parts["topical"].append(np.take_along_axis(top, J, axis=1))
    width = max(a.shape[1] for a in parts["I"]) if parts["I"] else 0
    pad = lambda a, v: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=v)
    I = np.concatenate([pad(a, -1) for a in parts["I"]]) if parts["I"] else np.zeros((0, 0), np.int64)
    S = np.concatenate([pad(a, -np.inf) for a in parts["S"]]) if parts["S"] else np.zeros((0, 0), np.float32)
    W = np.concatenate([pad(a, 0) for a in parts["W"]]) if parts["W"] else None
    topical = np.concatenate([pad(a, False) for a in parts["topical"]]) if parts["topical"] else np.zeros(I.shape, bool)
    hit = np.zeros(I.shape, bool)
    for r, rel in enumerate(relevant):
        hit[r] = np.isin(I[r], rel) & (I[r] >= 0)
    counts_pool = np.where(I >= 0, counts[np.maximum(I, 0)], 0)
    rel = np.concatenate(relevant) if len(relevant) else np.zeros(0, np.int64)
    fair = float(np.mean(counts[rel] <= 0)) if rel.size else 0.0
    return Pools(I, S, W, counts_pool, hit, np.array([len(r) for r in relevant], np.int64), topical, fair)


def choose_rule(pools: Pools, *, k: int, grid: dict, start: Rule, topicality: float = 0.0, rounds: int = 2,
                fixed: tuple[str, ...] = ()) -> tuple[Rule, dict]:
    """Coordinate ascent on validation recall@k, one setting at a time over ``grid``, from ``start``.

    A rule whose lists are less ``topicality`` topical than that is not taken (``start`` must be).
    ``fixed``: settings left as in ``start``.

    Returns
    -------
    rule : Rule
    info : dict, ``{"recall@k", "topical", "tried"}`` on validation.
    """
    names = [name for name in ("tau", "beta", "cold", "warm") if name in grid and name not in fixed]
    seen: dict[Rule, tuple[float, float]] = {}

    def value(rule: Rule) -> tuple[float, float]:
        if rule not in seen:
            seen[rule] = pools.recall(rule, k)
        return seen[rule]

    best = start
    for _ in range(rounds):
        before = best
        for name in names:
            for v in grid[name]:
                cand = replace(best, **{name: v})
                r, t = value(cand)
                if t >= topicality - 1e-9 and r > value(best)[0] + 1e-9:
                    best = cand
        if best == before:
            break
    r, t = value(best)
    return best, {f"recall@{k}": round(r, 4), "topical": round(t, 4), "tried": len(seen)}


def calibrate_cold(pools: Pools, rule: Rule, *, k: int, low: float = -50.0, high: float = 50.0,
                   steps: int = 20) -> Rule:
    """``rule`` with the cold items' prior ``c`` set so that their share of the validation lists' slots
    is their share of the held-out co-engaged items (``pools.fair_share``), by bisection on ``c``
    (the exposure grows with ``c``)."""
    target = pools.fair_share
    for _ in range(steps):
        mid = replace(rule, cold=round((low + high) / 2, 4))
        if pools.exposure(mid, k) < target:
            low = mid.cold
        else:
            high = mid.cold
    return replace(rule, cold=round(high, 4))


def choose_fair_rule(pools: Pools, *, k: int, grid: dict, start: Rule, topicality: float = 0.0,
                     fixed: tuple[str, ...] = (), fair: bool = True) -> tuple[Rule, dict]:
    """:func:`choose_rule`, then (``fair``) the cold prior calibrated to the fair share
    (:func:`calibrate_cold`) and the other settings chosen again with it, twice.

    Returns
    -------
    rule : Rule
    info : dict, validation ``recall@k``, ``topical``, ``cold_exposure``, ``fair_share``, ``tried``.
    """
    rule, info = choose_rule(pools, k=k, grid=grid, start=start, topicality=topicality, fixed=fixed)
    tried = info["tried"]
    if fair:
        for _ in range(2):
            rule = calibrate_cold(pools, rule, k=k)
            rule, info = choose_rule(pools, k=k, grid=grid, start=rule, topicality=topicality,
                                     fixed=fixed + ("cold",))
            tried += info["tried"]
        rule = calibrate_cold(pools, rule, k=k)
    r, t = pools.recall(rule, k)
    return rule, {f"recall@{k}": round(r, 4), "topical": round(t, 4),
                  "cold_exposure": round(pools.exposure(rule, k), 4), "fair_share": round(pools.fair_share, 4),
                  "tried": tried}
