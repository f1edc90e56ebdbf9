"""Shot-level copy search: which items show footage of which, where, and how it was edited.

A video-level vector says that two items look alike; it cannot say that
item B shows item A in a corner, or which ten seconds of a film a trailer
took. This module answers that from each shot's region vectors
(:mod:`reelsim.pipeline.regions`):

1. **Index** (:func:`build_copy_index`, run by the lists job): every region
   vector of every video goes into one FAISS index (exact below
   :data:`EXACT_BELOW` vectors, IVF-PQ above), with a table of what each row
   is (item, shot, region kind) and each item's shot times.
2. **Shot matches** (:func:`item_pairs`): each region of an item is searched
   (and, mirrored, again); a hit counts when its cosine reaches
   :attr:`CopySettings.hit` and one of the two regions shows the whole
   picture (a region of one item showing the whole of another: an inset, a
   split-screen half, a letterboxed or re-framed picture). Two shots score
   their best region pair.
3. **Temporal alignment** (:func:`align`): the shot pairs of two items are
   chained in time order on both sides by dynamic programming (the longest
   chain by evidence, as the Video Similarity Challenge baselines chain
   frame matches), up to :attr:`CopySettings.max_segments` chains. A chain
   whose evidence reaches :attr:`CopySettings.min_evidence` is a copy: its
   time spans in both items come from the matched shots, trimmed by the
   time mapping that the cuts both items share give (so an excerpt that
   starts inside a shot is placed there), with a score, the speed ratio,
   and the kind of edit it looks like (:func:`edit_kind`).
4. **The table** (:func:`write_copy_table`): every copy between two items,
   once from each side, in ``STORE/index/copies/matches.parquet``;
   ``reelsim matches`` (:func:`matches`) reads it, ``similar`` marks copies
   from it (:func:`copy_marks`) and list hygiene collapses true copies with it
   (:class:`CopyPairs`).

Stores whose shards have no region vectors (written before them) fall back
to each shot's keyframe row of the image model: whole-frame copies only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reelsim.errors import DamagedStoreError, StoreError, UnknownItemError
from reelsim.pipeline.regions import FULL_KINDS, REGION_KINDS, mirrored
from reelsim.reporting import Counter, Progress
from reelsim.storage.atomic import atomic_path, check_store_file, native_path, own_path
from reelsim.storage.layout import StoreLayout
from reelsim.storage.shards import read_regions

#: region kinds of the index (``keyframe``: a version-1 shard's keyframe row, standing for the whole picture)
KINDS = (*REGION_KINDS, "keyframe")
_FULL = np.array([k in FULL_KINDS or k == "keyframe" for k in KINDS])
#: region kinds that place a copy in a corner (picture-in-picture) or one half (split-screen)
_PART_EDIT = {"inset": "picture-in-picture", "tl": "picture-in-picture", "tr": "picture-in-picture",
              "bl": "picture-in-picture", "br": "picture-in-picture", "left": "split-screen",
              "right": "split-screen"}
#: below this many region vectors the copy index is exact (Flat); above, IVF-PQ
EXACT_BELOW = 2_000_000
#: columns of the copy table
COLUMNS = ("item", "other", "relation", "item_start", "item_end", "other_start", "other_end", "score", "shots",
           "speed", "edit")


@dataclass(frozen=True)
class CopySettings:
    """How shot matches become copies (tuned on the benchmark's validation sources, docs/copies.md).

    hit : cosine at which two regions match.
    k : nearest regions looked at per region.
    min_evidence : a chain of shot matches is a copy when the sum over its
        shots of (cosine - ``hit``) reaches this.
    max_segments : at most this many separate copies between two items.
    true_copy : list hygiene (``--dedup``) collapses two items when a copy
        covers at least this fraction of the shorter one.
    """

    hit: float = 0.75
    k: int = 48
    min_evidence: float = 0.2
    max_segments: int = 3
    true_copy: float = 0.5


class Segment(NamedTuple):
    """One copy between the query item and another: aligned spans (seconds), score and what edit it looks like.

    relation : ``copies`` (the query shows the other's footage: it is the
        excerpt, the montage, the picture-in-picture), ``copied-by`` (the
        other shows the query's), ``duplicate`` (each shows all of the other).
    """

    other: str
    relation: str
    item_start: float
    item_end: float
    other_start: float
    other_end: float
    score: float
    shots: int
    speed: float
    edit: str

    def to_json(self) -> dict:
        d = self._asdict()
        for k in ("item_start", "item_end", "other_start", "other_end", "score", "speed"):
            d[k] = round(float(d[k]), 3)
        return d


# ------------------------------------------------------------------ the index


@dataclass
class CopyRows:
    """What each row of the copy index is, and each item's shots.

    ids : the items, in the order they were added.
    item, shot : int32 (N,) each row's item (index into ``ids``) and shot.
    kind : int8 (N,) each row's region kind (index into :data:`KINDS`).
    shot_times : float64 (T, 2) every item's shots, item after item; ``offsets`` int64 (len(ids) + 1).
    duration : float64 (len(ids),) seconds of each item.
    """

    ids: list[str]
    item: np.ndarray
    shot: np.ndarray
    kind: np.ndarray
    shot_times: np.ndarray
    offsets: np.ndarray
    duration: np.ndarray
    extra: dict = field(default_factory=dict)

    def times(self, row: int) -> np.ndarray:
        return self.shot_times[self.offsets[row]:self.offsets[row + 1]]

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, ids=np.array(self.ids, dtype=object).astype(str), item=self.item, shot=self.shot,
                     kind=self.kind, shot_times=self.shot_times, offsets=self.offsets, duration=self.duration,
                     extra=np.array(json.dumps(self.extra)))

    @classmethod
    def load(cls, path: Path) -> "CopyRows":
        try:
            with np.load(check_store_file(path, "lists")) as z:
                return cls([str(i) for i in z["ids"]], z["item"], z["shot"], z["kind"], z["shot_times"],
                           z["offsets"], z["duration"], json.loads(str(z["extra"])))
        except FileNotFoundError:
            raise StoreError(f"no copy index in {path.parent.parent.parent}: run `reelsim lists --store "
                             f"{path.parent.parent.parent}` to build it") from None
        except Exception as e:  # noqa: BLE001  (np.load: OSError, ValueError, KeyError, BadZipFile ...)
            raise DamagedStoreError(path, f"cannot be read ({e.__class__.__name__}: {e})", "lists") from None


def ids_fingerprint(ids: list[str]) -> str:
    """sha256 (16 hex) of the catalog's ids in order: the copy index is current when it matches."""
    return hashlib.sha256("\x00".join(ids).encode("utf-8")).hexdigest()[:16]


def read_item_regions(layout: StoreLayout, item_id: str) -> dict | None:
    """An item's region record (:func:`reelsim.storage.shards.read_regions`) with kinds as :data:`KINDS` codes.

    None for an item without video, or without a shard (a catalog built from vectors alone has none).
    """
    path = layout.shard(item_id)
    if not path.is_file():
        return None
    rec = read_regions(path, item_id)
    if rec is None:
        return None
    rec["code"] = np.array([KINDS.index(k) if k in KINDS else KINDS.index("picture") for k in rec["kind"]], np.int8)
    return rec


def new_index(d: int, n: int, sample: np.ndarray | None = None):
    """An empty FAISS inner-product index for ``n`` vectors of ``d`` dims: exact (float16 codes), or IVF-PQ
    trained on ``sample``."""
    import faiss

    if n < EXACT_BELOW or sample is None:  # exact, on the float16 the shards store: half a Flat index's size
        return faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    nlist = int(min(65536, max(1024, 4 * np.sqrt(n))))
    index = faiss.index_factory(d, f"IVF{nlist},PQ{d // 8}", faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    faiss.extract_index_ivf(index).nprobe = 32
    return index


def copy_index_current(layout: StoreLayout, ids: list[str], settings: CopySettings | None = None) -> bool:
    """Whether the store's copy index and table were built for exactly ``ids`` with ``settings``."""
    if not (layout.copy_rows.is_file() and layout.copy_index.is_file() and layout.copy_table.is_file()):
        return False
    try:
        extra = CopyRows.load(layout.copy_rows).extra
    except (StoreError, DamagedStoreError):
        return False
    return extra.get("ids") == ids_fingerprint(ids) and extra.get("settings") == dataclasses.asdict(
        settings or CopySettings())


def build_copy_index(layout: StoreLayout, ids: list[str], settings: CopySettings | None = None, *,
                     progress: Progress | None = None, force: bool = False) -> dict:
    """Index every region vector of ``ids`` and find every copy between two of them (the lists job calls it).

    Skipped (``{"skipped": True}``) when the index and table are current for
    ``ids`` (same ids, same order) unless ``force``. Items without video are
    left out.

    Returns
    -------
    dict: ``items`` (videos indexed), ``vectors``, ``copies`` (rows of the
    table), ``regions`` (items with region vectors; the rest use keyframes),
    ``index`` (FAISS description), ``index_s``, ``search_s``.
    """
    import faiss

    settings = settings or CopySettings()
    if not force and copy_index_current(layout, ids, settings):
        return {"skipped": True}
    t0 = time.perf_counter()
    # pass 1: what each item has (no vectors kept: memory holds the index and per-row metadata only)
    meta, dims = {}, {}
    for item_id in ids:
        rec = read_item_regions(layout, item_id)
        if rec is not None and len(rec["vectors"]):
            meta[item_id] = {k: rec[k] for k in ("shot", "code", "shot_times", "duration_s", "regions")}
            dims[item_id] = (rec["vectors"].shape[1], bool(rec["regions"]))
    with_regions = sum(r for _, r in dims.values())
    if len({d for d, _ in dims.values()}) > 1:  # region vectors and old keyframe rows cannot share an index
        keep = with_regions * 2 >= len(dims)
        meta = {i: m for i, m in meta.items() if dims[i][1] == keep}
    rows = rows_of(list(meta), meta)
    dim = dims[rows.ids[0]][0] if rows.ids else 0
    rows.extra = {"ids": ids_fingerprint(ids), "dim": int(dim), "settings": dataclasses.asdict(settings)}
    n = len(rows.item)
    vectors_of = lambda item_id: read_item_regions(layout, item_id)["vectors"]
    index = None
    if n:
        sample = None
        if n >= EXACT_BELOW:  # IVF-PQ: trained on the vectors of a seeded sample of items
            rng = np.random.default_rng(0)
            per = max(1, n // len(rows.ids))
            picked = rng.choice(len(rows.ids), min(len(rows.ids), 256 * 1024 // per + 1), replace=False)
            sample = np.concatenate([vectors_of(rows.ids[i]) for i in np.sort(picked)])
        index = new_index(dim, n, sample)
        del sample
        # pass 2: the vectors, added a block of items at a time
        block: list[np.ndarray] = []
        for item_id in rows.ids:
            block.append(vectors_of(item_id))
            if sum(len(b) for b in block) >= 65536:
                index.add(np.concatenate(block))
                block = []
        if block:
            index.add(np.concatenate(block))
    t1 = time.perf_counter()
    segments: list[tuple[str, Segment]] = []
    tick = Counter(progress, "copy search", total=len(rows.ids))
    for q, item_id in enumerate(rows.ids):  # pass 3: each item's regions searched
        rec = read_item_regions(layout, item_id)
        for seg in item_copies(index, rows, q, rec, settings):
            segments.append((item_id, seg))
        tick(1)
    layout.copies_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(layout.copy_index) as tmp:
        with native_path(tmp) as name:
            faiss.write_index(index if index is not None else faiss.IndexFlatIP(max(1, rows.extra["dim"])), name)
    write_copy_table(layout.copy_table, symmetric(segments))
    rows.save(layout.copy_rows)
    return {"items": len(rows.ids), "vectors": n, "copies": len(segments), "regions": with_regions,
            "index": type(index).__name__ if index is not None else "none",
            "index_s": round(t1 - t0, 3), "search_s": round(time.perf_counter() - t1, 3)}


def rows_of(ids: list[str], recs: dict) -> CopyRows:
    """The :class:`CopyRows` of the items ``ids`` (in that order) from their region records."""
    item = np.concatenate([np.full(len(recs[i]["shot"]), r, np.int32) for r, i in enumerate(ids)]) if ids \
        else np.zeros(0, np.int32)
    cat = lambda name, dtype: (np.concatenate([np.asarray(recs[i][name], dtype) for i in ids]) if ids
                               else np.zeros(0, dtype))
    times = [np.asarray(recs[i]["shot_times"], np.float64).reshape(-1, 2) for i in ids]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in times])]).astype(np.int64)
    return CopyRows(list(ids), item, cat("shot", np.int32), cat("code", np.int8),
                    np.concatenate(times) if times else np.zeros((0, 2)), offsets,
                    np.array([recs[i]["duration_s"] for i in ids], np.float64))


def add_to_copy_index(layout: StoreLayout, new_ids: list[str], all_ids: list[str],
                      settings: CopySettings | None = None) -> dict:
    """``reelsim add``: the new items' region vectors into the copy index, their copies into the table.

    The new items are searched against the whole index (theirs included):
    since a match is symmetric, this finds both what they copy and what
    copies them. Without a current index for the old items, everything is
    built again (:func:`build_copy_index`).
    """
    import faiss

    settings = settings or CopySettings()
    new_set = set(new_ids)
    old_ids = [i for i in all_ids if i not in new_set]
    if not copy_index_current(layout, old_ids, settings):
        return build_copy_index(layout, all_ids, settings, force=True)
    rows = CopyRows.load(layout.copy_rows)
    with native_path(check_store_file(layout.copy_index, "lists")) as name:
        index = faiss.read_index(name)
    recs = {}
    for item_id in new_ids:
        rec = read_item_regions(layout, item_id)
        if rec is not None and len(rec["vectors"]) and rec["vectors"].shape[1] == index.d:
            recs[item_id] = rec
    if recs:
        fresh = rows_of(list(recs), recs)
        base = len(rows.ids)
        rows = CopyRows(rows.ids + fresh.ids, np.concatenate([rows.item, fresh.item + base]),
                        np.concatenate([rows.shot, fresh.shot]), np.concatenate([rows.kind, fresh.kind]),
                        np.concatenate([rows.shot_times, fresh.shot_times]),
                        np.concatenate([rows.offsets, fresh.offsets[1:] + rows.offsets[-1]]),
                        np.concatenate([rows.duration, fresh.duration]), rows.extra)
        index.add(np.concatenate([recs[i]["vectors"] for i in fresh.ids]).astype(np.float32))
    segments = []
    for item_id, rec in recs.items():
        segments += [(item_id, s) for s in item_copies(index, rows, rows.ids.index(item_id), rec, settings)]
    table = read_copy_table(layout.copy_table)
    new_pairs = symmetric(segments)
    fresh_set = set(recs)
    # a pair of two new items was found from both sides: keep the one that the symmetric rows give once
    seen = set()
    unique = []
    for item_id, seg in new_pairs:
        key = (item_id, seg.other, seg.item_start, seg.other_start)
        if key not in seen:
            seen.add(key)
            unique.append((item_id, seg))
    kept = [(i, s) for i, s in table if not (i in fresh_set or s.other in fresh_set)]
    write_copy_table(layout.copy_table, kept + unique)
    with atomic_path(layout.copy_index) as tmp:
        with native_path(tmp) as name:
            faiss.write_index(index, name)
    rows.extra["ids"] = ids_fingerprint(all_ids)
    rows.save(layout.copy_rows)
    return {"items": len(rows.ids), "added": len(recs), "copies": len(segments)}


# ------------------------------------------------------------------ search and alignment


class ShotPairs(NamedTuple):
    """Matched shots between the query item and one other: (P,) arrays.

    q, t : shot of the query, shot of the other.
    sim : best region cosine of the two shots.
    q_kind, t_kind : region kinds (:data:`KINDS` codes) of that best pair.
    mirrored : whether the best pair matched with the query mirrored.
    """

    q: np.ndarray
    t: np.ndarray
    sim: np.ndarray
    q_kind: np.ndarray
    t_kind: np.ndarray
    mirrored: np.ndarray


def item_pairs(index, rows: CopyRows, q_row: int, rec: dict, settings: CopySettings) -> dict[int, ShotPairs]:
    """Shot matches of one item against every other item of the index: {other item row: ShotPairs}.

    Each region vector is searched as it is and mirrored (thumbnail columns
    reversed); hits below ``settings.hit``, hits on the item itself and
    pairs where neither region shows the whole picture are dropped.
    """
    xq = np.ascontiguousarray(rec["vectors"], dtype=np.float32)
    side = int(rec.get("provenance", {}).get("thumb_side", 0) or 0)
    variants = [xq]
    if rec.get("regions") and side:
        variants.append(mirrored(xq, side))
    k = int(min(settings.k, max(1, index.ntotal)))
    found = []
    for m, x in enumerate(variants):
        D, I = index.search(x, k)
        qi, col = np.nonzero((D >= settings.hit) & (I >= 0))
        if not qi.size:
            continue
        rows_hit = I[qi, col]
        other = rows.item[rows_hit]
        qk, tk = rec["code"][qi], rows.kind[rows_hit]
        ok = (other != q_row) & (_FULL[qk] | _FULL[tk])
        found.append((other[ok], rec["shot"][qi[ok]], rows.shot[rows_hit[ok]], D[qi, col][ok], qk[ok], tk[ok],
                      np.full(int(ok.sum()), m == 1)))
    if not found:
        return {}
    other, qs, ts, sim, qk, tk, mir = (np.concatenate(a) for a in zip(*found))
    out = {}
    order = np.lexsort((-sim, ts, qs, other))  # per (other, q shot, t shot): best first
    other, qs, ts, sim, qk, tk, mir = (a[order] for a in (other, qs, ts, sim, qk, tk, mir))
    first = np.ones(len(other), bool)
    first[1:] = (other[1:] != other[:-1]) | (qs[1:] != qs[:-1]) | (ts[1:] != ts[:-1])
    other, qs, ts, sim, qk, tk, mir = (a[first] for a in (other, qs, ts, sim, qk, tk, mir))
    for o in np.unique(other):
        s = other == o
        out[int(o)] = ShotPairs(qs[s], ts[s], sim[s], qk[s], tk[s], mir[s])
    return out


def chains(pairs: ShotPairs, hit: float, max_segments: int) -> list[np.ndarray]:
    """Best chains of shot pairs increasing in time on both sides, by evidence (sum of cosine - ``hit``).

    Dynamic programming over the pairs in query order (O(P^2), P pairs);
    after each chain its query and other shots are taken out and the next
    best is found, up to ``max_segments`` chains.

    Returns
    -------
    list of int arrays: positions into ``pairs``, in time order.
    """
    out = []
    alive = np.ones(len(pairs.q), bool)
    gain = pairs.sim.astype(np.float64) - hit
    for _ in range(max_segments):
        idx = np.flatnonzero(alive)
        if not idx.size:
            break
        idx = idx[np.lexsort((pairs.t[idx], pairs.q[idx]))]
        q, t, g = pairs.q[idx], pairs.t[idx], gain[idx]
        best = g.copy()
        prev = np.full(len(idx), -1)
        for a in range(len(idx)):
            earlier = (q[:a] < q[a]) & (t[:a] < t[a])
            if earlier.any():
                b = int(np.argmax(np.where(earlier, best[:a], -np.inf)))
                if best[b] > 0:
                    best[a], prev[a] = best[b] + g[a], b
        end = int(np.argmax(best))
        chain = []
        while end >= 0:
            chain.append(idx[end])
            end = prev[end]
        chain = np.array(chain[::-1])
        out.append(chain)
        used_q, used_t = set(pairs.q[chain].tolist()), set(pairs.t[chain].tolist())
        alive &= ~np.isin(pairs.q, list(used_q)) & ~np.isin(pairs.t, list(used_t))
    return out


def time_map(q_times: np.ndarray, t_times: np.ndarray, qs: np.ndarray, ts: np.ndarray) -> tuple[float, float] | None:
    """(a, b) with ``t = a * q + b`` from the cuts two aligned shot sequences share, or None without one.

    Consecutive pairs (i, j), (i + 1, j + 1) of a chain may share the cut into
    shots i + 1 and j + 1 (not always: an inset's item also cuts where its
    background does). The speed ``a`` is the median slope between those cut
    pairs (Theil-Sen), or, with one cut, the median duration ratio of the
    shots matched whole on both sides (1 without any); ``b`` the median
    offset. Cut pairs more than 0.25 s off the line are dropped and the line
    fitted again; None when no line with ``0.4 <= a <= 2.5`` fits.
    """
    cuts = np.array([(q_times[i2, 0], t_times[j2, 0]) for (i1, j1), (i2, j2)
                     in zip(zip(qs, ts), zip(qs[1:], ts[1:])) if i2 == i1 + 1 and j2 == j1 + 1]).reshape(-1, 2)
    if not len(cuts):
        return None
    inner = [(t_times[j, 1] - t_times[j, 0]) / (q_times[i, 1] - q_times[i, 0])
             for i, j in zip(qs[1:-1], ts[1:-1]) if q_times[i, 1] > q_times[i, 0]]
    for _ in range(2):
        if len(cuts) >= 2:
            dq = cuts[None, :, 0] - cuts[:, None, 0]
            dt = cuts[None, :, 1] - cuts[:, None, 1]
            ok = np.triu(np.abs(dq) > 1e-3, 1)
            a = float(np.median(dt[ok] / dq[ok])) if ok.any() else 1.0
        else:
            a = float(np.median(inner)) if inner else 1.0
        if not 0.4 <= a <= 2.5:
            return None
        b = float(np.median(cuts[:, 1] - a * cuts[:, 0]))
        near = np.abs(cuts[:, 1] - (a * cuts[:, 0] + b)) <= 0.25
        if near.all() or not near.any():
            break
        cuts = cuts[near]
    return a, b


def mapping_fits(mapping: tuple[float, float], q_shots: np.ndarray, t_shots: np.ndarray) -> bool:
    """Whether ``t = a q + b`` maps most matched query shots (float (P, 2) seconds) onto their matched shots.

    Each matched pair's mapped query shot must overlap its other shot by at
    least half of the shorter of the two, for at least half of the pairs.
    """
    a, b = mapping
    lo, hi = a * q_shots[:, 0] + b, a * q_shots[:, 1] + b
    inter = np.minimum(hi, t_shots[:, 1]) - np.maximum(lo, t_shots[:, 0])
    shorter = np.minimum(hi - lo, t_shots[:, 1] - t_shots[:, 0])
    return bool(np.mean(inter >= 0.5 * shorter) >= 0.5)


def segment_of(pairs: ShotPairs, chain: np.ndarray, q_times: np.ndarray, t_times: np.ndarray,
               q_dur: float, t_dur: float, other: str) -> Segment:
    """The :class:`Segment` of one chain: spans trimmed by the shared cuts, score, speed, relation, edit."""
    qs, ts = pairs.q[chain], pairs.t[chain]
    q0, q1 = float(q_times[qs[0], 0]), float(q_times[qs[-1], 1])
    t0, t1 = float(t_times[ts[0], 0]), float(t_times[ts[-1], 1])
    qk, tk = pairs.q_kind[chain], pairs.t_kind[chain]
    q_part = np.mean(~_FULL[qk]) > 0.5
    t_part = np.mean(~_FULL[tk]) > 0.5
    # an item showing the other in a part of its frame also cuts where its own background does: its cuts
    # are not the other's, so no time mapping is read from them
    mapping = None if (q_part or t_part) else time_map(q_times, t_times, qs, ts)
    if mapping is not None and not mapping_fits(mapping, q_times[qs], t_times[ts]):
        mapping = None
    speed = 1.0
    if mapping is not None:
        a, b = mapping
        lo, hi = max(q0, (t0 - b) / a), min(q1, (t1 - b) / a)
        if hi > lo:
            q0, q1, t0, t1 = lo, hi, a * lo + b, a * hi + b
        speed = a
    elif len(chain) >= 3:  # no shared cut: the span lengths, when enough shots make them meaningful
        speed = (t1 - t0) / max(q1 - q0, 1e-6)
    sim = pairs.sim[chain]
    q_cover, t_cover = (q1 - q0) / max(q_dur, 1e-6), (t1 - t0) / max(t_dur, 1e-6)
    if q_part and not t_part:
        relation = "copies"
    elif t_part and not q_part:
        relation = "copied-by"
    elif q_cover >= 0.8 and t_cover >= 0.8:
        relation = "duplicate"
    else:
        relation = "copies" if q_cover >= t_cover else "copied-by"
    edit = edit_kind(pairs, chain, relation, speed, q_cover, t_cover)
    return Segment(other, relation, q0, q1, t0, t1, float(sim.mean()), int(len(chain)), float(speed), edit)


#: (region of the derived item, region of the source) -> the spatial edit it shows
_SPATIAL = {("picture", "portrait"): "vertical re-frame", ("picture", "centre"): "crop",
            ("centre", "portrait"): "vertical re-frame", ("keyframe", "centre"): "crop"}


def edit_kind(pairs: ShotPairs, chain: np.ndarray, relation: str, speed: float, q_cover: float,
              t_cover: float) -> str:
    """What edit a copy looks like, from its region kinds, mirroring, speed and coverage (``+``-joined).

    ``picture-in-picture`` (an inset or a quadrant of the derived item shows
    the other's whole picture), ``split-screen`` (a half does), ``vertical
    re-frame`` (the derived picture matches the source's 9:16 strip), ``crop``
    (it matches the source's centre), ``mirror``, ``speed xN`` (the derived
    item plays its source N times as fast), ``excerpt`` (it shows a part of
    the source); ``re-encode`` when none of these (whole picture to whole
    picture: a re-encode, a grade, a letterbox). Each needs most of the
    chain's shot pairs to agree. ``montage`` is added at the item level
    (:func:`montage_marked`).
    """
    derived, source = (pairs.q_kind, pairs.t_kind) if relation != "copied-by" else (pairs.t_kind, pairs.q_kind)
    n = len(chain)
    votes: dict[str, int] = {}
    for d, s_ in zip(derived[chain], source[chain]):
        d, s_ = KINDS[int(d)], KINDS[int(s_)]
        kind = _PART_EDIT.get(d) or _PART_EDIT.get(s_) if d != s_ else None
        kind = kind or _SPATIAL.get((d, s_)) or (_SPATIAL.get((s_, d)) if relation == "duplicate" else None)
        if kind:
            votes[kind] = votes.get(kind, 0) + 1
    out = [k for k, v in sorted(votes.items(), key=lambda kv: -kv[1])[:1] if v * 2 > n]
    if np.mean(pairs.mirrored[chain]) > 0.5:
        out.append("mirror")
    rate = speed if relation == "copied-by" else 1 / max(speed, 1e-6)  # how fast the derived item plays its source
    if abs(np.log(max(rate, 1e-6))) > np.log(1.15):
        out.append(f"speed x{rate:.2g}")
    d_cover, s_cover = (q_cover, t_cover) if relation != "copied-by" else (t_cover, q_cover)
    if relation != "duplicate" and s_cover < 0.8 and d_cover > s_cover:
        out.append("excerpt")
    return "+".join(out) or "re-encode"


def item_copies(index, rows: CopyRows, q_row: int, rec: dict, settings: CopySettings) -> list[Segment]:
    """Every copy between item ``q_row`` (its region record ``rec``) and the other items of the index, best first."""
    if index is None or not index.ntotal:
        return []
    q_times = np.asarray(rec["shot_times"], np.float64).reshape(-1, 2)
    out = []
    for o, pairs in item_pairs(index, rows, q_row, rec, settings).items():
        for chain in chains(pairs, settings.hit, settings.max_segments):
            evidence = float((pairs.sim[chain] - settings.hit).sum())
            if evidence >= settings.min_evidence:
                out.append(segment_of(pairs, chain, q_times, rows.times(o), float(rec["duration_s"]),
                                      float(rows.duration[o]), rows.ids[o]))
    return sorted(out, key=lambda s: (-round(s.score * min(s.shots, 4), 3), -s.shots, s.other, s.item_start))


_FLIP = {"copies": "copied-by", "copied-by": "copies", "duplicate": "duplicate"}


def flipped(item_id: str, seg: Segment) -> tuple[str, Segment]:
    """The same copy seen from the other item."""
    return seg.other, Segment(item_id, _FLIP[seg.relation], seg.other_start, seg.other_end, seg.item_start,
                              seg.item_end, seg.score, seg.shots, 1 / seg.speed if seg.speed else seg.speed, seg.edit)


def symmetric(segments: list[tuple[str, Segment]]) -> list[tuple[str, Segment]]:
    """Each copy once from each side: a pair found from both items keeps the better-scored finding."""
    best: dict[tuple[str, str], list[tuple[str, Segment]]] = {}
    for item_id, seg in segments:
        key = (min(item_id, seg.other), max(item_id, seg.other))
        best.setdefault(key, []).append((item_id, seg))
    out = []
    for key, found in best.items():
        # the side with more evidence wins; its segments and their mirror images are stored
        by_side: dict[str, list[Segment]] = {}
        for item_id, seg in found:
            by_side.setdefault(item_id, []).append(seg)
        side = max(by_side, key=lambda i: (sum(s.score * s.shots for s in by_side[i]), i == key[0]))
        for seg in by_side[side]:
            out.append((side, seg))
            out.append(flipped(side, seg))
    return out


# ------------------------------------------------------------------ the table


def write_copy_table(path: Path, segments: list[tuple[str, Segment]]) -> None:
    """Write the copy table (Parquet, :data:`COLUMNS`) atomically, sorted by item then score."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    segments = sorted(segments, key=lambda p: (p[0], -p[1].score, p[1].other, p[1].item_start))
    cols = {"item": [i for i, _ in segments]}
    for name in COLUMNS[1:]:
        cols[name] = [getattr(s, name) for _, s in segments]
    types = {"item": pa.string(), "other": pa.string(), "relation": pa.string(), "shots": pa.int32(),
             "edit": pa.string()}
    table = pa.table({c: pa.array(cols[c], type=types.get(c, pa.float64())) for c in COLUMNS})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with native_path(tmp) as name:
            pq.write_table(table, name)


def read_copy_table(path: Path, item: str | None = None) -> list[tuple[str, Segment]]:
    """(item, Segment) rows of the copy table, all or those of ``item``."""
    import pyarrow.parquet as pq

    try:
        filters = [("item", "=", item)] if item is not None else None
        with native_path(check_store_file(path, "lists")) as name:
            t = pq.read_table(name, filters=filters).to_pydict()
    except FileNotFoundError:
        store = path.parent.parent.parent
        raise StoreError(f"no copy index in {store}: run `reelsim lists --store {store}` to build it") from None
    except Exception as e:  # noqa: BLE001  (pyarrow raises ArrowInvalid, OSError ...)
        raise DamagedStoreError(path, f"cannot be read ({e.__class__.__name__}: {e})", "lists") from None
    return [(t["item"][r], Segment(*(t[c][r] for c in COLUMNS[1:]))) for r in range(len(t["item"]))]


def matches(store: Path, item_id: str, *, direction: str = "both") -> list[Segment]:
    """The copies of ``item_id`` in the store, best first (``reelsim matches``).

    Parameters
    ----------
    direction : ``both``; ``in``: only where ``item_id`` comes from (it
        copies the other, or they are duplicates); ``out``: only the items
        that show ``item_id``'s footage (they copy it, or duplicates).

    Raises
    ------
    UnknownItemError
        ``item_id`` is not in the copy index (not in the catalog, or no video).
    """
    if direction not in ("both", "in", "out"):
        raise ValueError(f"direction must be both, in or out, got {direction!r}")
    layout = StoreLayout(store)
    layout.require_catalog()  # no store, or no run finished there: says so first
    rows = CopyRows.load(layout.copy_rows)
    if item_id not in set(rows.ids):
        if not layout.shard(item_id).is_file():
            raise UnknownItemError(f"unknown item id {item_id!r}: no results for it in {store}")
        raise UnknownItemError(f"item {item_id!r} has no video shots in {store}'s copy index (not a video, or "
                               f"added since: run `reelsim lists --store {store}`)")
    keep = {"both": ("copies", "copied-by", "duplicate"), "in": ("copies", "duplicate"),
            "out": ("copied-by", "duplicate")}[direction]
    segs = [s for _, s in read_copy_table(layout.copy_table, item_id) if s.relation in keep]
    return montage_marked(segs)


def montage_marked(segs: list[Segment]) -> list[Segment]:
    """``segs`` (one item's copies) with ``montage`` added to the edits of what it copies when three or more
    separate parts of its time line show footage of other items (a trailer, a compilation).

    Parts overlapping in the item's time line count once (an inset copied
    from a video and from that video's re-encodes is one part).
    """
    took = sorted((s for s in segs if s.relation == "copies"), key=lambda s: s.item_start)
    parts, end = 0, -np.inf
    for s in took:
        if s.item_start >= end - 0.25:  # a new part (a quarter second of overlap is a cut's rounding)
            parts += 1
        end = max(end, s.item_end)
    if parts < 3:
        return segs
    return [s._replace(edit=s.edit if s.relation != "copies" or "montage" in s.edit else
                       ("montage+" + s.edit).replace("+re-encode", "")) for s in segs]


def copy_marks(store: Path, item_id: str, neighbor_ids: list[str]) -> dict[str, dict]:
    """Which of ``item_id``'s neighbours are copies of it, with the best matched span: {id: span}.

    ``span``: ``item_start``, ``item_end``, ``other_start``, ``other_end``
    (seconds), ``relation``, ``edit``, ``score``. Empty without a copy table
    (a store written before copy search) or when ``item_id`` has none.
    """
    layout = StoreLayout(store)
    if not layout.copy_table.is_file():
        return {}
    wanted = set(neighbor_ids)
    out: dict[str, dict] = {}
    for _, seg in read_copy_table(layout.copy_table, item_id):
        if seg.other in wanted and seg.other not in out:
            d = seg.to_json()
            d.pop("other")
            out[seg.other] = d
    return out


class CopyPairs:
    """True copies among catalog rows, for list hygiene (``--dedup``): groups of items joined by copies that
    cover at least ``true_copy`` of the shorter item (a re-upload, an inset of the whole video, its mirrored or
    graded copy), closed transitively (a picture-in-picture and a mirrored copy of one video are one group).

    ``group``: int64 (N,) each catalog row's group, -1 for a row in none. Picklable, so it travels with the
    kNN job to Dask workers.
    """

    def __init__(self, group: np.ndarray):
        self.group = np.asarray(group, np.int64)

    def __len__(self) -> int:
        """Rows that belong to a group."""
        return int((self.group >= 0).sum())

    def mask(self, I: np.ndarray) -> np.ndarray:
        """bool (B, C, C): candidates ``I[b, i]`` and ``I[b, j]`` (catalog rows, -1 none) are true copies."""
        g = np.where(I >= 0, self.group[np.maximum(I, 0)], -1)
        return (g[:, :, None] == g[:, None, :]) & (g >= 0)[:, :, None]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[int, int]], n: int) -> "CopyPairs":
        """Groups of ``n`` rows from true-copy pairs (connected components, union-find)."""
        parent = np.arange(n)

        def root(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b in pairs:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        roots = np.array([root(i) for i in range(n)], np.int64)
        size = np.bincount(roots, minlength=n)
        return cls(np.where(size[roots] > 1, roots, -1))


def copy_pairs(store: Path, ids: list[str], settings: CopySettings | None = None) -> CopyPairs | None:
    """The :class:`CopyPairs` of the catalog ``ids`` (rows in that order) from the copy table; None without one."""
    settings = settings or CopySettings()
    layout = StoreLayout(store)
    table, rows_path = Path(own_path(layout.copy_table)), Path(own_path(layout.copy_rows))  # this session's build
    if not (table.is_file() and rows_path.is_file()):
        return None
    rows = CopyRows.load(rows_path)
    dur = dict(zip(rows.ids, rows.duration))
    row_of = {i: r for r, i in enumerate(ids)}
    pairs = []
    for item_id, seg in read_copy_table(table):
        if item_id not in row_of or seg.other not in row_of:
            continue
        shorter = min(dur.get(item_id, np.inf), dur.get(seg.other, np.inf))
        span = max(seg.item_end - seg.item_start, seg.other_end - seg.other_start)
        if span >= settings.true_copy * shorter:
            pairs.append((row_of[item_id], row_of[seg.other]))
    return CopyPairs.from_pairs(pairs, len(ids))


def summary_line(summary: dict) -> str:
    """One line for a progress log about a copy-index build."""
    if summary.get("skipped"):
        return "copy index: current"
    return (f"copy index: {summary['items']} videos, {summary['vectors']} region vectors, {summary['copies']} "
            f"copies found ({summary['index_s']:.1f} s index, {summary['search_s']:.1f} s search)")


__all__ = ["CopyPairs", "CopyRows", "CopySettings", "Segment", "add_to_copy_index", "build_copy_index",
           "copy_marks", "copy_pairs", "matches"]
