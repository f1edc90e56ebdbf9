"""Store files: atomic writes, and reads that name the damaged file.

Writes go to a temp file beside the target, moved onto it with
``os.replace``: readers see the old file or the new one, never half of one
(as faiss ``contrib/big_batch_search.py::write_checkpoint`` does). Every file
reelsim writes into a store goes through :func:`atomic_path`.

Inside a write session (:class:`reelsim.storage.session.WriteSession`, the
one write path of a store) the move is deferred: the temp file is *staged*,
and the session moves every staged file at its commit, as one set, with a
journal, then publishes the store's new version. Which files a session
stages is the layout's rule (:meth:`reelsim.storage.layout.StoreLayout.is_versioned`);
the others (shards, checkpoints, report.json) are moved at once.

A write that fails for lack of space or permission is a :class:`StoreWriteError`
naming the file ("cannot write PATH: no space left on device"); its temp
file is removed and the file it would have replaced is untouched.

Reads go through :func:`read_checked`, so a missing or damaged file is a
:class:`StoreError` naming it, never a traceback.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

from reelsim.errors import DamagedStoreError, StoreError, StoreWriteError
from reelsim.storage.faults import fault_point


class Stager(Protocol):
    """What :func:`atomic_path` asks of an open write session (:class:`reelsim.storage.session.WriteSession`)."""

    def stages(self, path: str) -> bool:
        """Whether the move of ``path`` (absolute) waits for the session's commit."""

    def stage(self, tmp: str, path: str) -> None:
        """Record that ``tmp`` is to replace ``path`` at the commit."""

    def unstage(self, tmp: str) -> None:
        """Forget a staged temp file (its writer failed; the file is removed)."""

    def defer_remove(self, path: str) -> None:
        """Remove ``path`` at the commit (a file the new version no longer has)."""


#: the write session open in this context (thread, task), if any
ACTIVE_SESSION: contextvars.ContextVar[Stager | None] = contextvars.ContextVar("reelsim_write_session", default=None)

#: errno values that mean "this disk cannot take the write" rather than a bug
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}
_WRITE_TEXTS = {"no space left": errno.ENOSPC, "read-only file system": errno.EROFS, "disk quota": errno.EDQUOT,
                "permission denied": errno.EACCES}


def write_errno(e: BaseException) -> int | None:
    """The errno of a failed write that the disk caused (full, read-only, no permission), else None.

    Libraries wrap OSError differently (h5py and pyarrow keep the text, not
    always the number), so the message is read too.

    Examples
    --------
    >>> write_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    True
    >>> write_errno(OSError("IOError: [Errno 30] Read-only file system")) == errno.EROFS
    True
    >>> write_errno(ValueError("no")) is None
    True
    """
    if not isinstance(e, OSError):
        return None
    if e.errno in _WRITE_ERRNOS:
        return e.errno
    text = str(e).lower()
    return next((n for t, n in _WRITE_TEXTS.items() if t in text), None)


def write_error(path: str | os.PathLike, e: OSError) -> StoreWriteError:
    """The one-line error of a write the disk refused: ``cannot write PATH: no space left on device``."""
    n = write_errno(e)
    why = os.strerror(n).lower() if n is not None else (e.strerror or str(e)).lower()
    return StoreWriteError(os.fspath(path), why)


def _tmp_beside(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StoreError(f"cannot write {path!r}: folder {folder!r} does not exist")
    return os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, immediate: bool = False) -> Iterator[str]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    Inside a write session that stages ``path`` (and unless ``immediate``),
    the move happens at the session's commit instead (module docstring).

    Raises
    ------
    StoreError
        If the target folder does not exist.
    StoreWriteError
        The disk refused the write (full, read-only, no permission); nothing is left behind.
    """
    path = os.path.abspath(os.fspath(path))
    tmp = _tmp_beside(path)
    session = None if immediate else ACTIVE_SESSION.get()
    staged = session is not None and session.stages(path)
    kept = False
    try:
        yield tmp
        fault_point("write")
        if staged:
            session.stage(tmp, path)
            kept = True
        else:
            os.replace(tmp, path)
    except OSError as e:
        if write_errno(e) is not None:
            raise write_error(path, e) from None
        raise
    finally:
        if not kept:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)


def remove_file(path: str | os.PathLike, *, at_commit: bool = False) -> None:
    """Remove ``path`` (absent is fine); inside a session that stages it, at the commit.

    ``at_commit``: inside a session, at the commit even though the session
    does not stage the file's writes: a file the committed version still
    names (an index file that only the staged index manifest drops).
    """
    path = os.path.abspath(os.fspath(path))
    session = ACTIVE_SESSION.get()
    if session is not None and (at_commit or session.stages(path)):
        session.defer_remove(path)
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, immediate: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (staged in a write session, as :func:`atomic_path`)."""
    with atomic_path(path, immediate=immediate) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


T = TypeVar("T")


def read_checked(path: str | os.PathLike, read: Callable[[str], T], what: str,
                 errors: tuple[type[BaseException], ...] = (OSError, ValueError), *, redo: str = "run") -> T:
    """``read(path)``, with a missing file a :class:`StoreError` and a damaged one a :class:`DamagedStoreError`.

    ``what`` says what the file should be (``"a FAISS index"``); ``redo`` which
    command rewrites it (``run`` or ``lists``). Either message names the file.

    Examples
    --------
    >>> read_checked("/nonexistent/x.json", open, "an index manifest")
    Traceback (most recent call last):
    reelsim.errors.StoreError: no an index manifest at '/nonexistent/x.json'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise StoreError(f"no {what} at {path!r}")
    try:
        return read(path)
    except errors as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise DamagedStoreError(path, f"cannot be read as {what} ({detail})", redo) from None
