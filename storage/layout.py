"""Where everything lives inside a store: the one place that spells out its paths.

A store is a folder::

    STORE/
      run.lock                         the lock of the run or command writing the store (storage/lock.py)
      version.json                     the store's current version: what each writer published last (storage/version.py)
      .commit.json                     the journal of a commit in progress (storage/session.py); absent at rest
      report.json                      the last run's per-item status (jobs/runner.py)
      shards/<2 hex>/<32 hex>.h5       one HDF5 file per item (storage/shards.py); the name hashes the id
      index/catalog.h5                 the normalised per-modality item embeddings + weights (+ PCA)
      index/items.json                 id -> {kind, title}, for readable tables
      index/index.json                 manifest of the FAISS indexes, one per modality signature
      index/group-<code>-<build>.faiss one FAISS index per modality signature (similarity/grouped.py)
      index/lists-state.npz            (stores before list sets) per item: the floor a new item must reach
      index/lists-arrays/              (stores before list sets) the lists as .npy arrays, for `reelsim add`
      index/fused.faiss                the single exact index of stores written before grouped indexes
      index/copies/                    the copy index: region vectors (regions.faiss), their rows (rows.npz)
                                       and every copy found between two items (matches.parquet)
      lists/neighbors.parquet          one row per (item, neighbour); also .jsonl / .h5 when asked for
      lists/.knn-checkpoint/           finished batches of an unfinished kNN-graph job
      lists/<space>/                   lists of a learned space (learned, blend; docs/learning.md)
      lists/sets/<space>-<stamp>/      one space's lists as memory-mappable arrays, immutable once written
                                       (storage/listset.py): what `similar`, the API and the service read
      learned/                         the trained model of ``reelsim train`` (tower, ELSA, provenance)
      .dask-scratch/                   a local Dask cluster's scratch space

Every module asks a :class:`StoreLayout` for these paths instead of joining
names itself, so the layout can change in one place.

Examples
--------
>>> layout = StoreLayout("out")
>>> layout.catalog.as_posix(), layout.list_file("jsonl").as_posix()
('out/index/catalog.h5', 'out/lists/neighbors.jsonl')
>>> layout.shard("trailer-042").parent.parent.as_posix()
'out/shards'
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from reelsim.config import LIST_FORMATS
from reelsim.errors import StoreError, UsageError
from reelsim.storage.atomic import check_store_file

#: ``--lists-format`` value (:data:`reelsim.config.LIST_FORMATS`) -> file name under ``STORE/lists/``
LIST_FILES = dict(zip(LIST_FORMATS, ("neighbors.parquet", "neighbors.jsonl", "neighbors.h5"), strict=True))


def lists_redo(space: str) -> str:
    """The command that writes the list files of ``space`` again: ``lists`` (content) or ``lists --space SPACE``.

    Examples
    --------
    >>> lists_redo("content"), lists_redo("blend")
    ('lists', 'lists --space blend')
    """
    return "lists" if space == "content" else f"lists --space {space}"


def lists_first_made_by(space: str) -> str:
    """The command that first makes the lists of ``space`` in a store: ``reelsim run INPUT`` (content, with the
    catalog) or ``reelsim lists --space SPACE``."""
    return "reelsim run INPUT" if space == "content" else f"reelsim {lists_redo(space)}"


def item_key(item_id: str) -> str:
    """Stable file-system-safe key for an item id: the first 32 hex characters of its sha256.

    Ids are data (any unicode, ``/``, ``..``), never paths: a shard's file
    name is this key, so no id can name a file outside the store.

    Examples
    --------
    >>> item_key("a")
    'ca978112ca1bbdcafac231b39a23dc4d'
    """
    return hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class StoreLayout:
    """The paths of one store (nothing is created or checked on construction).

    Parameters
    ----------
    root : str or PathLike
        The store folder (``--store``).
    """

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # -- items -------------------------------------------------------------
    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    def shard(self, item_id: str) -> Path:
        """The HDF5 shard of ``item_id``: ``shards/<key[:2]>/<key>.h5`` (:func:`item_key`)."""
        key = item_key(item_id)
        return self.shards_dir / key[:2] / f"{key}.h5"

    def shard_files(self) -> list[Path]:
        """Every ``*.h5`` file under ``shards/``, sorted (complete or not)."""
        return sorted(self.shards_dir.glob("*/*.h5")) if self.shards_dir.is_dir() else []

    def shard_count(self) -> int:
        """How many ``*.h5`` files are under ``shards/`` (counted, not listed)."""
        return sum(1 for _ in self.shards_dir.glob("*/*.h5")) if self.shards_dir.is_dir() else 0

    def shard_temp_files(self) -> list[Path]:
        """Temporary files that killed shard writers left behind."""
        return sorted(self.shards_dir.glob("*/.*.tmp"))

    # -- run bookkeeping -----------------------------------------------------
    @property
    def lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def version_file(self) -> Path:
        """The store's current version (:mod:`reelsim.storage.version`), replaced last by each commit."""
        return self.root / "version.json"

    @property
    def commit_journal(self) -> Path:
        """The journal of a commit in progress (:mod:`reelsim.storage.session`); absent at rest."""
        return self.root / ".commit.json"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def scratch(self) -> Path:
        """A local Dask cluster's scratch space (kept inside the store)."""
        return self.root / ".dask-scratch"

    # -- index ---------------------------------------------------------------
    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def catalog(self) -> Path:
        """The normalised catalog embeddings (``storage/catalog.py``)."""
        return self.index_dir / "catalog.h5"

    @property
    def items_meta(self) -> Path:
        return self.index_dir / "items.json"

    @property
    def lists_state(self) -> Path:
        return self.index_dir / "lists-state.npz"

    @property
    def list_arrays(self) -> Path:
        """The last lists as arrays (``I.npy``, ``S.npy``, ``cos-<modality>.npy``), read by ``reelsim add``."""
        return self.index_dir / "lists-arrays"

    @property
    def copies_dir(self) -> Path:
        """The copy index of ``reelsim matches`` (:mod:`reelsim.similarity.copies`)."""
        return self.index_dir / "copies"

    @property
    def copy_index(self) -> Path:
        """The FAISS index over every shot region vector of the catalog."""
        return self.copies_dir / "regions.faiss"

    @property
    def copy_rows(self) -> Path:
        """What each row of the copy index is (item, shot, region kind) and each item's shot times."""
        return self.copies_dir / "rows.npz"

    @property
    def copy_table(self) -> Path:
        """Every copy found between two items of the catalog, with the time spans in both (Parquet)."""
        return self.copies_dir / "matches.parquet"

    @property
    def legacy_index(self) -> Path:
        """The single fused exact index of stores written before grouped indexes."""
        return self.index_dir / "fused.faiss"

    # -- lists ---------------------------------------------------------------
    @property
    def lists_dir(self) -> Path:
        return self.root / "lists"

    def list_file(self, fmt: str = "parquet") -> Path:
        """The list file of format ``fmt`` (a key of :data:`LIST_FILES`)."""
        return self.space_list_file("content", fmt)

    @property
    def knn_checkpoint(self) -> Path:
        return self.lists_dir / ".knn-checkpoint"

    def space_lists_dir(self, space: str) -> Path:
        """The list files of a space: ``lists/`` for ``content``, ``lists/<space>/`` for a learned one."""
        return self.lists_dir if space == "content" else self.lists_dir / space

    def space_list_file(self, space: str, fmt: str = "parquet") -> Path:
        """The list file of format ``fmt`` (a key of :data:`LIST_FILES`) of a space, in :meth:`space_lists_dir`."""
        if fmt not in LIST_FILES:
            raise UsageError(f"unknown list format {fmt!r}; expected one of {', '.join(LIST_FILES)}")
        return self.space_lists_dir(space) / LIST_FILES[fmt]

    @property
    def list_sets_dir(self) -> Path:
        """Every space's lists as arrays, one immutable folder per write (:mod:`reelsim.storage.listset`)."""
        return self.lists_dir / "sets"

    def list_set(self, name: str) -> Path:
        """The folder of list set ``name`` (``<space>-<stamp>``, as the version names it)."""
        if not name or "/" in name or name.startswith("."):
            raise StoreError(f"bad list set name {name!r} in {self.version_file}")
        return self.list_sets_dir / name

    # -- versions ------------------------------------------------------------
    def is_versioned(self, path: str | os.PathLike) -> bool:
        """Whether a write to ``path`` belongs to the store's next version (a session stages it until its commit).

        Versioned: files of fixed name under ``index/``, ``lists/`` and
        ``learned/`` (the catalog, items.json, the index manifest, list
        files, the model). Not versioned, so written at once: shards,
        report.json, checkpoints, and files whose name is new at each write
        (index files ``group-*.faiss``, list sets): nothing refers to them
        until a staged file or the version does.
        """
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root))
        except ValueError:
            return False
        parts = rel.parts
        if len(parts) < 2 or parts[0] not in ("index", "lists", "learned"):
            return False
        if parts[0] == "lists" and parts[1] in ("sets", self.knn_checkpoint.name):
            return False
        return not (parts[0] == "index" and parts[-1].startswith("group-") and parts[-1].endswith(".faiss"))

    # -- learned model ---------------------------------------------------------
    @property
    def learned_dir(self) -> Path:
        """The trained model (``reelsim train``): tower, ELSA embeddings, provenance."""
        return self.root / "learned"

    # -- checks --------------------------------------------------------------
    def check_root(self) -> None:
        """:class:`StoreError` when the store's path exists but is not a folder."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the store path {self.root} is a file, not a folder")

    def make_root(self) -> Path:
        """Create the store folder (and its parents) if needed; :class:`StoreError` naming why it cannot be."""
        self.check_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot write to store {self.root}: cannot create it ({e.strerror})") from None
        return self.root

    def require_catalog(self) -> Path:
        """The catalog path; :class:`StoreError` telling how to make one when it is missing."""
        self.check_root()
        if not Path(check_store_file(self.catalog, root=self.root)).is_file():
            raise StoreError(f"no index in {self.root}: run `reelsim run INPUT --store {self.root}` first")
        return self.catalog
