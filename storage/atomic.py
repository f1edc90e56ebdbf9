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
:class:`StoreError` naming it, never a traceback. Every store reader, whatever
library opens the file (h5py, numpy, Arrow, FAISS, json), first calls
:func:`check_store_file` (``read_checked`` does): a FIFO, a device, a socket, a
folder, or a symbolic link that leads out of the store, in the place of a
store file is damage and is never opened (a FIFO would block the reader for
ever, ``/dev/zero`` would fill its memory).

C libraries (FAISS, Arrow) take a path as UTF-8 text, so they cannot open a
store whose path is not valid UTF-8 (bytes that Python carries as
``surrogateescape`` characters): :func:`native_path` hands them a path through
the folder's open descriptor instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from reelsim.errors import DamagedStoreError, StoreError, StoreWriteError
from reelsim.storage.faults import fault_point


class Stager(Protocol):
    """What :func:`atomic_path` asks of an open write session (:class:`reelsim.storage.session.WriteSession`)."""

    def stages(self, path: str) -> bool:
        """Whether the move of ``path`` (absolute) waits for the session's commit."""

    def holds(self, path: str) -> bool:
        """Whether ``path`` (absolute) is inside the session's store (its removal waits for the commit)."""

    def stage(self, tmp: str, path: str) -> None:
        """Record that ``tmp`` is to replace ``path`` at the commit."""

    def defer_remove(self, path: str) -> None:
        """Remove ``path`` at the commit (a file the new version no longer has)."""

    def staged_temp(self, path: str) -> str | None:
        """The temp file staged to replace ``path`` (absolute), if any."""


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


def own_path(path: str | os.PathLike) -> str:
    """What to read to see ``path`` as this context's write session left it: its staged temp file when the
    session wrote it (read-your-own-writes before the commit), else ``path``."""
    session = ACTIVE_SESSION.get()
    tmp = session.staged_temp(os.path.abspath(os.fspath(path))) if session is not None else None
    return tmp or os.fspath(path)


def remove_file(path: str | os.PathLike) -> None:
    """Remove ``path`` (absent is fine); inside a write session on its store, at the commit.

    Every removal in a store waits for the commit, also of files written at
    once (an index file of the previous build): the version before the
    commit still refers to them.
    """
    path = os.path.abspath(os.fspath(path))
    session = ACTIVE_SESSION.get()
    if session is not None and session.holds(path):
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

#: how far below its store a store file can be (``shards/<2 hex>/<key>.h5``, ``lists/<space>/...``)
STORE_DEPTH = 3


def store_root_of(path: str | os.PathLike) -> Path | None:
    """The store that ``path`` (a file of a store) belongs to: its nearest ancestor, at most
    :data:`STORE_DEPTH` folders up, that has a ``shards/`` or ``index/`` folder; None when there is none.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "index").mkdir()
    >>> store_root_of(root / "lists" / "learned" / "neighbors.parquet") == root
    True
    >>> store_root_of(Path(tempfile.mkdtemp()) / "x.json") is None
    True
    """
    for folder in list(Path(os.path.abspath(path)).parents)[:STORE_DEPTH]:
        if (folder / "shards").is_dir() or (folder / "index").is_dir():
            return folder
    return None


#: what each kind of special file is called in messages
_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def special_file_problem(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str | None:
    """What makes ``path`` unfit to be opened as a store file, without opening it; None when it is fit or absent.

    Unfit: a FIFO, a device, a socket or a folder (followed through symbolic
    links), or a file that symbolic links (of the file or of a folder on its
    path) lead outside the store ``root`` (default:
    :func:`store_root_of`; without one, outside the
    file's own folder). Only ``lstat``/``stat`` are called.

    Examples
    --------
    >>> special_file_problem("/dev/null")
    'it is a character device, not a file reelsim wrote; it was not opened'
    >>> special_file_problem("/nonexistent/x.json") is None
    True
    """
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except OSError:  # absent (or its folder is): the caller says what is missing
        return None
    real = os.path.realpath(path)
    if real != os.path.abspath(path):  # a symbolic link on the way
        root = store_root_of(path) if root is None else root
        home = os.path.realpath(root if root is not None else os.path.dirname(os.path.abspath(path)))
        if os.path.commonpath([real, home]) != home:
            return f"it leads out of the store, to {real}, through a symbolic link; it was not opened"
        try:
            st = os.stat(path)
        except OSError:  # a dangling link: absent
            return None
    for test, kind in _SPECIAL:
        if test(st.st_mode):
            return f"it is {kind}, not a file reelsim wrote; it was not opened"
    return None


def check_store_file(path: str | os.PathLike, redo: str = "run", *, root: str | os.PathLike | None = None) -> str:
    """``os.fspath(path)`` after :func:`special_file_problem` found nothing; an absent file passes.

    Raises
    ------
    DamagedStoreError
        A special file, or a link out of the store; the message names the
        file and ``redo``, the command that rewrites it.
    """
    problem = special_file_problem(path, root)
    if problem is not None:
        raise DamagedStoreError(os.fspath(path), problem, redo)
    return os.fspath(path)


def require_store_file(path: str | os.PathLike, what: str, redo: str = "run") -> str:
    """``os.fspath(path)`` when it is a regular file that :func:`check_store_file` passes.

    Raises
    ------
    StoreError
        ``path`` is missing (``no WHAT at PATH``); :class:`DamagedStoreError`
        when it is a special file or a link out of the store (never opened).
    """
    path = check_store_file(path, redo)
    if not os.path.isfile(path):
        raise StoreError(f"no {what} at {path!r}")
    return path


@contextlib.contextmanager
def native_path(path: str | os.PathLike) -> Iterator[str]:
    """``path`` as text a C library (FAISS, Arrow) can open or create, for the duration of the block.

    That is ``path`` itself when it encodes as UTF-8. Otherwise (a folder name
    with bytes that are not UTF-8, carried as ``surrogateescape`` characters)
    its folder is opened and the path given through the descriptor,
    ``/proc/self/fd/<fd>/<name>`` (the file names reelsim gives are ASCII).

    Raises
    ------
    StoreError
        The path is not UTF-8 and this system has no ``/proc/self/fd``.
    """
    path = os.fspath(path)
    if not encodes_utf8(path):
        folder, name = os.path.split(os.path.abspath(path))
        if not (encodes_utf8(name) and os.path.isdir("/proc/self/fd")):
            raise StoreError(f"cannot open {path!r}: its name is not valid UTF-8; move the store to a path "
                             "that is")
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            yield f"/proc/self/fd/{fd}/{name}"
        finally:
            os.close(fd)
        return
    yield path


def encodes_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: False for lone surrogates (bytes that were not UTF-8 in a path,
    a JSON ``"\\ud800"`` escape).

    Examples
    --------
    >>> encodes_utf8("café"), encodes_utf8("caf\\udce9")
    (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_checked(path: str | os.PathLike, read: Callable[[str], T], what: str,
                 errors: tuple[type[BaseException], ...] = (OSError, ValueError), *, redo: str = "run") -> T:
    """``read(path)``, with a missing file a :class:`StoreError` and a damaged one a :class:`DamagedStoreError`.

    ``what`` says what the file should be (``"a FAISS index"``); ``redo`` which
    command rewrites it (``run`` or ``lists``). Either message names the file.
    A special file or a link out of the store is not opened (:func:`check_store_file`).

    Examples
    --------
    >>> read_checked("/nonexistent/x.json", open, "an index manifest")
    Traceback (most recent call last):
    reelsim.errors.StoreError: no an index manifest at '/nonexistent/x.json'
    """
    path = require_store_file(path, what, redo)
    try:
        with native_path(path) as name:
            return read(name)
    except errors as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise DamagedStoreError(path, f"cannot be read as {what} ({detail})", redo) from None
