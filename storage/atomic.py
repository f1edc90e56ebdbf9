"""Store files: atomic writes, and reads that name the damaged file.

Writes go to a temp file beside the target, moved onto it with
``os.replace``: readers see the old file or the new one, never half of one
(as faiss ``contrib/big_batch_search.py::write_checkpoint`` does). Every file
reelsim writes into a store goes through :func:`atomic_path`.

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
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from reelsim.errors import DamagedStoreError, StoreError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    Raises
    ------
    StoreError
        If the target folder does not exist.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StoreError(f"cannot write {path!r}: folder {folder!r} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
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
    if not _encodes(path):
        folder, name = os.path.split(os.path.abspath(path))
        if not (_encodes(name) and os.path.isdir("/proc/self/fd")):
            raise StoreError(f"cannot open {path!r}: its name is not valid UTF-8; move the store to a path "
                             "that is")
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            yield f"/proc/self/fd/{fd}/{name}"
        finally:
            os.close(fd)
        return
    yield path


def _encodes(text: str) -> bool:
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
    path = check_store_file(path, redo)
    if not os.path.isfile(path):
        raise StoreError(f"no {what} at {path!r}")
    try:
        with native_path(path) as name:
            return read(name)
    except errors as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise DamagedStoreError(path, f"cannot be read as {what} ({detail})", redo) from None
