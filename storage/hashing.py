"""Content hashes of inputs and weights files (what a shard's ``input_sha256`` and provenance record).

Examples
--------
>>> sha256_text("bananas")[:12]
'e4ba5cbd251c'
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def sha256_text(text: str) -> str:
    """Hex sha256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    The result is cached per (path, size, mtime), so asking twice is free.
    """
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
