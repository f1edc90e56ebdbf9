"""The one write path of a store: its lock, the files staged for its next version, and one commit.

Every command that writes a store (``run``, ``add``, ``lists``, ``train``,
``lists --space``, ``add --space``) does so inside a :class:`WriteSession`::

    with WriteSession(store, "train") as session:   # takes STORE/run.lock (StoreLockedError: exit 2)
        save_model(store, model, cfg, log)           # every atomic_path write is staged, not moved
        session.commit({"model": {...}})             # all staged files move as one set; version + 1

How a commit stays one transaction:

1. While the command works, each versioned file it writes
   (:meth:`StoreLayout.is_versioned`: the catalog, items.json, the index
   manifest, list files, the model) goes to a temp file beside its target
   (:func:`reelsim.storage.atomic.atomic_path`). A full or read-only disk
   fails here, before anything is replaced: the temp files are removed and
   the store is as it was.
2. :meth:`WriteSession.commit` writes a journal (``STORE/.commit.json``)
   naming every (temp, target) move, every file to remove and the next
   version record; then makes the moves and removals; then replaces
   ``version.json`` (:mod:`reelsim.storage.version`); then removes the journal.
3. A process killed before the journal is written leaves the old version
   and some temp files (removed by the next session); killed after, the
   next session (or a reader, which takes the lock for that moment) finishes
   the journal's moves: the new version is published whole either way.

Readers never see half a version: what they read through the version
(list sets, :mod:`reelsim.storage.listset`) is immutable, and
:func:`read_consistent` retries a read of fixed-name files that a commit
overlapped.

Files written at once, outside the transaction: shards (each item's own,
atomic), report.json, checkpoints, and files with a new name at each write
(index files, list sets) that nothing refers to until the commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any, TypeVar

from reelsim.errors import DamagedStoreError, StoreError
from reelsim.reporting import Progress
from reelsim.storage.atomic import ACTIVE_SESSION, write_text_atomic
from reelsim.storage.faults import fault_point
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lock import StoreLock, is_stale, lock_record, read_lock
from reelsim.storage.version import next_version, read_version, version_token

JOURNAL_FORMAT = "reelsim.commit/1"
#: a staged temp file's name: ``.<target name>.<32 hex>.tmp`` (storage/atomic.py)
_TEMP = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


class WriteSession:
    """One command's write access to a store: the lock, staged files, commits (module docstring).

    Parameters
    ----------
    store : the store folder (created if missing)
    command : what writes (``run``, ``add``, ``lists``, ``train``, ...), recorded in the version

    Attributes
    ----------
    version : dict
        The store's version record as of the last commit of this session (or its opening).
    """

    def __init__(self, store: str | os.PathLike, command: str, *, progress: Progress | None = None):
        self.layout = StoreLayout(store)
        self.command = command
        self.version: dict[str, Any] = {}
        self._lock = StoreLock(self.layout.root, progress=progress)
        self._staged: dict[str, str] = {}  # target -> temp
        self._removals: dict[str, None] = {}
        self._new_sets: list[str] = []
        self._pending: dict[str, Any] = {}
        self._after: list[Callable[[], None]] = []
        self._token = None

    # -- what atomic_path asks (storage/atomic.py Stager) ------------------------------------------
    def stages(self, path: str) -> bool:
        return self.layout.is_versioned(path)

    def holds(self, path: str) -> bool:
        return _inside(path, self.layout.root)

    def stage(self, tmp: str, path: str) -> None:
        old = self._staged.pop(path, None)
        if old is not None:  # written twice in one session: the last write wins
            with contextlib.suppress(FileNotFoundError):
                os.remove(old)
        self._staged[path] = tmp
        self._removals.pop(path, None)

    def staged_temp(self, path: str) -> str | None:
        return self._staged.get(path)

    def defer_remove(self, path: str) -> None:
        tmp = self._staged.pop(path, None)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        self._removals[path] = None

    # -- what the next commit publishes ------------------------------------------------------------
    def note(self, changes: dict[str, Any]) -> None:
        """Add ``changes`` to the version fields the next commit sets (``lists`` merged space by space)."""
        for key, value in changes.items():
            if key == "lists":
                self._pending.setdefault("lists", {}).update(value)
            else:
                self._pending[key] = value

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the next commit has published its version (e.g. remove a job's checkpoint,
        which must survive until its lists are in the store); dropped if the session ends without one."""
        self._after.append(action)

    def current(self, key: str) -> Any:
        """A field of the version the next commit publishes: as noted, else as the store has it now."""
        return self._pending[key] if key in self._pending else self.version.get(key)

    def list_sets(self) -> dict[str, str]:
        """space -> list set name, in the version the next commit publishes."""
        return {**(self.version.get("lists") or {}), **self._pending.get("lists", {})}

    def stamp_of(self, key: str) -> str | None:
        """The ``stamp`` of ``catalog`` or ``model`` in the version the next commit publishes."""
        rec = self.current(key)
        return rec.get("stamp") if isinstance(rec, dict) else None

    # -- list sets ---------------------------------------------------------------------------------
    def new_set_dir(self, space: str) -> tuple[str, str]:
        """(name, folder) of a new, empty list set of ``space``; removed again unless a commit names it."""
        stamp = os.urandom(8).hex()
        name = f"{space}-{stamp}"
        folder = self.layout.list_set(name)
        folder.mkdir(parents=True, exist_ok=False)
        self._new_sets.append(name)
        return name, str(folder)

    # -- life cycle --------------------------------------------------------------------------------
    def __enter__(self) -> "WriteSession":
        self.layout.make_root()
        self._lock.acquire()
        try:
            finish_interrupted_commit(self.layout)
            self.version = read_version(self.layout)
            remove_leftovers(self.layout, self.version)
        except BaseException:
            self._lock.release()
            raise
        self._token = ACTIVE_SESSION.set(self)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._token is not None:
                ACTIVE_SESSION.reset(self._token)
                self._token = None
            self.discard()
        finally:
            self._lock.release()

    def discard(self) -> None:
        """Forget what was staged and not committed: temp files and new list sets are removed."""
        for tmp in self._staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        self._staged.clear()
        self._removals.clear()
        self._pending.clear()
        self._after.clear()
        named = set((self.version.get("lists") or {}).values())
        for name in self._new_sets:
            if name not in named:
                shutil.rmtree(self.layout.list_set(name), ignore_errors=True)
        self._new_sets.clear()

    @property
    def dirty(self) -> bool:
        """Whether anything waits for a commit (staged files, removals, noted changes, actions)."""
        return bool(self._staged or self._removals or self._pending or self._after)

    @property
    def staged(self) -> dict[str, str]:
        """target -> temp of the files staged so far (read-only view)."""
        return dict(self._staged)

    def commit(self, changes: dict[str, Any] | None = None) -> dict[str, Any]:
        """Move every staged file into place, remove what was marked, publish the next version; returns it.

        ``changes``: fields of the version record this command sets
        (:func:`reelsim.storage.version.next_version`). May be called more
        than once in a session (each call is one version).

        Raises
        ------
        StoreWriteError
            The journal could not be written (full or read-only disk): nothing
            was moved, the store keeps its version.
        """
        self.note(changes or {})
        previous = self.version
        new = next_version(previous, self.command, self._pending)
        journal = {"format": JOURNAL_FORMAT, "version": new,
                   "renames": [[tmp, path] for path, tmp in self._staged.items()],
                   "removals": list(self._removals)}
        write_text_atomic(self.layout.commit_journal, json.dumps(journal), immediate=True)  # ASCII: paths may hold surrogates
        fault_point("journal")
        apply_journal(self.layout, journal)
        self._staged.clear()
        self._removals.clear()
        self._pending = {}
        self.version = new
        keep = set((new.get("lists") or {}).values()) | set((previous.get("lists") or {}).values())
        remove_unnamed_sets(self.layout, keep)
        self._new_sets = [n for n in self._new_sets if n not in keep]
        after, self._after = self._after, []
        for action in after:
            action()
        return new


def _inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` lies below the folder ``root`` (both made absolute; ``root`` itself is not below)."""
    return os.path.abspath(path).startswith(os.path.abspath(root) + os.sep)


def apply_journal(layout: StoreLayout, journal: dict) -> None:
    """Make a journal's moves and removals (each at most once), publish its version, remove the journal."""
    for tmp, path in journal["renames"]:
        if os.path.exists(tmp):
            os.replace(tmp, path)
            fault_point("rename")
    for path in journal["removals"]:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.remove(path)
    write_text_atomic(layout.version_file, json.dumps(journal["version"], indent=1, ensure_ascii=False),
                      immediate=True)
    fault_point("version")
    os.remove(layout.commit_journal)


def read_journal(layout: StoreLayout) -> dict | None:
    """The journal of an unfinished commit, None when there is none.

    Raises
    ------
    DamagedStoreError
        The journal cannot be read (a kill while it was written cannot cause this: it is written atomically).
    """
    path = layout.commit_journal
    try:
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DamagedStoreError(path, f"cannot be read as a commit journal ({e})", "lists") from None
    if not (isinstance(body, dict) and body.get("format") == JOURNAL_FORMAT and isinstance(body.get("renames"), list)
            and isinstance(body.get("removals"), list) and isinstance(body.get("version"), dict)):
        raise DamagedStoreError(path, "not a reelsim commit journal", "lists")
    for tmp, path_ in body["renames"]:
        if not (_inside(tmp, layout.root) and _inside(path_, layout.root)):
            raise DamagedStoreError(layout.commit_journal, "names a file outside the store", "lists")
    return body


def finish_interrupted_commit(layout: StoreLayout) -> bool:
    """Finish the commit a killed writer left (the caller holds the lock); whether there was one."""
    journal = read_journal(layout)
    if journal is None:
        return False
    apply_journal(layout, journal)
    return True


def remove_leftovers(layout: StoreLayout, version: dict) -> list[str]:
    """Remove what killed writers left (the caller holds the lock): staged temp files, unnamed list sets."""
    removed = leftovers(layout)
    for path in removed:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    removed += remove_unnamed_sets(layout, set((version.get("lists") or {}).values()))
    return removed


def _space_dirs(layout: StoreLayout) -> list:
    if not layout.lists_dir.is_dir():
        return []
    return [layout.lists_dir / e.name for e in os.scandir(layout.lists_dir)
            if e.is_dir(follow_symlinks=False) and e.name not in ("sets", layout.knn_checkpoint.name)]


def remove_unnamed_sets(layout: StoreLayout, keep: set[str]) -> list[str]:
    """Remove list sets that no kept version names; the paths removed."""
    folder = layout.list_sets_dir
    if not folder.is_dir():
        return []
    gone = []
    for entry in os.scandir(folder):
        if entry.name not in keep:
            path = os.path.join(folder, entry.name)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            gone.append(path)
    return gone


def leftovers(layout: StoreLayout) -> list[str]:
    """What :func:`remove_leftovers` would remove, without removing it (for ``reelsim verify``)."""
    found = []
    for folder in (layout.index_dir, layout.lists_dir, layout.learned_dir, *_space_dirs(layout)):
        if folder.is_dir():
            found += [e.path for e in os.scandir(folder) if e.is_file(follow_symlinks=False) and _TEMP.match(e.name)]
    return found


@contextlib.contextmanager
def writing(store: str | os.PathLike, command: str):
    """The write session open on ``store`` in this context, or a new one for ``command``.

    Lets a function that writes be called on its own (it takes the lock, and
    commits what it wrote when its block ends without error) or from a
    command that already holds the store (it joins that session, whose owner
    commits).
    """
    active = active_session(store)
    if active is not None:
        yield active
        return
    with WriteSession(store, command) as session:
        yield session
        if session.dirty:
            session.commit()


def active_session(store: str | os.PathLike) -> "WriteSession | None":
    """The write session open on ``store`` in this context, if any."""
    active = ACTIVE_SESSION.get()
    if isinstance(active, WriteSession) and os.path.abspath(active.layout.root) == os.path.abspath(store):
        return active
    return None


T = TypeVar("T")


def read_consistent(layout: StoreLayout, read: Callable[[dict], T], *, wait_s: float = 10.0) -> T:
    """``read(version)`` of a version no commit overlapped: retried while a commit is in progress.

    A journal left by a killed writer is finished first (taking the lock for
    that moment) when nobody holds the store.

    Raises
    ------
    StoreError
        A commit still in progress after ``wait_s`` seconds, or an
        interrupted one that cannot be finished from here (read-only store).
    """
    deadline = time.monotonic() + wait_s
    while True:
        if layout.commit_journal.exists():
            _await_commit(layout, deadline)
            continue
        token = version_token(layout)
        version = read_version(layout)
        try:
            out = read(version)
        except (StoreError, OSError):
            if version_token(layout) != token or layout.commit_journal.exists():
                continue  # a commit replaced what we were reading: read the new version
            raise
        if version_token(layout) == token and not layout.commit_journal.exists():
            return out


def _await_commit(layout: StoreLayout, deadline: float) -> None:
    """Wait for a commit in progress; finish one whose writer is gone."""
    owner = read_lock(layout.lock)
    if owner is None or (owner and is_stale(owner, lock_record()["host"])):
        try:
            with WriteSession(layout.root, "recover"):
                return
        except StoreError:
            if owner is None and not layout.commit_journal.exists():
                return
            if time.monotonic() > deadline:
                raise DamagedStoreError(layout.commit_journal, "a commit was interrupted and cannot be finished "
                                        "from here (is the store read-only?)", "lists") from None
    if time.monotonic() > deadline:
        raise StoreError(f"a commit to {layout.root} has been in progress for too long "
                         f"({layout.commit_journal} is still there); try again")
    time.sleep(0.01)


__all__ = ["WriteSession", "active_session", "apply_journal", "finish_interrupted_commit", "leftovers", "read_consistent",
           "read_journal", "remove_leftovers", "version_token", "writing"]
