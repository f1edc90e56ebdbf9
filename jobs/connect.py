"""Reaching a Dask cluster: an existing scheduler that answers, and a store path Dask can carry.

``--scheduler ADDR`` is checked before any work (:func:`check_scheduler`): a
TCP connection to the scheduler's port, which a closed port refuses at once
and an unreachable host fails within :data:`PROBE_TIMEOUT_S`, instead of the
client's own retries for 30 s and a traceback. The client itself is then made
by :func:`scheduler_client`, whose failure is a :class:`UsageError` too.

Dask sends paths (a worker's scratch folder, the store) in messages encoded
as UTF-8, so a store whose path has bytes that are not UTF-8 cannot run on a
cluster (:func:`check_cluster_store`); the commands that run in one process
(``similar``, ``lists`` without ``--workers``, ``verify``, ``export``,
``search``, ``train``) work on it.
"""

from __future__ import annotations

import os
import socket

from reelsim.errors import StoreError, UsageError
from reelsim.jobs.tables import terminal_safe
from reelsim.storage.atomic import encodes_utf8

#: seconds to wait for a scheduler's port to accept a connection
PROBE_TIMEOUT_S = 5.0
#: seconds the Dask client waits to connect (after the probe succeeded)
CONNECT_TIMEOUT_S = 30


def scheduler_host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a scheduler address (``tcp://host:8786``, ``host:8786``, ``tls://...``); None for
    transports without one (``inproc://``, ``ucx://``: not probed).

    Raises
    ------
    UsageError
        Not an address (e.g. no port).

    Examples
    --------
    >>> scheduler_host_port("tcp://10.0.0.5:8786"), scheduler_host_port("inproc://x") is None
    (('10.0.0.5', 8786), True)
    """
    from distributed.comm import get_address_host_port

    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme not in ("tcp", "tls", "ws", "wss"):
        return None
    try:
        host, port = get_address_host_port(address)
    except ValueError as e:
        raise UsageError(f"--scheduler {terminal_safe(address)!r} is not a scheduler address like "
                         f"tcp://host:8786 ({e})") from None
    return host, int(port)


def check_scheduler(address: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """:class:`UsageError` unless ``address`` (when given) accepts a TCP connection within ``timeout_s``."""
    if not address:
        return
    where = scheduler_host_port(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout_s):
            pass
    except OSError as e:
        why = (f"no answer within {timeout_s:g} s" if isinstance(e, TimeoutError)
               else e.strerror or str(e) or type(e).__name__)
        raise UsageError(f"--scheduler {terminal_safe(address)}: cannot connect ({why}); is a Dask scheduler "
                         "running there (`dask scheduler`)?") from None


def scheduler_client(address: str):
    """A ``distributed.Client`` on the scheduler at ``address``; :class:`UsageError` when it cannot connect."""
    from dask.distributed import Client

    check_scheduler(address)
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as e:
        raise UsageError(f"--scheduler {terminal_safe(address)}: cannot connect ({terminal_safe(e)})") from None


def check_cluster_store(store: str | os.PathLike) -> None:
    """:class:`StoreError` when the store's path cannot travel in Dask's messages (not UTF-8)."""
    path = os.fspath(store)
    if not encodes_utf8(os.path.abspath(path)):
        raise StoreError(f"the store path {terminal_safe(path)} is not valid UTF-8, which a Dask cluster cannot "
                         "carry in its messages: run this on a store whose path is UTF-8 (`similar`, `lists` "
                         "without --workers, `verify`, `export` and `search` work on this one)")
