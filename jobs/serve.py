"""``reelsim serve``: the store's answers over HTTP, as JSON, from one shared :class:`StoreReader`.

Endpoints (GET; HEAD answers the same status without a body)::

    /similar/{id}?k=10&space=content[&weights=text=0]   what `reelsim similar ID --json` prints
    /search?q=TEXT&k=10[&space=content]                   what `reelsim search TEXT --json` prints
    /items/{id}                                           {"id", "kind", "title"}
    /health                                               {"version", "items", "spaces", "model", "blocklist"}

``{id}`` is the item id percent-encoded as one path segment (an id may hold
``/``, spaces, ``%``, ``?`` or any Unicode: ``urllib.parse.quote(id, safe="")``).

An error is JSON ``{"error": MESSAGE, "exit_code": N}`` where N is the exit
code the CLI gives for the same error; the HTTP status follows
:data:`ERRORS` (unknown item 404, bad request 400, banned query 403, a store
that cannot answer now 503, anything else 500 with its traceback in the
service's log, never in the body).

Every request reads the store's current version: after ``reelsim add``,
``lists`` or ``train`` commits, the next request answers from the new one
(the reader checks with two ``stat`` calls, :mod:`reelsim.similarity.answer`); a
request that arrives during the commit waits for it. Answers from the stored
lists (microseconds: memory-mapped arrays) run on the event loop; what may
take longer (live answers, ``/items`` on a fresh version, text search) runs
in threads.

The stack is a plain ASGI callable (:class:`Service`) run by granian, an
ASGI server whose HTTP and socket work runs in Rust threads beside the
Python interpreter, in worker processes that share the memory-mapped lists:
docs/serving.md says why, with measured figures against uvicorn.

Examples
--------
>>> run_service("out/", host="127.0.0.1", port=8080, workers=2)    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from reelsim.config import parse_weights
from reelsim.errors import (
    BannedQueryError,
    DamagedStoreError,
    ReelsimError,
    StoreError,
    UnknownItemError,
    UsageError,
    WeightsNotFoundError,
)
from reelsim.similarity.answer import StoreReader
from reelsim.similarity.textsearch import BANNED_THRESHOLD, read_banned, search, search_json
from reelsim.storage.lock import StoreLockedError

log = logging.getLogger("reelsim.serve")

#: (error class, HTTP status, the CLI's exit code for it), most specific first: the first match answers
ERRORS: list[tuple[type[BaseException], int, int]] = [
    (UnknownItemError, 404, 2),
    (UsageError, 400, 2),
    (BannedQueryError, 403, 4),
    (StoreLockedError, 503, 2),
    (DamagedStoreError, 503, 2),
    (StoreError, 503, 2),
    (WeightsNotFoundError, 500, 2),
    (ReelsimError, 500, 1),
]
#: query parameters of each endpoint
PARAMS = {"similar": ("k", "space", "weights"), "search": ("q", "k", "space"), "items": (), "health": ()}
#: the largest k a request may ask for (a k beyond the stored lists is computed live, over the whole catalog)
MAX_K = 1000


class HTTPError(Exception):
    """A request the service refuses before it reaches the store (bad path or method)."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or []


def error_status(e: BaseException) -> tuple[int, int]:
    """(HTTP status, CLI exit code) of an error (:data:`ERRORS`; anything else: 500 and 1)."""
    for cls, status, code in ERRORS:
        if isinstance(e, cls):
            return status, code
    return 500, 1


def path_id(raw: bytes, prefix: bytes) -> str:
    """The item id in ``raw`` (a request's percent-encoded path) after ``prefix``, decoded.

    Examples
    --------
    >>> path_id(b"/similar/a%2Fb%20c%25%C3%A9", b"/similar/")
    'a/b c%é'
    """
    encoded = raw[len(prefix):]
    if not encoded:
        raise UsageError(f"no item id in the path: {prefix.decode()}{{id}}, the id percent-encoded")
    try:
        return unquote_to_bytes(encoded).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise UsageError("the item id in the path is not UTF-8 once percent-decoded") from None


def form_decode(text: bytes) -> str:
    """One name or value of a query string, decoded (``+`` is a space, ``%XX`` a byte, UTF-8).

    Examples
    --------
    >>> form_decode(b"wireless+head%C3%A9phones"), form_decode(b"a%2Bb")
    ('wireless headéphones', 'a+b')
    """
    if b"%" in text or b"+" in text:
        text = unquote_to_bytes(text.replace(b"+", b" "))
    return text.decode("utf-8")


def query_params(query_string: bytes, endpoint: str) -> dict[str, str]:
    """The query parameters of a request, checked against what ``endpoint`` takes (:data:`PARAMS`).

    Examples
    --------
    >>> query_params(b"k=5&space=learned", "similar")
    {'k': '5', 'space': 'learned'}
    """
    params: dict[str, str] = {}
    for part in query_string.split(b"&") if query_string else ():
        if not part:
            continue
        name, _, value = part.partition(b"=")
        try:
            name, value = form_decode(name), form_decode(value)
        except UnicodeDecodeError:
            raise UsageError("the query string is not UTF-8 once percent-decoded") from None
        if name not in PARAMS[endpoint]:
            takes = ", ".join(PARAMS[endpoint]) or "no parameters"
            raise UsageError(f"unknown parameter {name!r}: /{endpoint} takes {takes}")
        if name in params:
            raise UsageError(f"parameter {name!r} given twice")
        params[name] = value
    return params


def k_param(params: dict[str, str], default: int = 10) -> int:
    """The ``k`` parameter: a positive integer up to :data:`MAX_K`."""
    text = params.get("k")
    if text is None:
        return default
    try:
        k = int(text)
    except ValueError:
        raise UsageError(f"k must be a positive integer, got {text!r}") from None
    if not 1 <= k <= MAX_K:
        raise UsageError(f"k must be between 1 and {MAX_K}, got {k}")
    return k


class Service:
    """The ASGI application of ``reelsim serve`` (module docstring): one reader shared by every request.

    Parameters
    ----------
    store : the store folder
    banned : a banned-phrases file for ``/search`` (as ``reelsim search --banned``); read now, so a
        missing file fails at start
    banned_threshold : MiniLM cosine at which a query matches a banned phrase
    threads : threads for the answers that may take long (live answers, ``/items`` after a new version)
    """

    def __init__(self, store: str | Path, *, banned: str | Path | None = None,
                 banned_threshold: float = BANNED_THRESHOLD, threads: int = 4):
        if banned is not None:
            read_banned(banned)
        self.store = Path(store)
        self.reader = StoreReader(self.store)
        self.banned, self.banned_threshold = banned, banned_threshold
        import orjson  # several times faster than the standard library's json

        self.dumps = orjson.dumps
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="reelsim-serve")
        # one search at a time: each embeds the query and reads the catalog's text vectors
        self._search_pool = ThreadPoolExecutor(1, thread_name_prefix="reelsim-search")

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, body, headers = await self.respond(scope)
        payload = self.dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()), *headers]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else payload})

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._search_pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def respond(self, scope: dict) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        """(status, JSON body, extra headers) of one request; every error becomes a JSON body."""
        try:
            if scope["method"] not in ("GET", "HEAD"):
                raise HTTPError(405, f"method {scope['method']} not allowed: the service answers GET and HEAD",
                                [(b"allow", b"GET, HEAD")])
            raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
            raw = raw.split(b"?", 1)[0]
            query = scope.get("query_string", b"")
            if raw.startswith(b"/similar/"):
                return 200, await self.similar(path_id(raw, b"/similar/"), query_params(query, "similar")), []
            if raw.startswith(b"/items/"):
                query_params(query, "items")
                return 200, await self.in_thread(self.reader.item, path_id(raw, b"/items/")), []
            if raw == b"/search":
                return 200, await self.search(query_params(query, "search")), []
            if raw == b"/health":
                query_params(query, "health")
                return 200, self.reader.health(), []
            raise HTTPError(404, "no such endpoint: the service answers /similar/{id}, /search?q=, /items/{id} "
                                 "and /health")
        except HTTPError as e:
            return e.status, {"error": str(e), "exit_code": 2}, e.headers
        except Exception as e:  # every error is a JSON answer; unexpected ones are logged too
            status, code = error_status(e)
            if status == 500 and not isinstance(e, ReelsimError):
                log.exception("request %s failed", scope.get("path"))
                message = f"internal error ({type(e).__name__}); the service's log has the details"
            else:
                message = str(e)
            return status, {"error": message, "exit_code": code}, [(b"retry-after", b"1")] if status == 503 else []

    async def in_thread(self, fn, *args, pool: ThreadPoolExecutor | None = None):
        """``fn(*args)`` in one of the service's threads (the event loop goes on answering)."""
        return await asyncio.get_running_loop().run_in_executor(pool or self._pool, fn, *args)

    async def similar(self, item: str, params: dict[str, str]) -> dict:
        k, space = k_param(params), params.get("space", "content")
        weights = params.get("weights")
        if weights is None:
            answer = self.reader.from_lists(item, k, space=space)  # microseconds: on the event loop
            if answer is not None:
                return answer.to_json()
        w = parse_weights(weights) if weights is not None else None
        answer = await self.in_thread(lambda: self.reader.similar(item, k, space=space, weights=w))
        return answer.to_json()

    async def search(self, params: dict[str, str]) -> dict:
        query, k, space = params.get("q", ""), k_param(params), params.get("space", "content")
        hits = await self.in_thread(lambda: search(self.store, query, k, space=space, banned=self.banned,
                                                   threshold=self.banned_threshold, reader=self.reader),
                                    pool=self._search_pool)
        return search_json(query, space, hits)


#: the environment variable that hands the service's settings to its worker processes (JSON)
SETTINGS_ENV = "REELSIM_SERVE"


def service_from_env() -> Service:
    """The :class:`Service` of the settings in ``$REELSIM_SERVE``: how each worker process builds its own.

    Any ASGI server can run it: ``REELSIM_SERVE='{"store": "out/"}' uvicorn --factory
    reelsim.jobs.serve:service_from_env``.
    """
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise UsageError(f"${SETTINGS_ENV} is not set: it holds the service's settings as JSON, e.g. "
                         '{"store": "out/"}')
    settings = json.loads(raw)
    return Service(settings["store"], banned=settings.get("banned"),
                   banned_threshold=settings.get("banned_threshold", BANNED_THRESHOLD))


def free_port(host: str, port: int) -> int:
    """``port`` if it can be listened on at ``host`` (0: a free port, chosen now); :class:`UsageError` if not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        return sock.getsockname()[1]


def url_of(host: str, port: int) -> str:
    """``http://HOST:PORT`` (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_service(store: str | Path, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 2,
                banned: str | Path | None = None, banned_threshold: float = BANNED_THRESHOLD,
                access_log: bool = False) -> None:
    """Serve ``store`` with granian (``workers`` processes, each with its own :class:`Service`) until
    interrupted (Ctrl-C, SIGTERM)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    os.environ[SETTINGS_ENV] = json.dumps({"store": str(Path(store).resolve()),
                                           "banned": str(Path(banned).resolve()) if banned else None,
                                           "banned_threshold": banned_threshold})
    server = Granian("reelsim.jobs.serve:service_from_env", address=host, port=port, interface=Interfaces.ASGI,
                     workers=workers, websockets=False, log_level=LogLevels.warning, log_access=access_log,
                     respawn_failed_workers=True)
    # granian would import the target as a path under the working directory (wrong inside a package's folder)
    server.serve(target_loader=load_service)


def load_service(target: str) -> Service:
    """What each granian worker calls to get its application: :func:`service_from_env` (``target`` unused)."""
    return service_from_env()


__all__ = ["ERRORS", "MAX_K", "SETTINGS_ENV", "Service", "error_status", "free_port", "path_id", "query_params",
           "run_service", "service_from_env", "url_of"]
