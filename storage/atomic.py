"""Store files: atomic writes, and reads that name the damaged file.

Writes go to a temp file beside the target, moved onto it with
``os.replace``: readers see the old file or the new one, never half of one
(as faiss ``contrib/big_batch_search.py::write_checkpoint`` does). Every file
reelsim writes into a store goes through :func:`atomic_path`.

Reads go through :func:`read_checked`, so a missing or damaged file is a
:class:`StoreError` naming it, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
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
