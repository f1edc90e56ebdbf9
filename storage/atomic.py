"""Atomic file writes: a temp file beside the target, moved onto it with ``os.replace``.

Readers see the old file or the new one, never half of one (as faiss
``contrib/big_batch_search.py::write_checkpoint`` does).  Every file reelsim
writes into a store goes through :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from reelsim.errors import StoreError


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
