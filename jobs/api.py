"""reelsim's Python API, for notebooks and schedulers: the CLI is a thin layer over the same calls.

Examples
--------
Against a store made by ``reelsim run`` (so not run as doctests)::

>>> import reelsim                                                        # doctest: +SKIP
>>> report = reelsim.run(["catalog.jsonl"], "out/", workers=2)           # doctest: +SKIP
>>> report.summary()                                                     # doctest: +SKIP
{'total': 21, 'ok': 19, 'cached': 0, 'failed': 2}
>>> store = reelsim.open_store("out/")                                   # doctest: +SKIP
>>> [(n.item, round(n.score, 3)) for n in store.similar("trailer-042", k=3)]  # doctest: +SKIP
[('trailer-042-mobile', 0.981), ('trailer-017', 0.612), ('trailer-099', 0.57)]
>>> store.shots("trailer-042")["shots"][0]["end_s"]                     # doctest: +SKIP
4.2
>>> store.lists().to_pandas().head()                                    # doctest: +SKIP
>>> store.features("trailer-042")["visual"].shape                        # doctest: +SKIP
(1280,)

``reelsim.run`` is ``reelsim run``, ``store.shots(...)`` is ``reelsim shots --json``,
``store.lists()`` every list as a pyarrow Table, ``store.features(...)`` the item's stored embeddings.

A custom configuration is the same typed :class:`reelsim.Config` the CLI
builds (checked when built)::

    cfg = reelsim.Config().with_settings(["clips.hop_s=1.5", "fusion.k=20"])
    reelsim.run(["media/"], "out/", cfg)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reelsim.config import Config, FusionConfig, parse_weights
from reelsim.errors import StoreError, UnknownItemError
from reelsim.jobs.console import progress_for
from reelsim.jobs.runner import RunReport, run_catalog
from reelsim.reporting import Progress
from reelsim.similarity.answer import Answer, StoreReader, check_space_options
from reelsim.similarity.copies import Segment
from reelsim.similarity.copies import matches as copy_matches
from reelsim.similarity.incremental import check_can_add
from reelsim.similarity.rebuild import relist
from reelsim.similarity.spaces import add_to_space, relist_stale_spaces
from reelsim.storage.atomic import check_store_file
from reelsim.storage.layout import StoreLayout, lists_first_made_by
from reelsim.storage.lists import Neighbor, read_parquet_table
from reelsim.storage.session import read_consistent, writing
from reelsim.storage.shards import read_item_features, read_shots


def run(inputs: str | os.PathLike | Sequence[str | os.PathLike], store: str | os.PathLike, config: Config | None = None,
        *, workers: int | None = None, scheduler: str | None = None, client=None,
        progress: bool | Progress = False, re_extract: bool = False) -> RunReport:
    """Process a catalog into ``store`` and write its lists (``reelsim run``).

    Parameters
    ----------
    inputs : path or list of paths
        Folders of media, ``.jsonl``/``.csv`` manifests or video files.
    store : path
        The store folder (created).
    config : Config, optional
        Default ``Config()``.
    workers, scheduler, client : where the items run: a new local cluster of
        ``workers`` processes (default), a scheduler address, or an existing
        ``distributed.Client`` (left open).
    progress : ``True``: progress bars on stderr; ``False``: none (warnings go to the ``reelsim``
        logger); or a :data:`reelsim.Progress` callable that receives every :class:`reelsim.Report`.
    re_extract : allow a model change against the store's features.

    Returns
    -------
    RunReport
        Per-item rows (``.items``), ``.summary()``, ``.failed``, ``.exit_code``;
        also written to ``STORE/report.json``.
    """
    return run_catalog(_paths(inputs), Path(store), config or Config(), scheduler=scheduler, workers=workers,
                       progress=progress, re_extract=re_extract, client=client, then=relist_stale_spaces)


def add(inputs: str | os.PathLike | Sequence[str | os.PathLike], store: str | os.PathLike, config: Config | None = None,
        *, workers: int | None = None, scheduler: str | None = None, client=None,
        progress: bool | Progress = False, space: str = "content") -> RunReport:
    """Analyse new items and add them to an existing store's index and lists (``reelsim add``).

    ``space`` (``learned``, ``blend``): also update that space's lists (``add --space``), in the same
    write session, as the next store version.
    """
    check_space_options(space)
    check_can_add(Path(store))
    cfg = config or Config()
    then = (lambda s: {space: add_to_space(s, space, cfg.fusion)}) if space != "content" else relist_stale_spaces
    return run_catalog(_paths(inputs), Path(store), cfg, scheduler=scheduler, workers=workers,
                       progress=progress, lists="add", client=client, then=then)


def _paths(inputs) -> list[str]:
    return [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(p) for p in inputs]


class Store:
    """A finished store, read-only: neighbours, shots, lists and features of its items.

    Use :func:`open_store`. A store follows its writers: each call answers
    from the store's current version, so after ``reelsim add``, ``lists`` or
    ``train`` in another process the next call sees the new items and lists
    (nothing to reopen), and never half of a version.
    """

    def __init__(self, path: str | os.PathLike):
        self.layout = StoreLayout(path)
        self.path = self.layout.root
        self._reader = StoreReader(self.path)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def version(self) -> int:
        """The store version calls answer from now (0: a store written before versions)."""
        return self._reader.version

    def ids(self) -> list[str]:
        """The ids of the indexed items, in catalog order."""
        return list(self._reader.ids())

    def similar(self, item: str, k: int = 10, *, space: str = "content",
                weights: dict[str, float] | str | None = None) -> list[Neighbor]:
        """``item``'s ``k`` nearest neighbours in ``space``, best first (``reelsim similar``).

        The stored lists of the space answer (the rows of its
        ``neighbors.parquet``); other ``weights`` (a dict, or ``"text=0"`` as
        on the command line; content space only) or a k beyond the stored one
        are computed live with the same hygiene. :meth:`answer` says which.
        """
        return self.answer(item, k, space=space, weights=weights).neighbors

    def answer(self, item: str, k: int = 10, *, space: str = "content",
               weights: dict[str, float] | str | None = None) -> Answer:
        """:meth:`similar` with where the neighbours came from (``source``: ``lists`` or ``live``) and the version."""
        if isinstance(weights, str):
            weights = parse_weights(weights)
        return self._reader.similar(item, k, space=space, weights=weights)

    def item(self, item: str) -> dict:
        """``{"id", "kind", "title"}`` of an indexed item."""
        return self._reader.item(item)

    def health(self) -> dict:
        """Store version, item count and the spaces it answers (``GET /health`` of ``reelsim serve``)."""
        return self._reader.health()

    def matches(self, item: str, *, direction: str = "both") -> list[Segment]:
        """Copies of ``item``'s footage in other items and the footage it copies (``reelsim matches``), best first.

        Each :class:`~reelsim.similarity.copies.Segment` gives the other
        item, the ``relation`` (``copies``: ``item`` shows the other's
        footage; ``copied-by``: the other shows ``item``'s; ``duplicate``),
        the aligned spans in both (seconds), a score, the shots matched, the
        speed ratio and the kind of edit it looks like. ``direction="in"``:
        only where ``item`` comes from; ``"out"``: only where it is used.
        """
        return copy_matches(self.path, item, direction=direction)

    def shots(self, item: str) -> dict:
        """Shots and scenes of a video item, as ``reelsim shots --json`` prints them."""
        return read_shots(self.path, item)

    def lists(self, space: str = "content"):
        """Every item's list in ``space`` as a ``pyarrow.Table`` (columns :data:`reelsim.storage.lists.COLUMNS`)."""
        check_space_options(space)
        path = self.layout.space_list_file(space)
        if not path.is_file():
            raise StoreError(f"no {space} lists in {self.path}: run `{lists_first_made_by(space)} --store {self.path}` "
                             "first")
        return read_consistent(self.layout, lambda _: read_parquet_table(path))

    def features(self, item: str, *, level: str = "item") -> dict[str, np.ndarray]:
        """The stored embeddings of ``item``: modality -> float32 (D,) (``level="item"``) or (S, D) per shot.

        Raises :class:`UnknownItemError` when the store has no shard for ``item``, :class:`UsageError`
        for a ``level`` other than ``item`` or ``shot``.
        """
        return read_item_features(self.path, item, level=level)

    def run_report(self) -> dict:
        """``STORE/report.json`` of the last run."""
        try:
            return json.loads(Path(check_store_file(self.layout.report)).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"no report.json in {self.path}: no run has finished there") from None
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"cannot read {self.layout.report}: {e}") from e

    def rebuild_lists(self, fusion: FusionConfig | None = None, *, progress: bool | Progress = False) -> dict:
        """Rebuild the indexes and every list from the stored catalog (``reelsim lists``); a summary.

        One write session: holds the store's lock (:class:`~reelsim.storage.lock.StoreLockedError`
        when another command holds it) and publishes the result as one version.
        """
        overrides = dataclasses.asdict(fusion) if fusion else None
        with writing(self.path, "lists"):
            out = relist(self.path, overrides, progress=progress_for(progress))
            spaces = relist_stale_spaces(self.path)
        return out | ({"spaces": spaces} if spaces else {})


def open_store(path: str | os.PathLike) -> Store:
    """Open the store at ``path`` (:class:`StoreError` when it is not a reelsim store)."""
    layout = StoreLayout(path)
    if not layout.root.is_dir():
        raise StoreError(f"no store at {layout.root}: not a folder")
    if not (layout.shards_dir.is_dir() or layout.index_dir.is_dir()):
        raise StoreError(f"{layout.root} is not a reelsim store (no shards/ or index/ in it)")
    return Store(layout.root)


__all__ = ["Answer", "Store", "UnknownItemError", "add", "open_store", "run"]
