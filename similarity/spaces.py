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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelsim._version import __version__
from reelsim.config import Config, FusionConfig, LearnConfig, check_weights
from reelsim.errors import DamagedStoreError, StoreError, UnknownItemError, UsageError
from reelsim.reporting import Progress, report
from reelsim.similarity.calibrate import Rule
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog
from reelsim.similarity.fitting import HARD_NEGATIVE_ANCHORS as HARD_NEGATIVE_ANCHORS
from reelsim.similarity.fitting import LearnedModel as LearnedModel
from reelsim.similarity.fitting import WarmModel, mixed
from reelsim.similarity.fitting import fit_model as fit_model
from reelsim.similarity.fitting import hard_negatives_for as hard_negatives_for
from reelsim.similarity.fitting import training_pairs as training_pairs
from reelsim.similarity.fusion import DECIMALS
from reelsim.similarity.hygiene import Hygiene, select_by
from reelsim.similarity.rebuild import (
    blocked_rows_of,
    blocklist_record,
    hygiene_record,
    list_formats,
    made_with_blocklist,
    new_stamp,
    space_set,
    store_blocked,
    with_store_blocklist,
)
from reelsim.similarity.search import Scored, neighbors_of
from reelsim.similarity.towers import TowerModel, content_vectors
from reelsim.storage.atomic import atomic_path, check_store_file, read_checked, write_text_atomic
from reelsim.storage.interactions import Interactions, read_interactions
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import Neighbor, NeighborLists, remove_other_formats, write_lists
from reelsim.storage.listset import ListSet, write_list_set
from reelsim.storage.session import writing

SPACES = ("content", "learned", "blend")
#: query rows per block of the exact search (a block holds 2 x BLOCK x N float32 scores)
BLOCK = 512


# ---------------------------------------------------------------------------- storage


def model_dir(store: str | Path) -> Path:
    return StoreLayout(store).learned_dir


#: the files of a trained model in ``STORE/learned/``, committed as one set (provenance names the others' hashes)
MODEL_FILES = ("tower.npz", "elsa.npz")


def has_model(store: str | Path) -> bool:
    return (model_dir(store) / "provenance.json").is_file()


def save_model(store: str | Path, model: LearnedModel, cfg: LearnConfig, log: Interactions) -> Path:
    """Write ``STORE/learned/{tower.npz, elsa.npz, provenance.json}`` as one set; note the model for the commit.

    Inside a write session (``reelsim train``) the three files are staged and
    moved together at the commit; ``provenance.json`` names the sha256 and
    size of the other two and the model's ``stamp``, so a set that is not
    one write's is found (:func:`load_model`, ``reelsim verify``).

    Provenance: ``stamp``, ``files`` (name -> sha256, bytes), ``config`` (the
    LearnConfig), ``config_hash``, ``interactions`` (path, sha256, rows read
    and used, unknown items), ``metrics``, ``code_version``, ``created_utc``,
    ``catalog_items``.
    """
    with writing(store, "train") as session:
        folder = model_dir(store)
        folder.mkdir(parents=True, exist_ok=True)
        t = model.tower
        arrays = {f"state/{k}": v for k, v in t.state.items()}
        arrays.update({f"projection/{m}": p for m, p in t.projections.items()})
        meta = {"in_dims": t.in_dims, "hidden": t.hidden, "out_dim": t.out_dim, "history": t.history}
        files = {}
        with atomic_path(folder / "tower.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            files["tower.npz"] = file_digest(tmp)
        with atomic_path(folder / "elsa.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, ids=np.array(model.ids, dtype=object).astype(str), elsa=model.elsa, counts=model.counts,
                         **model.arrays())  # issue 21: EASE's weights, and the ridge maps from content
            files["elsa.npz"] = file_digest(tmp)
        stamp = new_stamp()
        prov = {
            "stamp": stamp, "files": files,
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
        session.note({"model": {"stamp": stamp, "items": len(model.ids), "created_utc": prov["created_utc"]}})
    return folder


def file_digest(path: str | Path) -> dict:
    """``{"sha256", "bytes"}`` of a file (read in 1 MiB blocks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"sha256": h.hexdigest(), "bytes": Path(path).stat().st_size}


def read_provenance(store: str | Path) -> dict:
    """``STORE/learned/provenance.json``.

    Raises
    ------
    StoreError
        No trained model; :class:`DamagedStoreError` (``reelsim train`` rewrites it) when it cannot be read.
    """
    path = model_dir(store) / "provenance.json"
    for name in ("provenance.json", *MODEL_FILES):
        check_store_file(model_dir(store) / name, "train")
    if not has_model(store):
        raise StoreError(f"no trained model in {store}: run `reelsim train --interactions FILE --store {store}` first")
    prov = read_checked(path, lambda p: json.loads(Path(p).read_text(encoding="utf-8")), "a model's provenance",
                        redo="train")
    if not isinstance(prov, dict) or not isinstance(prov.get("config", {}), dict):
        raise DamagedStoreError(path, "not a model's provenance", "train")
    return prov


def check_model_files(store: str | Path, prov: dict) -> None:
    """Check that the model files are the ones ``prov`` names (sha256 and size).

    Raises
    ------
    DamagedStoreError
        A file of another write, truncated or replaced (names it; ``reelsim train`` rewrites the model).
    """
    for name, want in (prov.get("files") or {}).items():
        path = model_dir(store) / name
        if not path.is_file():
            raise DamagedStoreError(path, "is missing from the model", "train")
        if file_digest(path) != want:
            raise DamagedStoreError(path, "is not the file its provenance.json names (another write's, or "
                                    "damaged)", "train")


def load_model(store: str | Path) -> LearnedModel:
    """Read a model written by :func:`save_model` (its files checked against its provenance).

    Raises
    ------
    StoreError
        No trained model in the store; :class:`DamagedStoreError` naming a file that cannot be read or is
        not the one its provenance names (``reelsim train`` rewrites the model).
    """
    folder = model_dir(store)
    prov = read_provenance(store)
    check_model_files(store, prov)

    def tower_npz(path):
        with np.load(path) as z:
            return (json.loads(str(z["meta"])), {k[6:]: z[k] for k in z.files if k.startswith("state/")},
                    {k[11:]: z[k] for k in z.files if k.startswith("projection/")})

    def elsa_npz(path):
        with np.load(path) as z:
            extra = {k: z[k] for k in ("ease_cols", "ease_vals", "ease_rows", "ease_to_row", "ease_to_col",
                                       "elsa_ridge") if k in z.files and z[k].size}  # issue 21 (absent in older models)
            return [str(i) for i in z["ids"]], z["elsa"], z["counts"], extra

    errors = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
    meta, state, proj = read_checked(folder / "tower.npz", tower_npz, "a tower model", errors, redo="train")
    ids, elsa, counts, extra = read_checked(folder / "elsa.npz", elsa_npz, "ELSA embeddings", errors, redo="train")
    try:
        tower = TowerModel(meta["in_dims"], proj, state, meta["hidden"], meta["out_dim"], meta["history"])
    except (KeyError, TypeError) as e:
        raise DamagedStoreError(folder / "tower.npz", f"not a tower model ({e})", "train") from None
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
    check_space(space)
    check_model_fits(model, cat)
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


def check_model_fits(model: LearnedModel, cat: CatalogEmbeddings) -> None:
    """:class:`StoreError` when the catalog's vectors are not what the model was trained on.

    Each tower modality the catalog has must have the size the tower takes
    (its fixed input projection's rows, else its input size); a catalog
    rebuilt since training with another ``--pca``, or other models, differs.
    """
    for m, d in model.tower.in_dims.items():
        want = model.tower.projections[m].shape[0] if m in model.tower.projections else d
        if m in cat.vectors and cat.vectors[m].shape[1] != want:
            raise StoreError(f"the trained model (learned/tower.npz, trained on {len(model.ids)} items) takes {m} "
                             f"vectors of {want} dimensions, the catalog now has {cat.vectors[m].shape[1]} (rebuilt "
                             "since training, e.g. with another --pca or model): re-train with `reelsim train "
                             "--interactions FILE --store STORE`")


def check_store_model(store: str | Path) -> None:
    """Before work that ends in a learned space (``reelsim add --space``): the store's model fits its catalog
    (:func:`check_model_fits`; :class:`StoreError` when there is no model)."""
    check_model_fits(load_model(store), _catalog(Path(store)))


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
    k = min(k, max(1, n))  # a larger k allocates nothing more
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


def space_pair_scores(sv: SpaceVectors, I: np.ndarray) -> np.ndarray:
    """Scores in the space between the candidates of each pool: float64 (B, C, C), -inf where a slot is empty.

    ``I`` int64 (B, C) catalog rows, -1 for none. Entry [b, i, j] is the
    space's score of candidate i (as a query) against candidate j.
    """
    B, C = I.shape
    out = np.full((B, C, C), -np.inf)
    for b in range(B):
        ok = I[b] >= 0
        r = I[b][ok]
        if r.size:
            out[b][np.ix_(ok, ok)] = np.round(sv.scores(r, r).astype(np.float64), DECIMALS)
    return out


def space_lists(cat: CatalogEmbeddings, sv: SpaceVectors, k: int, rows: np.ndarray | None = None, *,
                hygiene: Hygiene = Hygiene(), blocked: np.ndarray | None = None, oversample: int = 5) -> NeighborLists:
    """Top-k lists of ``rows`` (default all) in a space, with content cosines and the lists job's hygiene.

    ``blocked`` bool (N,): rows never listed (the blocklist). With dedup or
    MMR, each row's pool is its ``oversample * k`` best candidates and the
    hygiene works in the space's own score (:func:`space_pair_scores`);
    ``floor`` is then the pool's last score, else the k-th score.
    """
    rows = np.arange(cat.n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    pool = min(k * oversample, cat.n) if hygiene.on else k
    I, S = space_knn(sv, rows, pool, id_rank(cat.ids), candidates=None if blocked is None else ~blocked)
    floor = np.where(I[:, -1] >= 0, S[:, -1], -np.inf) if pool else np.full(rows.size, -np.inf)
    if hygiene.on:
        picked = select_by(Scored(I, S, {}), k, space_pair_scores(sv, I), hygiene)
        I, S = picked.I, picked.S
    return NeighborLists(rows, I, S, content_cosines(cat, rows, I), floor)


def _catalog(store: Path) -> CatalogEmbeddings:
    return load_catalog(StoreLayout(store).require_catalog())[0]


def check_space(space: str) -> None:
    if space not in ("learned", "blend"):
        raise UsageError(f"space must be learned or blend here, got {space!r} (content uses the fusion index)")


def write_space_lists(store: str | Path, space: str, fusion: FusionConfig, *, device: str = "cpu",
                      text_model: str | None = None) -> dict:
    """(b) Write every item's top-k in ``learned`` or ``blend`` space, with the lists' hygiene, as one store version.

    ``fusion`` gives ``k``, ``oversample``, ``dedup``, ``mmr``, the blocklist
    (None: the store's) and the list formats; its modality weights and
    index settings do not apply to a learned space (the CLI refuses them).
    Files: ``STORE/lists/<space>/neighbors.*`` and the space's list set.
    """
    import time

    check_space(space)
    t0 = time.perf_counter()
    layout = StoreLayout(store)
    with writing(layout.root, f"lists --space {space}") as session:
        cat = _catalog(layout.root)
        model = load_model(layout.root)
        sv = space_vectors(cat, model, space, device=device)
        fusion = with_store_blocklist(fusion, layout)
        blocked = store_blocked(layout, cat.ids, fusion, text_model)
        lists = space_lists(cat, sv, fusion.k, hygiene=Hygiene(fusion.dedup, fusion.mmr), blocked=blocked,
                            oversample=fusion.oversample)
        paths = _publish_space(session, layout, space, cat.ids, lists, fusion, blocked)
    return {"space": space, "items": cat.n, "k": fusion.k, "rows": int((lists.I >= 0).sum()),
            "blocked": int(blocked.sum()) if blocked is not None else 0,
            "files": sorted(paths.values()), "seconds": round(time.perf_counter() - t0, 3)}


def _publish_space(session, layout: StoreLayout, space: str, ids: list[str], lists: NeighborLists,
                   fusion: FusionConfig, blocked: np.ndarray | None, previous: ListSet | None = None) -> dict:
    """Stage the list files of a space and write its list set; note both for the commit. Paths written."""
    folder = layout.space_lists_dir(space)
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_lists(ids, lists, folder, list_formats(fusion))
    remove_other_formats(folder, list_formats(fusion))
    name, set_folder = session.new_set_dir(space)
    write_list_set(set_folder, ids, lists, space=space, catalog_stamp=session.stamp_of("catalog"),
                   model_stamp=session.stamp_of("model"), hygiene=hygiene_record(fusion),
                   settings={"k": fusion.k, "oversample": fusion.oversample, "formats": list_formats(fusion)},
                   blocked=blocked, previous=previous)
    session.note({"lists": {space: name}, "blocklist": blocklist_record(fusion)})
    return paths


def space_neighbors(store: str | Path, item: str, k: int, space: str, *, hygiene: Hygiene = Hygiene(),
                    blocked: np.ndarray | None = None, oversample: int = 5, device: str = "cpu") -> list[Neighbor]:
    """(c) Neighbours of one item in ``learned`` or ``blend`` space, computed live (exact), with ``hygiene``
    and ``blocked`` rows (bool (N,) over the catalog) applied as the lists job applies them."""
    cat = _catalog(store)
    row = item_row(cat, item)
    sv = space_vectors(cat, load_model(store), space, device=device)
    return neighbors_at(cat, sv, row, k, hygiene=hygiene, blocked=blocked, oversample=oversample)


def item_row(cat: CatalogEmbeddings, item: str) -> np.ndarray:
    """int64 (1,): ``item``'s catalog row (:class:`UnknownItemError` when it is not in the catalog)."""
    try:
        return np.array([cat.ids.index(item)], np.int64)
    except ValueError:
        raise UnknownItemError(f"unknown item id {item!r}: not in this store's index") from None


def neighbors_at(cat: CatalogEmbeddings, sv: SpaceVectors, row: np.ndarray, k: int, *, hygiene: Hygiene,
                 blocked: np.ndarray | None, oversample: int) -> list[Neighbor]:
    """:func:`space_neighbors` over a loaded catalog ``cat`` and its vectors ``sv`` (:func:`space_vectors`),
    for the catalog row ``row`` (:func:`item_row`): what a reader that keeps them per store version calls."""
    lists = space_lists(cat, sv, min(k, cat.n), row, hygiene=hygiene, blocked=blocked, oversample=oversample)
    return neighbors_of(cat.ids, Scored(lists.I, lists.S, lists.cos))[0]


def add_to_space(store: str | Path, space: str, fusion: FusionConfig | None = None, *, device: str = "cpu",
                 text_model: str | None = None) -> dict:
    """(d) After new items joined the catalog (``reelsim add``): update the lists of a space, as one version.

    The space's list set (its ids) says which items it lists. When those
    ids are the catalog's first rows (nothing was dropped or reordered since),
    the new items get tower vectors from their content at once (and no ELSA
    vector: they are cold), their own lists are computed, and so are the
    lists of existing items that a new item enters (its score reaches that
    item's floor), with the set's k and hygiene; all other lists are kept.
    Otherwise (no lists of this space yet, a catalog rebuilt by ``run``, a
    new model, another blocklist) every list is written again.
    """
    check_space(space)
    layout = StoreLayout(store)
    with writing(layout.root, f"add --space {space}") as session:
        cat = _catalog(layout.root)
        old_set = space_set(layout, space, session.version)
        why = _why_rewrite(old_set, cat.ids, session, fusion)
        if why:
            base = fusion or Config().fusion
            if old_set is not None:  # keep the space's own list settings
                base = as_set_made(old_set, base)
            out = write_space_lists(layout.root, space, base, device=device, text_model=text_model)
            return out | {"added": cat.n - (old_set.n if old_set is not None and why == "new items" else 0),
                          "updated_lists": cat.n, "rewritten": why}
        return _add_to_set(session, layout, space, cat, old_set, fusion, device, text_model)


def as_set_made(ls: ListSet, fusion: FusionConfig) -> FusionConfig:
    """``fusion`` with the list settings ``ls`` was made with (k, oversample, dedup, MMR, formats)."""
    h = ls.manifest.get("hygiene", {})
    formats = ls.manifest.get("settings", {}).get("formats")
    return dataclasses.replace(fusion, k=ls.k, dedup=h.get("dedup"), mmr=h.get("mmr"),
                               oversample=int(h.get("oversample", fusion.oversample)),
                               lists_formats=tuple(formats) if formats else fusion.lists_formats)


def relist_stale_spaces(store: str | Path, *, device: str = "cpu", text_model: str | None = None) -> dict:
    """Write again the lists of every learned space that another blocklist made; {space: summary}.

    Called after a lists job (``run``, ``lists``) in its write session: when
    it changed the store's blocklist, no list of any space may keep an item
    the store now blocks. Each space keeps its own k, dedup and MMR.
    """
    layout = StoreLayout(store)
    out = {}
    with writing(layout.root, "lists") as session:
        rec = session.current("blocklist") or {}
        phrases, threshold = list(rec.get("phrases", ())), rec.get("threshold")
        names = session.list_sets()
        for space in ("learned", "blend"):
            if space not in names or not has_model(layout.root):
                continue
            ls = ListSet.open(layout.list_set(names[space]))
            if made_with_blocklist(ls, phrases, threshold):
                continue
            out[space] = write_space_lists(layout.root, space, as_set_made(ls, Config().fusion), device=device,
                                           text_model=text_model)
    return out


def _why_rewrite(old_set: ListSet | None, ids: list[str], session, fusion: FusionConfig | None) -> str | None:
    """Why a space's lists must be written again rather than extended (None: they can be extended)."""
    if old_set is None:
        return "no lists of this space yet"
    if old_set.manifest.get("model_stamp") != session.stamp_of("model"):
        return "the model changed since"
    if old_set.n > len(ids) or old_set.ids() != ids[:old_set.n]:
        return "the catalog was rebuilt since (items dropped or reordered)"
    stored = (session.current("blocklist") or {}).get("phrases", [])
    if old_set.manifest["hygiene"].get("blocklist", []) != list(stored):
        return "the blocklist changed since"
    if fusion is not None and fusion.blocklist is not None and list(fusion.blocklist) != list(stored):
        return "another blocklist was asked for"
    return None


def _add_to_set(session, layout: StoreLayout, space: str, cat: CatalogEmbeddings, old_set: ListSet,
                fusion: FusionConfig | None, device: str, text_model: str) -> dict:
    n_old, k = old_set.n, old_set.k
    rec = session.current("blocklist") or {}
    lists_fusion = dataclasses.replace(as_set_made(old_set, fusion or Config().fusion),
                                       blocklist=tuple(rec.get("phrases", ())),
                                       blocklist_threshold=float(rec.get("threshold", 0.5)))
    new_rows = np.arange(n_old, cat.n, dtype=np.int64)
    if new_rows.size == 0:
        return {"space": space, "added": 0, "updated_lists": 0, "items": cat.n}
    new_blocked = blocked_rows_of(layout.root, cat.ids[n_old:], lists_fusion, text_model)
    blocked = np.concatenate([np.array(old_set.blocked),
                              np.zeros(new_rows.size, bool) if new_blocked is None else new_blocked])
    sv = space_vectors(cat, load_model(layout.root), space, device=device)
    floor_old = np.array(old_set.floor)
    has = sv.has()
    entering = new_rows[~blocked[n_old:]]
    hit = np.zeros(n_old, bool)  # existing rows whose list a new item enters
    for i0 in range(0, n_old, 8192):
        r = np.arange(i0, min(n_old, i0 + 8192))
        if entering.size:
            S = np.round(sv.scores(r, entering).astype(np.float64), DECIMALS)
            hit[r] = np.any(S >= floor_old[r][:, None], axis=1) & has[r]
    rows = np.concatenate([new_rows, np.flatnonzero(hit)])
    part = space_lists(cat, sv, k, rows, hygiene=Hygiene(lists_fusion.dedup, lists_fusion.mmr), blocked=blocked,
                       oversample=lists_fusion.oversample)
    old = old_set.as_lists()
    b = new_rows.size
    merged = NeighborLists(np.arange(cat.n, dtype=np.int64), np.concatenate([old.I, np.full((b, k), -1)]),
                           np.concatenate([old.S, np.full((b, k), -np.inf)]),
                           {m: np.concatenate([c, np.full((b, k), np.nan)]) for m, c in old.cos.items()},
                           np.concatenate([old.floor, np.full(b, -np.inf)]))
    for name in ("I", "S", "floor"):
        getattr(merged, name)[rows] = getattr(part, name)
    for m in merged.cos:
        merged.cos[m][rows] = part.cos[m]
    _publish_space(session, layout, space, cat.ids, merged, lists_fusion, blocked, previous=old_set)
    return {"space": space, "added": int(b), "updated_lists": int(hit.sum()), "items": cat.n}


def train_store(store: str | Path, interactions: str | Path, cfg: LearnConfig, *,
                progress: Progress | None = None) -> dict:
    """``reelsim train``: read the log against the store's catalog, fit, save, as one store version; a summary.

    The store is held (its lock) from reading the catalog to the commit, so
    the model is trained on the catalog it is published with. The summary
    (``train --json``) has the fields of :func:`train_summary`. Nothing is
    saved when training fails (:class:`~reelsim.errors.TrainingError`): the
    stored model stays.
    """
    with writing(store, "train"):
        cat, weights = load_catalog(StoreLayout(store).require_catalog())
        log = read_interactions(interactions, known_items=cat.ids)
        report(progress, log.describe(), stage="train")
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
