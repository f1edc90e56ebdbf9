"""The store's version: one small file, replaced last by every commit, that says what the store holds now.

``STORE/version.json`` (:attr:`reelsim.storage.layout.StoreLayout.version_file`)::

    {"format": "reelsim.version/1", "version": 7, "command": "add", "utc": "2026-12-06T21:04:11+00:00",
     "catalog": {"stamp": "9f2c...", "items": 1200},
     "lists": {"content": "content-4be1...", "learned": "learned-77a0..."},
     "model": {"stamp": "c01d...", "items": 1150},
     "blocklist": {"phrases": ["lottery"], "threshold": 0.5}}

- ``version`` counts the commits of the store (1, 2, ...); a store written
  before versions existed has no file and reads as version 0.
- ``catalog.stamp`` changes whenever the catalog's rows change (``run``, ``add``).
- ``lists`` names, per space, the list set (:mod:`reelsim.storage.listset`)
  that is that space's answer; a set records the catalog (and model) stamp it
  was computed over, so a reader knows when it is stale.
- ``model`` is the trained model's stamp (``reelsim train``), ``blocklist``
  the store's blocklist: every space's lists and every output apply it.

Readers notice a new version by the file's identity (:func:`version_token`:
one ``stat``), so an open store or the service switches at its next call.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from reelsim.errors import DamagedStoreError
from reelsim.storage.atomic import check_store_file
from reelsim.storage.layout import StoreLayout

VERSION_FORMAT = "reelsim.version/1"


def empty_version() -> dict[str, Any]:
    """The version of a store that has none yet (version 0, nothing published)."""
    return {"format": VERSION_FORMAT, "version": 0, "command": None, "utc": None, "catalog": None, "lists": {},
            "model": None, "blocklist": None}


def read_version(layout: StoreLayout) -> dict[str, Any]:
    """The store's version record (:func:`empty_version` when the store has none).

    Raises
    ------
    DamagedStoreError
        The file is there but is not a version record (names it; any writing command rewrites it).
    """
    path = layout.version_file
    try:
        with open(check_store_file(path, "lists"), encoding="utf-8") as f:
            body = json.loads(f.read(1 << 20))
    except FileNotFoundError:
        return empty_version()
    except (OSError, ValueError) as e:
        raise DamagedStoreError(path, f"cannot be read as JSON ({e})", "lists") from None
    if not isinstance(body, dict) or body.get("format") != VERSION_FORMAT or not isinstance(body.get("version"), int):
        raise DamagedStoreError(path, "not a reelsim version record", "lists")
    out = empty_version()
    out.update(body)
    if not isinstance(out["lists"], dict):
        raise DamagedStoreError(path, "its 'lists' is not a map of spaces to list sets", "lists")
    return out


def next_version(current: dict[str, Any], command: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The record that follows ``current`` after ``command`` published ``changes``.

    ``changes`` holds top-level fields to replace; ``lists`` is merged space
    by space (a space mapped to None is dropped).

    Examples
    --------
    >>> v = next_version(empty_version(), "run", {"catalog": {"stamp": "a", "items": 2}, "lists": {"content": "c-1"}})
    >>> v["version"], v["lists"]
    (1, {'content': 'c-1'})
    >>> next_version(v, "train", {"lists": {"learned": "l-1"}})["lists"]
    {'content': 'c-1', 'learned': 'l-1'}
    """
    out = dict(current)
    lists = dict(current.get("lists") or {})
    for key, value in changes.items():
        if key == "lists":
            for space, name in value.items():
                if name is None:
                    lists.pop(space, None)
                else:
                    lists[space] = name
        else:
            out[key] = value
    out.update(format=VERSION_FORMAT, version=int(current.get("version", 0)) + 1, command=command, lists=lists,
               utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return out


def version_token(layout: StoreLayout | str) -> tuple:
    """A cheap fingerprint of the version file (one ``stat``): it changes whenever a commit replaces it.

    ``()`` when there is no file. A reader compares tokens to know whether
    to reload, without reading the file. ``layout``: the store's layout, or
    the path of its version file as a string (a reader that asks at every
    call keeps it, instead of building a Path each time).
    """
    try:
        st = os.stat(layout.version_file if isinstance(layout, StoreLayout) else layout)
    except OSError:
        return ()
    return st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns
