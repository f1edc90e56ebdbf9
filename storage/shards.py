"""Per-item HDF5 shards: written atomically by the task that computed them.

Where they live: :meth:`reelsim.storage.layout.StoreLayout.shard`.
The shard file name is a hash of the item id, so ids are data and can never
name a path outside the store.  Schema of one shard (see README "HDF5 schema"):

- root attrs: ``item_id``, ``kind``, ``title``, ``description``,
  ``image_path`` (the product image's path, "" without one; absent in older shards),
  ``schema_version``, ``code_version``, ``config_hash``, ``input_sha256``
  (JSON: modality -> sha256), ``warnings`` (JSON list), ``created_utc``,
  and ``complete`` (1), written last: a shard without it is not trusted.
- ``/video`` (videos only): attrs ``fps``, ``n_frames``, ``width``,
  ``height``, ``duration_s``, ``decode_errors`` (corrupt packets skipped; absent
  in older shards), ``source_path``; datasets ``shots`` int64 (S, 2),
  ``shot_times`` float64 (S, 2), ``scenes`` int64 (C, 2), ``keyframes`` int64 (S,),
  ``transitions`` bytes (S,) how each shot was entered (``start``, ``cut``,
  ``dissolve``, ``fade``), ``transition_frames`` int64 (S, 2) that transition's
  frames [start, end).
- ``/features/<modality>`` for each of visual, audio, image, text the item
  has: dataset ``item`` float32 (D,), optional ``shot`` float32 (S, D)
  (visual also ``clips`` float32 (K, D), ``clip_shot`` int32 (K,),
  ``clip_start`` int64 (K,)); attrs = provenance (``model``, ``weights``,
  ``weights_sha256``, ``input_size`` ..., plus ``code_version``, ``config_hash``).
- ``/thumbnails`` (optional): ``keyframes`` vlen uint8 (S,) and ``image``
  vlen uint8 (1,), each element a complete small JPEG file (see
  :mod:`reelsim.storage.thumbnails`); absent in shards written before them.
- ``/regions`` (schema version 2, videos, when ``regions.enabled``): the
  region vectors of each shot's keyframe for copy detection
  (:mod:`reelsim.pipeline.regions`): datasets ``vectors`` float16 (N, D),
  ``shot`` int32 (N,), ``kind`` int8 (N,) (an index into the attribute
  ``kinds``, a JSON list), ``boxes`` float32 (N, 4); attrs = provenance.
  Absent in version-1 shards, which read as before (no regions: copy search
  then uses their keyframe rows, see :func:`read_regions`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from reelsim._version import __version__
from reelsim.errors import DamagedStoreError, StoreError, UnknownItemError, UsageError
from reelsim.storage.atomic import atomic_path, special_file_problem
from reelsim.storage.layout import StoreLayout
from reelsim.storage.schema import ItemFeatures, RegionFeatures
from reelsim.storage.thumbnails import write_thumbnails

SCHEMA_VERSION = 2
#: Root attribute written last into every shard; a shard without it is incomplete.
COMPLETE_ATTR = "complete"


def _attr(v):
    """HDF5-storable attribute value."""
    if v is None:
        return ""
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True)
    return v


@contextlib.contextmanager
def atomic_h5(path: Path):
    """An h5py File open for writing at a temp path beside ``path``, moved onto it on success.

    Readers never see a half-written file; a failure leaves no temp file.
    """
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def write_shard(store: Path, features: ItemFeatures, *, config_hash: str, input_sha256: dict[str, str]) -> Path:
    """Write one item's :class:`~reelsim.storage.schema.ItemFeatures` atomically."""
    item = features.item
    path = StoreLayout(store).shard(item.id)
    with atomic_h5(path) as f:
        f.attrs.update({
            "item_id": item.id,
            "kind": item.kind,
            "title": _attr(item.title),
            "description": _attr(item.description),
            "image_path": _attr(item.image),
            "schema_version": SCHEMA_VERSION,
            "code_version": __version__,
            "config_hash": config_hash,
            "input_sha256": _attr(input_sha256),
            "warnings": _attr(features.warnings),
            "timings": _attr(features.timings),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        v = features.video
        if v is not None:
            g = f.create_group("video")
            g.attrs.update({"fps": v.fps, "n_frames": v.n_frames, "width": v.width, "height": v.height,
                            "duration_s": v.duration_s, "decode_errors": v.decode_errors,
                            "source_path": _attr(item.video), **v.params})
            for name in ("shots", "shot_times", "scenes", "keyframes", "transitions", "transition_frames"):
                g.create_dataset(name, data=getattr(v, name))
        feats = f.create_group("features")
        for modality, emb in features.embeddings.items():
            g = feats.create_group(modality)
            g.attrs.update({k: _attr(val) for k, val in emb.provenance.items()})
            g.attrs.update({"code_version": __version__, "config_hash": config_hash})
            g.create_dataset("item", data=np.asarray(emb.item, dtype=np.float32))
            if emb.shot is not None:
                g.create_dataset("shot", data=np.asarray(emb.shot, dtype=np.float32))
            for name, arr in emb.extra.items():
                g.create_dataset(name, data=arr)
        if features.regions is not None:
            _write_regions(f, features.regions)
        _write_thumbnails(f, features)
        f.attrs[COMPLETE_ATTR] = 1
    return path


def _write_regions(f, regions: RegionFeatures) -> None:
    g = f.create_group("regions")
    g.attrs.update({k: _attr(v) for k, v in regions.provenance.items()})
    g.create_dataset("vectors", data=np.asarray(regions.vectors, dtype=np.float16))
    g.create_dataset("shot", data=np.asarray(regions.shot, dtype=np.int32))
    g.create_dataset("kind", data=np.asarray(regions.kind, dtype=np.int8))
    g.create_dataset("boxes", data=np.asarray(regions.boxes, dtype=np.float32))


def read_regions(path: Path, item_id: str | None = None) -> dict | None:
    """The copy-detection record of one video shard, or None for an item without video.

    Returns
    -------
    dict with ``vectors`` float32 (N, D) unit rows, ``shot`` int32 (N,),
    ``kind`` (N,) str, ``boxes`` float32 (N, 4), ``shot_times`` float64 (S, 2),
    ``duration_s``, ``regions`` (True when the shard has region vectors;
    a version-1 shard has none and gives its keyframe image rows instead,
    kind ``keyframe``, boxes the centre square) and ``provenance``.
    """
    with open_shard(path, item_id) as f:
        if "video" not in f:
            return None
        v = f["video"]
        rec = {"shot_times": v["shot_times"][()], "duration_s": float(v.attrs["duration_s"])}
        if "regions" in f:
            g = f["regions"]
            kinds = json.loads(g.attrs.get("kinds", "[]"))
            vec = g["vectors"][()].astype(np.float32)
            rec.update(vectors=_unit_rows(vec), shot=g["shot"][()].astype(np.int32),
                       kind=np.asarray([kinds[k] for k in g["kind"][()]]),
                       boxes=g["boxes"][()], regions=True, provenance=dict(g.attrs))
            return rec
        feats = f["features"]
        if "image" not in feats or "shot" not in feats["image"]:
            return None
        vec = feats["image"]["shot"][()].astype(np.float32)
        n = len(vec)
        rec.update(vectors=_unit_rows(vec), shot=np.arange(n, dtype=np.int32), kind=np.asarray(["keyframe"] * n),
                   boxes=np.tile(np.float32([0, 0, 1, 1]), (n, 1)), regions=False,
                   provenance=dict(feats["image"].attrs))
        return rec


def _unit_rows(vec: np.ndarray) -> np.ndarray:
    """``vec`` with each row scaled to unit length (an all-zero row stays zero)."""
    return vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)


def _write_thumbnails(f, features: ItemFeatures) -> None:
    keyframes = features.video.keyframe_jpegs if features.video is not None else []
    write_thumbnails(f, {"keyframes": keyframes, "image": [features.image_jpeg] if features.image_jpeg else []})


def shard_is_current(path: Path, *, config_hash: str, input_sha256: dict[str, str]) -> bool:
    """Whether a complete shard exists for these inputs and feature config.

    A shard that cannot be opened, or lacks the ``complete`` attribute
    written last (e.g. half-written by a killed process, or copied in part),
    counts as not current and is recomputed.
    """
    import h5py

    if special_file_problem(path) is not None or not path.is_file():
        return False  # a special file is never opened: it is recomputed, and replaced
    try:
        with h5py.File(path, "r") as f:
            return (
                f.attrs.get(COMPLETE_ATTR) == 1
                and f.attrs.get("config_hash") == config_hash
                and json.loads(f.attrs.get("input_sha256", "{}")) == input_sha256
                and "features" in f
            )
    except (OSError, ValueError, json.JSONDecodeError):
        return False


def remove_stale_temp_files(store: Path) -> list[Path]:
    """Delete temp files that killed writers left under ``STORE/shards`` (call only under the store lock)."""
    removed = []
    for tmp in StoreLayout(store).shard_temp_files():
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def shard_is_complete(path: Path) -> bool:
    """Whether ``path`` opens as HDF5 and carries the ``complete`` attribute (written last)."""
    import h5py

    if special_file_problem(path) is not None:
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get(COMPLETE_ATTR) == 1
    except (OSError, ValueError):
        return False


def damaged_shard(path: Path, what: str, item_id: str | None = None) -> DamagedStoreError:
    """The error for a shard that cannot be used: names the file, the item, and what redoes it."""
    item = f" of item {item_id!r}" if item_id is not None else ""
    return DamagedStoreError(path, what, "run", f"damaged shard {path}{item}: {what}; run `reelsim run` on the "
                             "item's input again to recompute it (`reelsim verify` lists every damaged file)")


@contextlib.contextmanager
def open_shard(path: Path, item_id: str | None = None):
    """The complete shard at ``path``, open for reading (an ``h5py.File``).

    Raises
    ------
    DamagedStoreError
        A special file or a link out of the store (not opened), the file does
        not open as HDF5 (truncated, overwritten), lacks the
        ``complete`` mark written last, or a record the block reads is missing
        or unreadable; the message names the file.
    """
    import h5py

    problem = special_file_problem(path)
    if problem is not None:
        raise damaged_shard(path, problem, item_id)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError):
        raise damaged_shard(path, "it does not open as HDF5 (truncated or overwritten?)", item_id) from None
    with f:
        if f.attrs.get(COMPLETE_ATTR) != 1:
            raise damaged_shard(path, "it is incomplete (no 'complete' mark: its writer was killed, or it was "
                                "copied in part)", item_id)
        try:
            yield f
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise damaged_shard(path, f"a record cannot be read ({e.__class__.__name__}: {e})", item_id) from None


def _shard_records(f) -> str | None:
    """What is wrong inside an open, complete shard (None: nothing): features and shot tables agree."""
    feats = f.get("features")
    if feats is None or not len(feats):
        return "it has no features"
    for m in feats:
        v = feats[m]["item"][()]
        if v.ndim != 1 or not v.size or not np.isfinite(v).all():
            return f"its {m} item embedding is not a finite vector (shape {v.shape})"
    if "video" in f:
        v = f["video"]
        n = v["shots"].shape[0]
        expect = {"shots": (n, 2), "shot_times": (n, 2), "keyframes": (n,)}
        expect.update({name: (n, 2) if name == "transition_frames" else (n,)
                       for name in ("transitions", "transition_frames") if name in v})
        for name, shape in expect.items():
            if v[name].shape != shape:
                return f"video/{name} has shape {v[name].shape}, expected {shape} for {n} shots"
        for m in feats:
            if "shot" in feats[m] and feats[m]["shot"].shape[0] != n:
                return f"{m} has {feats[m]['shot'].shape[0]} shot rows for {n} shots"
        if "regions" in f:
            g = f["regions"]
            r = g["vectors"].shape[0]
            shots = g["shot"][()]
            if any(g[name].shape[0] != r for name in ("shot", "kind", "boxes")) or (r and not 0 <= shots.min()
                                                                                   <= shots.max() < n):
                return f"its regions do not match its {n} shots"
    return None


def check_shard(layout: StoreLayout, path: Path) -> tuple[str | None, str | None]:
    """(item id, what is wrong) of one shard file: opened, complete, in its place, records consistent.

    ``item id`` is None when the shard cannot be read; ``what`` is None when nothing is wrong.
    """
    try:
        with open_shard(path) as f:
            item_id = str(f.attrs["item_id"])
            if layout.shard(item_id) != path:
                return item_id, f"it holds item {item_id!r}, whose shard belongs at {layout.shard(item_id)}"
            return item_id, _shard_records(f)
    except DamagedStoreError as e:
        return None, e.what


def iter_shards(store: Path) -> Iterator[Path]:
    """Every shard file of ``store``, complete or not (open each with :func:`open_shard`)."""
    layout = StoreLayout(store)
    layout.check_root()
    if not layout.shards_dir.is_dir():
        raise StoreError(f"no feature store at {store} (no shards/ folder): run `reelsim run ... --store {store}` first")
    yield from layout.shard_files()


def read_item_vectors(path: Path, item_id: str | None = None) -> tuple[str, dict, dict[str, np.ndarray]]:
    """(item id, item attrs, modality -> float32 (D,) item embedding) of one shard (:func:`open_shard`)."""
    with open_shard(path, item_id) as f:
        attrs = {k: f.attrs[k] for k in ("item_id", "kind", "title", "description")}
        vecs = {m: f["features"][m]["item"][()] for m in f["features"]}
        return str(attrs["item_id"]), attrs, vecs


def existing_shard(store: Path, item_id: str) -> Path:
    """The shard path of ``item_id``; :class:`UnknownItemError` when the store has none."""
    layout = StoreLayout(store)
    layout.check_root()
    path = layout.shard(item_id)
    if not path.is_file() and special_file_problem(path) is None:  # a special file: open_shard says so
        raise UnknownItemError(f"unknown item id {item_id!r}: no results for it in {store}")
    return path


def read_item_features(store: Path, item_id: str, *, level: str = "item") -> dict[str, np.ndarray]:
    """Modality -> the item's stored embedding: float32 (D,) for ``level="item"``, (S, D) for ``"shot"``.

    At shot level, modalities without per-shot rows (product images, text) are left out.

    Raises
    ------
    UsageError
        ``level`` is not ``item`` or ``shot``.
    UnknownItemError
        No shard for ``item_id``.
    """
    if level not in ("item", "shot"):
        raise UsageError(f"level must be 'item' or 'shot', got {level!r}")
    with open_shard(existing_shard(store, item_id), item_id) as f:
        feats = f["features"]
        return {m: feats[m][level][()] for m in feats if level in feats[m]}


def read_shots(store: Path, item_id: str) -> dict:
    """The shots/scenes record of one video item, as in ``reelsim shots --json``.

    Raises
    ------
    UnknownItemError
        No shard for ``item_id``, or the item has no video.
    """
    with open_shard(existing_shard(store, item_id), item_id) as f:
        if "video" not in f:
            raise UnknownItemError(f"item {item_id!r} has no video, so no shots")
        v = f["video"]
        shots, times, scenes = v["shots"][()], v["shot_times"][()], v["scenes"][()]
        kinds = [k.decode() for k in v["transitions"][()]] if "transitions" in v else ["start"] + ["cut"] * (len(shots) - 1)
        spans = v["transition_frames"][()] if "transition_frames" in v else np.stack([shots[:, 0], shots[:, 0]], 1)
        return {
            "item": item_id,
            "fps": float(v.attrs["fps"]),
            "n_frames": int(v.attrs["n_frames"]),
            "shots": [
                {"start_frame": int(s), "end_frame": int(e), "start_s": float(ts), "end_s": float(te),
                 "transition": kind, "transition_frames": [int(a), int(b)]}
                for (s, e), (ts, te), kind, (a, b) in zip(shots, times, kinds, spans)
            ],
            "scenes": [{"start_shot": int(s), "end_shot": int(e)} for s, e in scenes],
        }
