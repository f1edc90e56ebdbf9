"""Synthetic catalogs and interaction logs with a known structure (tests, demo, benchmark).

Each item belongs to a *category* ``a`` and a *segment* ``b``; what people
engage with together is decided by the pair ``(a, b)`` (its *topic*):

- the category is a hidden linear projection of the item's content: every
  modality's embedding is ``S[a] @ A_m`` (plus per-item jitter), so a model
  that learns the right projection of the content can recover it;
- the segment (say price level or brand loyalty) is invisible in the content:
  only interactions reveal it;
- each embedding also carries a *style* ``D[c] @ B_m`` from a style cluster
  ``c`` drawn independently of the category, with a larger amplitude, so raw
  content similarity mostly finds items that look alike rather than items
  people use together (tortillas and tortilla chips);
- item popularity is Zipf-distributed; each user has one to three topics and
  draws items from them by popularity, plus a share of random popular items
  (noise); a share of the topic views are also purchases (a later row with
  ``event = purchase``), so purchases are cleaner co-engagement than views;
- views come in sessions: runs of about five views on one of the user's
  topics, so items viewed close together are usually of one topic.

Examples
--------
>>> cat = make_catalog(200, dims={"image": 16, "text": 8}, seed=0)
>>> cat.raw.n, sorted(cat.raw.vectors), cat.topic.shape
(200, ['image', 'text'], (200,))
>>> log = sample_log(cat.topic, cat.popularity, n_users=50, n_interactions=600, seed=0)
>>> bool((log.event == "purchase").any()), int(log.user.max()) < 50
(True, True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelsim.config import MODALITIES, FusionConfig
from reelsim.errors import UsageError
from reelsim.similarity.catalog import CatalogEmbeddings, save_catalog
from reelsim.similarity.fusion import normalise
from reelsim.storage.atomic import write_text_atomic
from reelsim.storage.interactions import write_interactions
from reelsim.storage.layout import StoreLayout

#: the feature sizes of reelsim's default models
MODEL_DIMS = {"visual": 1280, "audio": 128, "image": 1280, "text": 384}
#: per modality: (semantic amplitude, style amplitude); text says more about what an item is
AMPLITUDES = {"visual": (0.6, 2.0), "audio": (0.4, 1.5), "image": (0.6, 2.0), "text": (1.0, 1.5)}
#: share of items that are videos (all four modalities); the others are products (image + text)
VIDEO_SHARE = 0.3


@dataclass
class SyntheticCatalog:
    """Raw content embeddings of N items and the hidden structure behind them.

    raw : CatalogEmbeddings, raw (not normalised) per-modality vectors and masks.
    category, segment, style : int64 (N,), the hidden labels.
    topic : int64 (N,), ``category * n_segments + segment``: what co-engagement follows.
    popularity : float64 (N,), Zipf weights (sum 1).
    """

    raw: CatalogEmbeddings
    category: np.ndarray
    segment: np.ndarray
    style: np.ndarray
    topic: np.ndarray
    popularity: np.ndarray


@dataclass
class SyntheticLog:
    """An interaction log as arrays: ``user`` int64 (R,), ``item`` int64 (R,) (catalog rows),
    ``event`` str (R,) (``view`` / ``purchase``), ``timestamp`` float64 (R,) seconds."""

    user: np.ndarray
    item: np.ndarray
    event: np.ndarray
    timestamp: np.ndarray

    def write(self, path: str | Path, ids: list[str]) -> Path:
        """Write as ``.csv``, ``.jsonl`` or ``.parquet`` with columns user, item, timestamp, event."""
        users = np.char.add("u", self.user.astype(str))
        write_interactions(path, users, np.asarray(ids, dtype=object)[self.item], timestamp=self.timestamp,
                           event=self.event)
        return Path(path)


def make_catalog(n_items: int, *, dims: Mapping[str, int] | None = None, n_categories: int | None = None,
                 n_segments: int = 4, semantic_dim: int = 16, style_dim: int = 16, noise: float = 0.5,
                 popularity_skew: float = 1.0, seed: int = 0) -> SyntheticCatalog:
    """Synthetic content embeddings with categories, segments and styles (module docstring).

    Parameters
    ----------
    n_items : int
        N.
    dims : dict of str to int, optional
        Modality -> embedding size (default :data:`MODEL_DIMS`).
    n_categories : int, optional
        Default ``max(4, N // 100)``; styles are as many.
    n_segments : int
        Segments per category (hidden from the content).
    semantic_dim, style_dim : int
        Sizes of the latent category and style vectors.
    noise : float
        Per-item standard deviation of the jitter added to every embedding value.
    popularity_skew : float
        Zipf exponent of item popularity.
    seed : int

    Returns
    -------
    SyntheticCatalog
    """
    if n_items < 2:
        raise UsageError(f"a synthetic catalog needs at least 2 items, got {n_items}")
    dims = dict(MODEL_DIMS if dims is None else dims)
    if not dims or set(dims) - set(MODALITIES):
        raise UsageError(f"dims must name some of {MODALITIES}, got {sorted(dims)}")
    rng = np.random.default_rng(seed)
    n_cat = n_categories or max(4, n_items // 100)
    category = rng.integers(0, n_cat, n_items)
    segment = rng.integers(0, n_segments, n_items)
    style = rng.integers(0, n_cat, n_items)
    S = rng.normal(size=(n_cat, semantic_dim))
    D = rng.normal(size=(n_cat, style_dim))
    sem = S[category] + 0.3 * rng.normal(size=(n_items, semantic_dim))
    sty = D[style] + 0.3 * rng.normal(size=(n_items, style_dim))
    video = rng.random(n_items) < VIDEO_SHARE
    vectors, masks = {}, {}
    for m in (m for m in MODALITIES if m in dims):
        d = dims[m]
        a_sem, a_sty = AMPLITUDES[m]
        A = rng.normal(size=(semantic_dim, d)) / np.sqrt(semantic_dim)
        B = rng.normal(size=(style_dim, d)) / np.sqrt(style_dim)
        has = video if m in ("visual", "audio") else np.ones(n_items, bool)
        if len(dims) > 1:
            has = has & (rng.random(n_items) > 0.05)  # a few items lack any one modality
        x = a_sem * (sem @ A) + a_sty * (sty @ B) + noise * rng.normal(size=(n_items, d))
        x[~has] = 0
        vectors[m], masks[m] = x.astype(np.float32), has
    no_modality = ~np.any(np.stack(list(masks.values())), axis=0)
    if no_modality.any():  # every item keeps at least its first modality
        first = next(iter(vectors))
        masks[first] = masks[first] | no_modality
        vectors[first][no_modality] = rng.normal(size=(int(no_modality.sum()), dims[first]))
    ids = [f"item-{i:0{len(str(n_items - 1))}d}" for i in range(n_items)]
    rank = rng.permutation(n_items) + 1
    popularity = rank.astype(np.float64) ** -popularity_skew
    popularity /= popularity.sum()
    return SyntheticCatalog(CatalogEmbeddings(ids, vectors, masks), category, segment, style,
                            category * n_segments + segment, popularity)


def sample_log(topic: np.ndarray, popularity: np.ndarray, *, n_users: int, n_interactions: int,
               max_topics: int = 3, session_length: float = 5.0, noise: float = 0.2, purchase_rate: float = 0.25,
               seed: int = 0) -> SyntheticLog:
    """Sample a log: users with one to ``max_topics`` topics draw items from them by popularity.

    Parameters
    ----------
    topic : int (N,)
        Each item's topic (items of one topic are co-engaged).
    popularity : float (N,)
        Item weights (any positive scale).
    n_users, n_interactions : int
        Users U and views R (purchases come on top: about ``purchase_rate * (1 - noise) * R``).
    max_topics : int
        Each user gets 1..max_topics topics, drawn by topic popularity.
    session_length : float
        Mean number of consecutive views on one of the user's topics (a session).
    noise : float
        Share of views that are a random item drawn by global popularity.
    purchase_rate : float
        Share of topic views (not noise views) that are followed by a purchase row.
    seed : int

    Returns
    -------
    SyntheticLog
        Rows in user order, then time; views and purchases interleaved.
    """
    if n_users < 1 or n_interactions < n_users:
        raise UsageError(f"need n_interactions >= n_users >= 1, got {n_interactions} and {n_users}")
    rng = np.random.default_rng(seed)
    topic = np.asarray(topic, np.int64)
    pop = np.asarray(popularity, np.float64)
    order = np.lexsort((np.arange(topic.size), topic))  # items grouped by topic
    t_sorted = topic[order]
    cum = np.cumsum(pop[order])
    topics, start = np.unique(t_sorted, return_index=True)
    end = np.r_[start[1:], topic.size]
    base = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    mass = cum[end - 1] - base
    # users' topics, by topic popularity
    k = rng.integers(1, max_topics + 1, n_users)
    user_topics = rng.choice(topics.size, size=(n_users, max_topics), p=mass / mass.sum())
    # interactions per user: at least 2, the rest spread in proportion to a lognormal activity
    activity = rng.lognormal(0.0, 0.7, n_users)
    extra = rng.multinomial(n_interactions - 2 * n_users, activity / activity.sum()) if n_interactions > 2 * n_users \
        else np.zeros(n_users, np.int64)
    counts = np.minimum(2, n_interactions // n_users) + extra
    user = np.repeat(np.arange(n_users), counts)
    r = user.size
    # sessions: a run of about ``session_length`` views on one of the user's topics
    new_session = np.r_[True, user[1:] != user[:-1]] | (rng.random(r) < 1.0 / session_length)
    session = np.cumsum(new_session) - 1
    choice = (rng.random(int(session[-1]) + 1) * k[user[new_session]]).astype(np.int64)
    pick = user_topics[user, choice[session]]
    u = base[pick] + rng.random(r) * mass[pick]
    item = order[np.clip(np.searchsorted(cum, u, side="right"), start[pick], end[pick] - 1)]
    noisy = rng.random(r) < noise
    global_cum = np.cumsum(pop)
    item[noisy] = np.minimum(np.searchsorted(global_cum, rng.random(int(noisy.sum())) * global_cum[-1]),
                             topic.size - 1)
    t = np.arange(r, dtype=np.float64) * 60.0
    buy = ~noisy & (rng.random(r) < purchase_rate)
    user_all = np.concatenate([user, user[buy]])
    item_all = np.concatenate([item, item[buy]])
    time_all = np.concatenate([t, t[buy] + 30.0])
    event = np.concatenate([np.full(r, "view"), np.full(int(buy.sum()), "purchase")])
    o = np.lexsort((time_all, user_all))
    return SyntheticLog(user_all[o], item_all[o], event[o], time_all[o])


def save_store(store: str | Path, raw: CatalogEmbeddings, *, weights: Mapping[str, float] | None = None,
               titles: Mapping[str, str] | None = None, pca_dim: int | None = None,
               categories: Mapping[str, object] | None = None) -> Path:
    """A store without media: ``index/catalog.h5`` (normalised ``raw``) and ``index/items.json``.

    Enough for ``reelsim lists``, ``train``, ``evaluate`` and ``similar`` (not
    for the commands that read shards: ``report``, ``shots``, ``export --format hdf5``).
    ``categories`` (item id -> label) go into ``items.json`` as ``category``;
    ``reelsim evaluate`` then reports precision@10 of the same category.
    """
    layout = StoreLayout(store)
    layout.index_dir.mkdir(parents=True, exist_ok=True)
    cat = normalise(raw, pca_dim=pca_dim)
    save_catalog(cat, dict(weights or FusionConfig().weights), layout.catalog)
    kind = {True: "video", False: "product"}
    has_visual = raw.masks.get("visual", np.zeros(raw.n, bool))
    meta = {i: {"kind": kind[bool(has_visual[r])], "title": (titles or {}).get(i, i)} for r, i in enumerate(raw.ids)}
    for i, c in (categories or {}).items():
        meta[i]["category"] = c
    write_text_atomic(layout.items_meta, json.dumps(meta, ensure_ascii=False))
    return layout.root
