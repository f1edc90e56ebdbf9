"""One writer per store: a lock file (``STORE/run.lock``, :attr:`StoreLayout.lock`) naming its owner.

The file is created with ``O_CREAT | O_EXCL`` (atomic, also on NFS v3+ and
other shared filesystems), and holds JSON ``{"host", "pid", "started_utc",
"command"}``.  A second ``reelsim run`` on the same store is refused with a
message naming the owner (:class:`StoreLockedError`, exit code 2).  A lock
left by a process that no longer exists on *this* host (a driver killed with
SIGKILL) is taken over with a warning; a lock from another host cannot be
checked from here and is never taken over (remove the file by hand once that
run is known to be gone).

Examples
--------
>>> with StoreLock(store):            # doctest: +SKIP
...     run_the_batch()
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
from pathlib import Path

from reelsim.errors import StoreError
from reelsim.reporting import Progress, warn
from reelsim.storage.atomic import special_file_problem
from reelsim.storage.layout import StoreLayout


class StoreLockedError(StoreError):
    """Another run holds the store's lock."""


def lock_record() -> dict:
    """Who we are: host, pid, start time (UTC, ISO 8601) and command line."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv[:1] + sys.argv[1:8]),
    }


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(path: Path) -> dict | None:
    """The lock's record, ``{}`` when unreadable (being written), ``None`` when absent."""
    if special_file_problem(path) is not None:
        return {}  # never opened (a FIFO would block): unreadable, as while it is written
    try:
        return json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def describe_owner(rec: dict) -> str:
    """Who holds a lock, in one line fit for a terminal (the lock file's fields are anyone's text).

    Examples
    --------
    >>> describe_owner({"pid": 7, "host": "h\x1b[2J", "started_utc": "t", "command": "reelsim run \u202ex"})
    'pid 7 on host h\ufffd[2J, started t (reelsim run \ufffdx)'
    """
    text = (f"pid {rec.get('pid', '?')} on host {rec.get('host', '?')}, started {rec.get('started_utc', '?')}"
            f" ({rec.get('command', '')})")
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in " ".join(text.split()))


def is_stale(rec: dict, host: str) -> bool:
    """A lock whose owner is known to be dead: same host, pid not running."""
    return rec.get("host") == host and isinstance(rec.get("pid"), int) and not pid_alive(rec["pid"])


class StoreLock:
    """Exclusive lock on a store for the duration of a ``with`` block; a stale lock taken over is a warning to ``progress``.

    Raises
    ------
    StoreLockedError
        When a live process (or one on another host) holds the lock.
    """

    def __init__(self, store: str | os.PathLike, progress: Progress | None = None):
        self.path = StoreLayout(store).lock
        self.record = lock_record()
        self.progress = progress

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:  # a read-only store (permissions, a read-only mount), a full disk
            raise StoreError(f"cannot write to store {self.path.parent} ({e.strerror}): its lock file "
                             f"{self.path.name} cannot be created") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.record, f)
        return True

    def acquire(self) -> None:
        StoreLayout(self.path.parent).make_root()
        if self._try_create():
            return
        rec = read_lock(self.path)
        if rec is not None and is_stale(rec, self.record["host"]):
            warn(self.progress, f"taking over the lock on {self.path.parent} left by a process that no longer "
                       f"runs ({describe_owner(rec)})")
            if read_lock(self.path) == rec:  # still that dead owner's lock (narrows a race with a 3rd run)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
            if self._try_create():
                return
            rec = read_lock(self.path)
        who = describe_owner(rec) if rec else "another process (lock file being written)"
        raise StoreLockedError(
            f"store {self.path.parent} is in use by {who}; wait for that run to finish, or, if it is gone "
            f"for good, delete {self.path}")

    def release(self) -> None:
        if read_lock(self.path) == self.record:
            os.remove(self.path)

    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
