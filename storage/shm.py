"""Large arrays handed between processes of one machine through shared memory.

The GPU path's CPU workers cut clips from videos and a GPU worker embeds
them.  On one machine (a GPU server's local cluster) the clips need not
travel through Dask at all: :meth:`SharedArray.write` puts an array in a
``.npy`` file under ``/dev/shm`` (RAM; a folder on disk where there is no
``/dev/shm``) and returns a small, picklable handle; the GPU worker memory-
maps it (:meth:`SharedArray.load`) and reads it straight into its staging
buffer.  Files are written atomically (temp file + ``os.replace``), so a
reader never sees half an array, and a task that runs again rewrites the
same file.  The driver removes the whole folder at the end of the run
(:func:`remove_transfer_dir`).

Examples
--------
>>> import numpy as np, tempfile
>>> folder = tempfile.mkdtemp()
>>> h = SharedArray.write(np.arange(6, dtype=np.uint8).reshape(2, 3), folder, "a")
>>> h.shape, h.load()[1].tolist()
((2, 3), [3, 4, 5])
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelsim.storage.atomic import atomic_path

#: where shared-memory files go when the machine has it
SHM_ROOT = Path("/dev/shm")


@dataclass(frozen=True)
class SharedArray:
    """A handle on an array stored in a ``.npy`` file that every process of this machine can map.

    path : the file.
    shape, dtype : of the array (``dtype`` as numpy's string, e.g. ``"|u1"``).
    """

    path: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def write(cls, array: np.ndarray, folder: str | os.PathLike, name: str) -> "SharedArray":
        """Store ``array`` as ``folder/name.npy`` (atomically) and return its handle."""
        path = os.path.join(os.fspath(folder), f"{name}.npy")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        return cls(path, tuple(int(n) for n in array.shape), array.dtype.str)

    def load(self) -> np.ndarray:
        """The array, memory-mapped read-only (pages are read when used)."""
        if not self.shape or 0 in self.shape:
            return np.empty(self.shape, np.dtype(self.dtype))  # numpy cannot map an empty file region
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


def transfer_dir(run_id: str, fallback: str | os.PathLike) -> Path:
    """The folder for one run's shared arrays: ``/dev/shm/reelsim-<run_id>``, else under ``fallback``.

    ``fallback`` (e.g. the store's scratch folder) is used where ``/dev/shm``
    does not exist or cannot be written; the folder is created.
    """
    if SHM_ROOT.is_dir() and os.access(SHM_ROOT, os.W_OK):
        folder = SHM_ROOT / f"reelsim-{run_id}"
    else:
        folder = Path(fallback) / f"transfer-{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_transfer_dir(folder: str | os.PathLike) -> None:
    """Delete a run's shared-array folder and everything in it (missing is fine)."""
    shutil.rmtree(folder, ignore_errors=True)
