"""Fault injection for the store's write path, for tests: kill the process or fill the disk at a chosen step.

Set ``REELSIM_FAULT`` in a command's environment to ``ACTION:POINT:N``:

- ``ACTION`` ``kill`` sends the process SIGKILL (as ``kill -9`` or the OOM
  killer would), and its whole process group with it when it leads one (a
  job killed with its local Dask workers, as a batch system kills a job:
  no orphaned worker goes on logging about its lost scheduler); ``enospc`` makes the write fail as a full disk does
  (``OSError(ENOSPC)``; only at ``write``);
- ``POINT`` is where: ``write`` (a store file written, before it is moved or
  staged), ``journal`` (a commit's journal written), ``rename`` (one staged
  file moved into place), ``version`` (the new version.json written);
- ``N`` counts occurrences of ``POINT`` in the process, from 1.

Without the variable (always, outside tests) :func:`fault_point` returns at
once. ``tests/test_versions.py`` kills ``train``, ``add`` and ``lists
--space`` at each of their steps and fills the disk at each write, then
checks that ``reelsim verify`` calls the store whole or names the damage,
and that the named command repairs it.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal

_COUNTS: dict[str, int] = {}


def fault_point(point: str) -> None:
    """Reach ``point`` of the write path: act when ``REELSIM_FAULT`` asks for its N-th occurrence."""
    spec = os.environ.get("REELSIM_FAULT")
    if not spec or multiprocessing.parent_process() is not None:  # the command's own process, not its workers
        return
    try:
        action, where, n = spec.split(":")
        n = int(n)
    except ValueError:
        return
    if where != point:
        return
    _COUNTS[point] = _COUNTS.get(point, 0) + 1
    if _COUNTS[point] != n:
        return
    if action == "kill":
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device")


def fault_count(point: str) -> int:
    """How many times ``point`` was reached in this process (tests size their sweeps with it)."""
    return _COUNTS.get(point, 0)
