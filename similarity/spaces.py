"""Similarity spaces: ``content`` (fusion), ``learned`` (the tower) and ``blend`` (ELSA + tower).

- ``content``: the fused content score of docs/similarity.md (the default; the
  code in :mod:`reelsim.similarity.search` and :mod:`reelsim.similarity.rebuild`).
- ``learned``: the cosine of the content tower's vectors, for every item
  (:mod:`reelsim.similarity.towers`); an item needs only its content.
- ``blend``: for a query item ``a`` with ELSA share ``α_a = n_a / (n_a + blend_shrink)``
  (``n_a`` its number of users in training; 0 for an item without an ELSA
  vector) and any candidate ``b``::

      score(a, b) = α_a cos_ELSA(a, b) + (1 − α_a) cos_tower(a, b)

  where ``cos_ELSA(a, b)`` is 0 when ``b`` has no ELSA vector. A well-known
  item is compared mostly by what people did; a cold item (no interactions,
  or added after training) by the tower alone. The score is an inner product
  of ``[α_a E_a, (1 − α_a) T_a]`` with ``[E_b, T_b]`` and is not symmetric.

A trained model lives in ``STORE/learned/`` (:func:`save_model`), lists of
the learned and blend spaces in ``STORE/lists/<space>/neighbors.parquet``
(and ``.jsonl``/``.h5``), with the same columns as the content lists
(:data:`reelsim.storage.lists.COLUMNS`): ``score`` is the space's score
and ``score_<modality>`` the plain content cosine of each shared modality,
for explanation. Neighbours are found exactly (blocked matrix products);
ties are broken by item id, as in the content lists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelsim import __version__
from reelsim.config import LearnConfig, check_weights
from reelsim.errors import StoreError, UnknownItemError, UsageError
from reelsim.similarity.calibrate import Rule
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog
from reelsim.similarity.fitting import HARD_NEGATIVE_ANCHORS as HARD_NEGATIVE_ANCHORS
from reelsim.similarity.fitting import LearnedModel as LearnedModel
from reelsim.similarity.fitting import WarmModel, mixed
from reelsim.similarity.fitting import fit_model as fit_model
from reelsim.similarity.fitting import hard_negatives_for as hard_negatives_for
from reelsim.similarity.fitting import training_pairs as training_pairs
from reelsim.similarity.fusion import DECIMALS
from reelsim.similarity.search import Scored, neighbors_of
from reelsim.similarity.towers import TowerModel, content_vectors
from reelsim.storage.atomic import atomic_path, write_text_atomic
from reelsim.storage.interactions import Interactions, read_interactions
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import Neighbor, NeighborLists, read_lists, write_lists

SPACES = ("content", "learned", "blend")
#: query rows per block of the exact search (a block holds 2 x BLOCK x N float32 scores)
BLOCK = 512


# ---------------------------------------------------------------------------- storage


def model_dir(store: str | Path) -> Path:
    return StoreLayout(store).learned_dir


def has_model(store: str | Path) -> bool:
    return (model_dir(store) / "provenance.json").is_file()


def save_model(store: str | Path, model: LearnedModel, cfg: LearnConfig, log: Interactions) -> Path:
    """Write ``STORE/learned/{tower.npz, elsa.npz, provenance.json}`` atomically (provenance last).

    Provenance: ``config`` (the LearnConfig), ``config_hash``, ``interactions``
    (path, sha256, rows read and used, unknown items), ``metrics``,
    ``code_version``, ``created_utc``, ``catalog_items``.
    """
    folder = model_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    t = model.tower
    arrays = {f"state/{k}": v for k, v in t.state.items()}
    arrays.update({f"projection/{m}": p for m, p in t.projections.items()})
    meta = {"in_dims": t.in_dims, "hidden": t.hidden, "out_dim": t.out_dim, "history": t.history}
    with atomic_path(folder / "tower.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    with atomic_path(folder / "elsa.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array(model.ids, dtype=object).astype(str), elsa=model.elsa, counts=model.counts,
                 **model.arrays())  # issue 21: EASE's weights, and the ridge maps from content
    prov = {
        "config": dataclasses.asdict(cfg), "config_hash": cfg.training_hash(),
        "interactions": {"path": str(Path(log.path).resolve()), "sha256": log.sha256, "rows_read": log.rows_read,
                         "rows_used": int(model.provenance.get("metrics", {}).get("log_rows", log.n)),
                         "unknown_rows": log.unknown_rows, "unknown_items": log.unknown_item_count},
        "metrics": model.provenance.get("metrics", {}), "chosen": model.chosen, "code_version": __version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "catalog_items": len(model.ids),
    }
    model.provenance = prov
    write_text_atomic(folder / "provenance.json", json.dumps(prov, indent=1, ensure_ascii=False))
    return folder


def load_model(store: str | Path) -> LearnedModel:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    StoreError
        No trained model in the store.
    """
    folder = model_dir(store)
    if not has_model(store):
        raise StoreError(f"no trained model in {store}: run `reelsim train --interactions FILE --store {store}` first")
    prov = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
    with np.load(folder / "tower.npz") as z:
        meta = json.loads(str(z["meta"]))
        state = {k[6:]: z[k] for k in z.files if k.startswith("state/")}
        proj = {k[11:]: z[k] for k in z.files if k.startswith("projection/")}
    with np.load(folder / "elsa.npz") as z:
        ids, elsa, counts = [str(i) for i in z["ids"]], z["elsa"], z["counts"]
        extra = {k: z[k] for k in ("ease_cols", "ease_vals", "ease_rows", "ease_to_row", "ease_to_col", "elsa_ridge")
                 if k in z.files and z[k].size}  # issue 21 (absent in older models)
    tower = TowerModel(meta["in_dims"], proj, state, meta["hidden"], meta["out_dim"], meta["history"])
    return LearnedModel(tower, elsa, counts, ids, prov, **extra)


# ---------------------------------------------------------------------------- vectors and search


@dataclass
class SpaceVectors:
    """What scores items in one space, for the N catalog items.

    space : ``content``, ``learned``, ``blend`` (or a name of a plain cosine space, for evaluation).
    T : float32 (N, t), tower vectors (or any vectors of a plain cosine space), unit rows; zero rows for
        items without one.
    Z : float32 (N, z), similarity vectors (``s(a, b) = Z_a · Z_b``: the tower with its content skip
        connection); default ``T``.
    counts : int64 (N,), users of each item in training (0: cold, or added after training).
    rules : the score rules (:class:`reelsim.similarity.calibrate.Rule`); ``rule_of`` int8 (N,) which
        one a query row uses. None: the plain inner product of ``Z``.
    warm : the warm model over the N rows (blend), or None.
    E, alpha : ELSA vectors and shares of a blend model trained before the rules existed.
    cat, weights : the normalised catalog and modality weights (content only).
    """

    space: str
    T: np.ndarray | None = None
    E: np.ndarray | None = None
    alpha: np.ndarray | None = None
    cat: CatalogEmbeddings | None = None
    weights: dict | None = None
    Z: np.ndarray | None = None
    counts: np.ndarray | None = None
    rules: list[Rule] | None = None
    rule_of: np.ndarray | None = None
    warm: WarmModel | None = None

    def has(self) -> np.ndarray:
        """bool (N,): items this space can score."""
        if self.space == "content":
            return np.any(np.stack([self.cat.masks[m] for m in self._active()]), axis=0)
        return np.any((self.T if self.Z is None else self.Z) != 0, axis=1)

    def _active(self) -> list[str]:
        return [m for m in self.cat.vectors if self.weights.get(m, 0) > 0]

    def scores(self, q: np.ndarray, cols: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Scores float32 (B, C) of query rows ``q`` against catalog rows ``cols`` (-inf: nothing shared)."""
        if self.space == "content":  # the fusion rule: weighted mean of cosines over shared modalities
            num = den = 0.0
            for m in self._active():
                both = self.cat.masks[m][q][:, None] & self.cat.masks[m][cols][None, :]
                num = num + self.weights[m] * np.where(both, self.cat.vectors[m][q] @ self.cat.vectors[m][cols].T, 0)
                den = den + self.weights[m] * both
            return np.divide(num, den, out=np.full(np.shape(num), -np.inf, np.float32), where=den > 0)
        Z = self.T if self.Z is None else self.Z
        S = Z[q] @ Z[cols].T
        if self.rules is not None:  # the calibrated score (reelsim.similarity.calibrate)
            out = np.empty_like(S)
            which = self.rule_of[q]
            counts = self.counts[cols]
            for i, rule in enumerate(self.rules):
                m = which == i
                if m.any():
                    W = self.warm.block(q[m], cols) if rule.warm and self.warm is not None else None
                    out[m] = rule.apply(S[m], W, counts)
            return out
        if self.space == "blend" and self.alpha is not None:  # a model trained before the rules existed
            a = self.alpha[q][:, None].astype(np.float32)
            S = (1 - a) * S + a * (self.E[q] @ self.E[cols].T)
        return S


def content_space(cat: CatalogEmbeddings, weights) -> SpaceVectors:
    """The content space of a normalised catalog with modality ``weights`` (the fusion score)."""
    return SpaceVectors("content", cat=cat, weights=check_weights(weights))


def model_rows(cat: CatalogEmbeddings, model: LearnedModel) -> np.ndarray:
    """int64 (N,): each catalog row's row in the model (-1: added after training)."""
    row = {i: r for r, i in enumerate(model.ids)}
    return np.array([row.get(i, -1) for i in cat.ids], np.int64)


def space_vectors(cat: CatalogEmbeddings, model: LearnedModel, space: str, cfg: LearnConfig | None = None,
                  *, device: str = "cpu") -> SpaceVectors:
    """(a) What scores ``learned`` or ``blend`` space for every item of ``cat``.

    Items added to the catalog after training get tower vectors from their
    content, no warm row and the cold items' prior (they are cold).
    ``learned`` scores every query by the rule ``learned``; ``blend`` by
    ``blend_warm`` for items with a warm row and ``blend_cold`` for the others
    (:mod:`reelsim.similarity.calibrate`).
    """
    if space not in ("learned", "blend"):
        raise UsageError(f"space must be learned or blend here, got {space!r} (content uses the fusion index)")
    T = model.tower.embed(cat.vectors, cat.masks, device=device)
    src = model_rows(cat, model)
    ok = src >= 0
    chosen = model.chosen
    if not chosen.get("rules"):  # a model trained before the rules: the tower, and the old blend
        return _legacy_space(T, model, space, src, cfg)
    counts = np.zeros(cat.n, np.int64)
    counts[ok] = model.counts[src[ok]]
    gamma = float(chosen.get("content_mix", 0.0))
    X = content_vectors(cat.vectors, cat.masks, model.tower, chosen.get("content_weights", {}))
    Z = mixed(T, X, gamma)
    rules = {name: Rule(**r) for name, r in chosen["rules"].items()}
    if space == "learned":
        return SpaceVectors(space, T, Z=Z, counts=counts, rules=[rules["learned"]], rule_of=np.zeros(cat.n, np.int8))
    warm = model.warm()
    if warm.kind == "none":
        return SpaceVectors(space, T, Z=Z, counts=counts, rules=[rules["blend_cold"]],
                            rule_of=np.zeros(cat.n, np.int8))
    warm = warm.remap(src, cat.n, X)
    return SpaceVectors(space, T, Z=Z, counts=counts, rules=[rules["blend_cold"], rules["blend_warm"]],
                        rule_of=warm.has().astype(np.int8), warm=warm)


def _legacy_space(T: np.ndarray, model: LearnedModel, space: str, src: np.ndarray,
                  cfg: LearnConfig | None) -> SpaceVectors:
    """A model saved before issue 21: ``learned`` is the tower's cosine, ``blend`` the old ELSA/tower mix."""
    if space == "learned":
        return SpaceVectors(space, T)
    shrink = (cfg or _model_cfg(model)).blend_shrink
    ok = src >= 0
    has = np.any(model.elsa != 0, axis=1)
    share = np.where(has, model.counts / (model.counts + shrink), 0.0)
    E = np.zeros((src.size, model.elsa.shape[1]), np.float32)
    alpha = np.zeros(src.size)
    E[ok], alpha[ok] = model.elsa[src[ok]], share[src[ok]]
    return SpaceVectors(space, T, E, alpha)


def _model_cfg(model: LearnedModel) -> LearnConfig:
    names = {f.name for f in dataclasses.fields(LearnConfig)}
    c = {k: tuple(v) if isinstance(v, list) else v for k, v in model.provenance.get("config", {}).items() if k in names}
    return LearnConfig(**c) if c else LearnConfig()


def space_knn(sv: SpaceVectors, rows: np.ndarray, k: int, id_rank: np.ndarray, *,
              candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``rows`` in a space, the query itself excluded.

    Parameters
    ----------
    rows : int64 (B,)
    id_rank : int64 (N,), each row's rank in id order (ties are broken by id).
    candidates : bool (N,), optional
        Rows that may be returned (default: every item that has a vector).

    Returns
    -------
    I : int64 (B, k), -1 padding
    S : float64 (B, k), rounded to :data:`DECIMALS`, -inf padding
    """
    has = sv.has()
    n = has.size
    allowed = has if candidates is None else candidates & has
    I_out = np.full((rows.size, k), -1, np.int64)
    S_out = np.full((rows.size, k), -np.inf)
    kk = min(k + 8, n)  # a few spare columns so that the id tie-break at the k-th place is exact
    for i0 in range(0, rows.size, BLOCK):
        q = rows[i0:i0 + BLOCK]
        S = np.round(sv.scores(q).astype(np.float64), DECIMALS)
        S[:, ~allowed] = -np.inf
        S[np.arange(q.size), q] = -np.inf
        S[~has[q]] = -np.inf
        P = np.argpartition(-S, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (q.size, 1))
        Sp = np.take_along_axis(S, P, axis=1)
        order = np.lexsort((id_rank[P], -Sp), axis=-1)[:, :k]
        I = np.take_along_axis(P, order, axis=1)
        Sk = np.take_along_axis(Sp, order, axis=1)
        ok = np.isfinite(Sk)
        I_out[i0:i0 + q.size, :I.shape[1]] = np.where(ok, I, -1)
        S_out[i0:i0 + q.size, :I.shape[1]] = np.where(ok, Sk, -np.inf)
    return I_out, S_out


def content_cosines(cat: CatalogEmbeddings, rows: np.ndarray, I: np.ndarray) -> dict[str, np.ndarray]:
    """Per-modality content cosines float64 (B, k) of rows vs their neighbours ``I``; NaN where not shared."""
    out = {m: np.full(I.shape, np.nan) for m in cat.vectors}
    step = max(1, 2**24 // max(1, I.shape[1] * max(v.shape[1] for v in cat.vectors.values())))  # ~64 MB gathered
    for i0 in range(0, rows.size, step):
        r, Ib = rows[i0:i0 + step], I[i0:i0 + step]
        ok = Ib >= 0
        J = np.where(ok, Ib, 0)
        for m, v in cat.vectors.items():
            shared = ok & cat.masks[m][r][:, None] & cat.masks[m][J]
            c = np.einsum("bd,bkd->bk", v[r], v[J]).astype(np.float64)
            out[m][i0:i0 + step] = np.where(shared, np.round(c, DECIMALS), np.nan)
    return out


def id_rank(ids: list[str]) -> np.ndarray:
    """int64 (N,): each row's position in id order (for id tie-breaks)."""
    r = np.empty(len(ids), np.int64)
    r[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    return r


def space_lists(cat: CatalogEmbeddings, sv: SpaceVectors, k: int, rows: np.ndarray | None = None) -> NeighborLists:
    """Top-k lists of ``rows`` (default all) in a space, with content cosines; floor = the k-th score."""
    rows = np.arange(cat.n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    I, S = space_knn(sv, rows, k, id_rank(cat.ids))
    floor = np.where(I[:, -1] >= 0, S[:, -1], -np.inf) if k else np.full(rows.size, -np.inf)
    return NeighborLists(rows, I, S, content_cosines(cat, rows, I), floor)


def _catalog(store: Path) -> CatalogEmbeddings:
    return load_catalog(StoreLayout(store).require_catalog())[0]


def lists_dir(store: str | Path, space: str) -> Path:
    return StoreLayout(store).space_lists_dir(space)


def write_space_lists(store: str | Path, space: str, k: int, formats: list[str], *,
                      device: str = "cpu") -> dict:
    """(b) Write every item's top-k in ``learned`` or ``blend`` space to ``STORE/lists/<space>/``."""
    import time

    t0 = time.perf_counter()
    cat = _catalog(store)
    model = load_model(store)
    sv = space_vectors(cat, model, space, device=device)
    lists = space_lists(cat, sv, k)
    folder = lists_dir(store, space)
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_lists(cat.ids, lists, folder, formats)
    _save_floor(folder, cat.ids, lists.floor, k)
    return {"space": space, "items": cat.n, "k": k, "rows": int((lists.I >= 0).sum()),
            "files": sorted(paths.values()), "seconds": round(time.perf_counter() - t0, 3)}


def _save_floor(folder: Path, ids: list[str], floor: np.ndarray, k: int) -> None:
    with atomic_path(folder / "state.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, floor=floor, k=np.array(k), n=np.array(len(ids)))


def space_neighbors(store: str | Path, item: str, k: int, space: str, *, device: str = "cpu") -> list[Neighbor]:
    """(c) Neighbours of one item in ``learned`` or ``blend`` space (computed live, exact)."""
    cat = _catalog(store)
    if item not in set(cat.ids):
        raise UnknownItemError(f"unknown item id {item!r}: not in this store's index")
    sv = space_vectors(cat, load_model(store), space, device=device)
    row = np.array([cat.ids.index(item)], np.int64)
    lists = space_lists(cat, sv, k, row)
    return neighbors_of(cat.ids, Scored(lists.I, lists.S, lists.cos))[0]


def add_to_space(store: str | Path, space: str, formats: list[str], *, k: int = 10, device: str = "cpu") -> dict:
    """(d) After new items joined the catalog (``reelsim add``): update the lists of a space.

    The new items are the catalog rows after those the space's lists were made for.
    The new items get tower vectors from their content at once (and no ELSA
    vector: they are cold). Their own lists are computed, and so are the lists
    of existing items that a new item enters (its score reaches that item's
    stored k-th score); all other lists are kept. Without lists of this space
    in the store, every list is written.
    """
    folder = lists_dir(store, space)
    state = folder / "state.npz"
    cat = _catalog(store)
    if not (state.is_file() and (folder / "neighbors.parquet").is_file()):
        return write_space_lists(store, space, k, formats, device=device) | {"updated_lists": cat.n}
    with np.load(state) as z:
        floor_old, k, n_old = z["floor"], int(z["k"]), int(z["n"])
    new_rows = np.arange(n_old, cat.n, dtype=np.int64)
    if new_rows.size == 0:
        return {"space": space, "added": 0, "updated_lists": 0}
    sv = space_vectors(cat, load_model(store), space, device=device)
    # existing rows whose list a new item enters
    hit = np.zeros(n_old, bool)
    for i0 in range(0, n_old, 8192):
        r = np.arange(i0, min(n_old, i0 + 8192))
        S = np.round(sv.scores(r, new_rows).astype(np.float64), DECIMALS)
        hit[r] = np.any(S >= floor_old[r][:, None], axis=1) & sv.has()[r]
    rows = np.concatenate([new_rows, np.flatnonzero(hit)])
    part = space_lists(cat, sv, k, rows)
    old = read_lists(folder / "neighbors.parquet", cat.ids, k, list(cat.vectors))
    old.floor = np.concatenate([floor_old, np.full(cat.n - n_old, -np.inf)])
    for name in ("I", "S", "floor"):
        getattr(old, name)[rows] = getattr(part, name)
    for m in old.cos:
        old.cos[m][rows] = part.cos[m]
    write_lists(cat.ids, old, folder, formats)
    _save_floor(folder, cat.ids, old.floor, k)
    return {"space": space, "added": int(new_rows.size), "updated_lists": int(hit.sum()), "items": cat.n}



def train_store(store: str | Path, interactions: str | Path, cfg: LearnConfig, *,
                progress: Callable[[str], None] | None = None) -> dict:
    """``reelsim train``: read the log against the store's catalog, fit, save; returns a summary.

    The summary (``train --json``) has the fields of :func:`train_summary`. Nothing is saved when
    training fails (:class:`~reelsim.errors.TrainingError`): the stored model stays.
    """
    cat, weights = load_catalog(StoreLayout(store).require_catalog())
    log = read_interactions(interactions, known_items=cat.ids)
    if progress:
        progress(log.describe())
    model = fit_model(cat, log, cfg, progress=progress, weights=weights)
    folder = save_model(store, model, cfg, log)
    return {"model": str(folder), "config_hash": model.provenance["config_hash"],
            "interactions_sha256": log.sha256, "rows": log.n, "unknown_rows": log.unknown_rows,
            "unknown_items": log.unknown_item_count} | train_summary(model)


def train_summary(model: LearnedModel) -> dict:
    """What training learned and chose, for ``train --json``.

    ``tower_loss`` is the loss of the epoch whose weights were kept (early stopping), ``elsa_loss``
    ELSA's last loss ([] with EASE); ``chosen`` every setting chosen on validation, ``validation``
    their validation recall@10.
    """
    m = model.provenance["metrics"]
    ch = model.chosen
    kept = m["tower"].get("kept") or {}
    return {"warm_items": m["warm_items"], "pairs": m["tower"]["pairs"], "quality_pairs": m["tower"]["quality_pairs"],
            "elsa_loss": m["elsa_loss"][-1:] and m["elsa_loss"][-1],
            "tower_loss": kept.get("loss", (m["tower"]["step2_loss"] or m["tower"]["step1_loss"])[-1]),
            "elsa_s": m["elsa_s"], "tower_s": m["tower_s"], "select_s": m.get("select_s"), "train_s": m.get("train_s"),
            "warm_model": ch.get("warm_model"), "warm_model_reason": ch.get("warm", {}).get("reason"),
            "ease_lambda": ch.get("ease_lambda"), "elsa_dim": ch.get("elsa_dim"), "elsa_epochs": ch.get("elsa_epochs"),
            "tower_kept": kept, "content_mix": ch.get("content_mix"), "rules": ch.get("rules"),
            "validation": ch.get("rules_validation")}
