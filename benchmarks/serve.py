"""`reelsim serve` at catalog scale: opening a store, `Store.similar`, HTTP under load, an add under load.

On a store of N items (default 10^6) made of the kNN benchmark's clustered
vectors (``benchmarks/knn.py::clustered``, d = 384, stored as the items' text
embeddings so that ``reelsim add`` of text-only products fits it), listed as
``reelsim run`` lists a catalog (k = 10, one store version), this prints:

1. **open**: in a fresh process, ``open_store`` + the first ``similar``
   (mapping the list set), then ``Store.similar`` p50/p99 over random ids;
   baseline in the same process: the same item's rows read from
   ``neighbors.parquet`` with pyarrow (a filter on ``item``), which is what
   one would do with the lists file alone.
2. **HTTP**: ``reelsim serve`` (granian, ``--workers`` 1 and 2) and, as the
   baseline, the same ASGI application under uvicorn (one process; skipped
   when uvicorn is not installed), each loaded by wrk on loopback with
   ``--threads`` threads and ``--connections`` connections for ``--seconds``
   seconds, every request ``GET /similar/item-XXXXXXX?k=10`` for a random
   item (a Lua script); also a cap on requests per wrk thread, so the
   load is bounded in count and time. Printed: requests/s, p50/p99, socket
   errors and non-2xx answers, and the server's CPU time per request (all
   its processes; a figure the machine's load does not change much).
3. **add under load**: the granian service under the same wrk load while
   ``reelsim add`` (the CLI, its own process) adds ``--add`` text-only
   products; failed requests (socket errors + non-2xx) during the add, and
   the delay from ``add`` returning to the first answer for a new item (a
   client polls one new id every 10 ms; negative: answered before the add
   process had exited, i.e. right after its commit).

The answers are checked too: for sampled items, the service's JSON equals
``Store.answer(...).to_json()`` (and ``reelsim similar --json`` for three).

wrk is Debian's (``apt-get install wrk``); without it the HTTP parts are
skipped with that hint. The load average is printed at every step: this
machine is shared, and absolute figures swing with it.

Usage::

    python benchmarks/serve.py                       # 10^6 items, store kept in a temp folder
    python benchmarks/serve.py --n 1e5 --work /tmp/serve-bench --seconds 10
    python benchmarks/serve.py --work /tmp/serve-bench --skip-add   # re-use the store, HTTP only
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

HERE = Path(__file__).resolve().parent
D = 384  # MiniLM's size: the store's items are "text" embeddings, so `reelsim add` of text products fits

WRK_SCRIPT = """
-- every request asks for a random item's list; each thread stops after a cap of requests (a bound on count)
local counter = 0
function setup(thread) counter = counter + 1; thread:set("seed", counter) end
function init(args) math.randomseed(seed * 7919 + os.time()); done = 0 end
function request()
  return wrk.format("GET", string.format("/similar/item-%07d?k=10", math.random(0, {n} - 1)))
end
function response(status, headers, body)
  done = done + 1
  if done >= {cap} then wrk.thread:stop() end
end
"""


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------- the store


def build_store(store: Path, n: int) -> dict:
    """N items of clustered vectors as text embeddings, listed as `reelsim run` does it (one version)."""
    sys.path.insert(0, str(HERE))
    from knn import clustered

    from reelsim.config import FusionConfig
    from reelsim.similarity import CatalogEmbeddings, normalise
    from reelsim.similarity.rebuild import new_stamp, save_and_list
    from reelsim.storage.atomic import write_text_atomic
    from reelsim.storage.layout import StoreLayout
    from reelsim.storage.session import writing

    t = time.perf_counter()
    ids = [f"item-{i:07d}" for i in range(n)]
    raw = CatalogEmbeddings(ids, {"text": clustered(n, D)}, {"text": np.ones(n, bool)})
    layout = StoreLayout(store)
    with writing(layout.root, "run") as session:
        layout.index_dir.mkdir(parents=True, exist_ok=True)
        meta = {i: {"kind": "product", "title": f"product {i}"} for i in ids}
        write_text_atomic(layout.items_meta, json.dumps(meta, ensure_ascii=False))
        session.note({"catalog": {"stamp": new_stamp(), "items": n}})
        summary = save_and_list(layout.root, normalise(raw), FusionConfig(weights={"text": 1.0}, k=10,
                                                                          lists_formats=("parquet",)))
    return {"n": n, "seconds": round(time.perf_counter() - t, 1), "index": summary["index"], "load": load()}


def open_figures(store: Path, n: int, queries: int, baseline_queries: int) -> dict:
    """(in a fresh process) open time, first answer, Store.similar p50/p99; the pyarrow baseline."""
    import pyarrow.dataset as ds

    from reelsim.jobs.api import open_store

    rng = np.random.default_rng(1)
    ids = [f"item-{i:07d}" for i in rng.integers(0, n, queries)]
    t0 = time.perf_counter()
    st = open_store(store)
    t1 = time.perf_counter()
    first = st.answer(ids[0], 10)
    t2 = time.perf_counter()
    lat, oncpu = np.empty(queries), np.empty(queries)
    for j, item in enumerate(ids):
        c, t = time.thread_time(), time.perf_counter()
        st.similar(item, 10)
        lat[j], oncpu[j] = time.perf_counter() - t, time.thread_time() - c
    table = ds.dataset(str(store / "lists" / "neighbors.parquet"))
    base = np.empty(baseline_queries)
    for j, item in enumerate(ids[:baseline_queries]):
        t = time.perf_counter()
        rows = table.to_table(filter=ds.field("item") == item, columns=["neighbor", "score"]).to_pylist()
        base[j] = time.perf_counter() - t
        if [r["neighbor"] for r in rows] != [nb.item for nb in st.similar(item, 10)]:
            raise AssertionError(f"{item}: the list set and neighbors.parquet disagree")
    ms = lambda a, q: round(float(np.percentile(a, q)) * 1e3, 4)
    return {"open_ms": round((t1 - t0) * 1e3, 2), "first_answer_ms": round((t2 - t1) * 1e3, 2),
            "source": first.source, "version": first.version, "queries": queries,
            "similar_p50_ms": ms(lat, 50), "similar_p99_ms": ms(lat, 99), "similar_max_ms": ms(lat, 100),
            "similar_cpu_p50_ms": ms(oncpu, 50), "similar_cpu_p99_ms": ms(oncpu, 99),
            "parquet_p50_ms": ms(base, 50), "parquet_queries": baseline_queries, "load": load()}


# ---------------------------------------------------------------------------- the service


class Server:
    """`reelsim serve` (granian) or uvicorn over the same ASGI app, in its own process group; stopped by SIGINT."""

    def __init__(self, store: Path, kind: str, workers: int):
        self.kind, self.workers = kind, workers
        if kind == "granian":
            cmd = [sys.executable, "-m", "reelsim.jobs.cli", "serve", "--store", str(store), "--port", "0",
                   "--workers", str(workers)]
            env = dict(os.environ)
        else:
            port = free_port()
            cmd = [sys.executable, "-m", "uvicorn", "--factory", "reelsim.jobs.serve:service_from_env",
                   "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log",
                   "--log-level", "warning"]
            env = {**os.environ, "REELSIM_SERVE": json.dumps({"store": str(store)})}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                     start_new_session=True)
        if kind == "granian":
            line = self.proc.stdout.readline()
            self.url = line.split(" on ", 1)[1].split()[0]
        else:
            self.url = f"http://127.0.0.1:{port}"
        self.host, self.port = self.url.split("//")[1].rsplit(":", 1)
        deadline = time.monotonic() + 300
        while get(self, "/health")[0] != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{kind} did not start")
            time.sleep(0.2)

    def label(self) -> str:
        return f"{self.kind}, {self.workers} worker{'s' * (self.workers > 1)}"

    def cpu_seconds(self) -> float:
        """utime + stime of the server's process group (workers included)."""
        return sum(t for _, t in group_cpu(self.proc.pid))

    def memory_mb(self) -> dict:
        """Anonymous (heap: what the processes hold themselves) and proportional (PSS) memory of the server's
        processes, MB. PSS also counts the pages of the mapped lists a worker has touched (page cache, shared
        between workers and with every other reader of the store); anonymous memory does not."""
        total = {"anon_mb": 0, "pss_mb": 0}
        for pid, _ in group_cpu(self.proc.pid):
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    fields = {line.split(":")[0]: int(line.split()[1]) for line in f if line.endswith("kB\n")}
            except OSError:
                continue
            total["anon_mb"] += fields.get("Anonymous", 0)
            total["pss_mb"] += fields.get("Pss", 0)
        return {k: round(v / 1024, 1) for k, v in total.items()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def group_cpu(pgid: int) -> list[tuple[int, float]]:
    """(pid, CPU seconds) of every process in a process group."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            out.append((int(entry), (int(fields[11]) + int(fields[12])) / tick))
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(server: Server, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, dict | None]:
    """(status, JSON) of one GET; (0, None) when the connection fails."""
    c = conn or http.client.HTTPConnection(server.host, int(server.port), timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, json.loads(body) if body else None
    except OSError:
        c.close()
        return 0, None
    finally:
        if conn is None:
            c.close()


def wrk_command(server: Server, script: Path, threads: int, connections: int, seconds: float) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "--timeout", "5s",
            "-s", str(script), server.url]


def parse_wrk(text: str) -> dict:
    """Requests, seconds, requests/s, p50/p99 (ms), socket errors and non-2xx answers from wrk's summary."""
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}

    def latency(pct: str) -> float | None:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
        return round(float(m.group(1)) * unit[m.group(2)], 3) if m else None

    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    requests, seconds = int(m.group(1)), float(m.group(2)) * unit[m.group(3)] / 1e3
    return {"requests": requests, "seconds": round(seconds, 2), "rps": round(requests / seconds, 1),
            "p50_ms": latency(50), "p99_ms": latency(99),
            "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def http_run(server: Server, script: Path, args) -> dict:
    """One wrk run against ``server`` (after a short warm-up): wrk's figures and the server's CPU per request."""
    subprocess.run(wrk_command(server, script, args.threads, args.connections, 2), capture_output=True, check=False)
    cpu0, load0 = server.cpu_seconds(), os.getloadavg()[0]
    out = subprocess.run(wrk_command(server, script, args.threads, args.connections, args.seconds),
                         capture_output=True, text=True, check=True).stdout
    r = parse_wrk(out)
    r["server_cpu_us_per_request"] = round((server.cpu_seconds() - cpu0) / max(1, r["requests"]) * 1e6, 1)
    r.update(server.memory_mb())
    r["load_1min"] = (round(load0, 2), round(os.getloadavg()[0], 2))
    return r


def same_answers(server: Server, store: Path, n: int, sample: int) -> int:
    """Check the service's JSON against Store.answer for ``sample`` items and `reelsim similar --json` for 3."""
    from reelsim.jobs.api import open_store

    st = open_store(store)
    ids = [f"item-{i:07d}" for i in np.random.default_rng(2).integers(0, n, sample)]
    conn = http.client.HTTPConnection(server.host, int(server.port), timeout=30)
    for k in (5, 10):
        for item in ids:
            status, body = get(server, f"/similar/{quote(item, safe='')}?k={k}", conn)
            if status != 200 or body != st.answer(item, k).to_json():
                raise AssertionError(f"{item} k={k}: the service and Store.answer differ")
    for item in ids[:3]:
        cli = subprocess.run([sys.executable, "-m", "reelsim.jobs.cli", "similar", item, "--store", str(store),
                              "-k", "10", "--json"], capture_output=True, text=True, check=True).stdout
        if json.loads(cli) != get(server, f"/similar/{item}?k=10")[1]:
            raise AssertionError(f"{item}: the service and `reelsim similar --json` differ")
    return 2 * len(ids) + 3


# ---------------------------------------------------------------------------- add under load


def products(path: Path, count: int, tag: str) -> list[str]:
    """A manifest of ``count`` text-only products (seeded titles); their ids."""
    rng = np.random.default_rng(int(re.sub(r"\D", "", tag) or 0))
    words = ["wireless", "organic", "steel", "oak", "ceramic", "compact", "travel", "vintage", "smart", "classic",
             "bamboo", "leather", "cotton", "glass", "portable", "electric"]
    things = ["headphones", "kettle", "knife", "mug", "lamp", "backpack", "jacket", "board", "speaker", "bottle",
              "chair", "watch", "camera", "blender", "pan", "towel"]
    ids = [f"new-{tag}-{i:04d}" for i in range(count)]
    with open(path, "w", encoding="utf-8") as f:
        for i in ids:
            a, b = rng.choice(words, 2, replace=False)
            f.write(json.dumps({"id": i, "title": f"{a.capitalize()} {b} {rng.choice(things)}",
                                "description": f"{int(rng.integers(1, 20)) * 50} g"}) + "\n")
    return ids


def add_vectors_child(store: Path, count: int, tag: str) -> dict:
    """``--add-with vectors``: the similarity part of `reelsim add` for ``count`` new clustered vectors (a mixture
    of its own, seeded by ``tag``), ids as the products of the same tag would have."""
    sys.path.insert(0, str(HERE))
    from knn import clustered

    from reelsim.config import FusionConfig
    from reelsim.similarity import CatalogEmbeddings
    from reelsim.similarity.incremental import add_vectors

    ids = [f"new-{tag}-{i:04d}" for i in range(count)]
    raw = CatalogEmbeddings(ids, {"text": clustered(count, D, seed=int(re.sub(r"\D", "", tag) or 0))},
                            {"text": np.ones(count, bool)})
    out = add_vectors(store, raw, {i: {"kind": "product", "title": i} for i in ids},
                      FusionConfig(weights={"text": 1.0}, k=10, lists_formats=("parquet",)))
    return {k: v for k, v in out.items() if k != "new_neighbors"}


def add_memory_gb(n: int) -> float:
    """What `reelsim add` into an N-item store of d = 384 needs, roughly: the catalog in memory twice and the
    lists (its process was seen at 3.6 GB at 10^6), plus the analysis worker (MiniLM)."""
    return 1.0 + n * D * 4 * 2.5 / 2**30 + n * 10 * 8 * 4 / 2**30


def wait_for_memory(gb: float, minutes: float) -> bool:
    """Wait (up to ``minutes``) until the machine has ``gb`` of memory available; whether it has."""
    deadline = time.monotonic() + minutes * 60
    while True:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 2**20
        if available >= gb:
            return True
        if time.monotonic() > deadline:
            return False
        say(f"   waiting for memory: {available:.1f} GB available, the add needs about {gb:.1f} GB")
        time.sleep(30)


def add_under_load(server: Server, store: Path, script: Path, args, work: Path) -> dict:
    """wrk keeps loading the service while `reelsim add` runs; failed requests and the new items' delay."""
    tag = time.strftime("%H%M%S")
    manifest = work / f"add-{tag}.jsonl"
    new_ids = products(manifest, args.add, tag)
    probe = new_ids[len(new_ids) // 2]
    wrk = subprocess.Popen(wrk_command(server, script, args.threads, args.connections, 3600),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_ok = {}

    def poll():  # one client asking for a new item every 10 ms, from before the add starts
        conn = http.client.HTTPConnection(server.host, int(server.port), timeout=30)
        while "t" not in first_ok and not stop.is_set():
            if get(server, f"/similar/{probe}?k=10", conn)[0] == 200:
                first_ok["t"] = time.monotonic()
            time.sleep(0.01)

    stop = threading.Event()
    poller = threading.Thread(target=poll)
    time.sleep(3)
    cpu0 = server.cpu_seconds()
    poller.start()
    t0 = time.monotonic()
    if args.add_with == "cli":
        command = [sys.executable, "-m", "reelsim.jobs.cli", "add", str(manifest), "--store", str(store),
                   "--workers", "1", "--no-progress"]
    else:
        command = [sys.executable, __file__, "--child", "add-vectors", "--store", str(store), "--n", str(args.add),
                   "--tag", tag]
    add = subprocess.run(command, capture_output=True, text=True, check=False)
    t_return = time.monotonic()
    if add.returncode != 0:
        stop.set()
        wrk.send_signal(signal.SIGINT)
        wrk.communicate()
        raise RuntimeError(f"reelsim add failed ({add.returncode}): {add.stdout}\n{add.stderr}")
    version_mtime = os.stat(store / "version.json").st_mtime
    commit_before_return = time.time() - version_mtime - (time.monotonic() - t_return)
    poller.join(timeout=60)
    stop.set()
    time.sleep(2)  # a little more load on the new version
    wrk.send_signal(signal.SIGINT)
    out, _ = wrk.communicate(timeout=60)
    r = parse_wrk(out)
    health = get(server, "/health")[1]
    from reelsim.jobs.api import open_store

    new_answer = get(server, f"/similar/{probe}?k=10")[1]
    if new_answer != open_store(store).answer(probe, 10).to_json():
        raise AssertionError(f"{probe}: the service's answer after the add differs from Store.answer")
    delay = first_ok["t"] - t_return if "t" in first_ok else None
    after_commit = delay + commit_before_return if delay is not None else None
    return {"items": args.add, "add_seconds": round(t_return - t0, 1),
            "commit_before_add_returned_s": round(commit_before_return, 2),
            "new_item_delay_s": None if delay is None else round(delay, 3),
            "new_item_after_commit_s": None if after_commit is None else round(after_commit, 3), "wrk": r,
            "server_cpu_us_per_request": round((server.cpu_seconds() - cpu0) / max(1, r["requests"]) * 1e6, 1),
            "version_after": health["version"], "items_after": health["items"],
            "add_summary": add.stdout.strip().splitlines()[-1] if add.stdout.strip() else "", "load": load()}


# ---------------------------------------------------------------------------- main


def child(argv: list[str]) -> dict:
    """Run this script's ``--child`` step in a fresh process (its own memory, cold Python state)."""
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=float, default=1e6, help="items in the store (default: 1e6)")
    ap.add_argument("--work", type=Path, help="folder for the store (kept and re-used; default: a temp folder)")
    ap.add_argument("--queries", type=int, default=20000, help="Store.similar calls timed (default: 20000)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default: 2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default: 32)")
    ap.add_argument("--seconds", type=float, default=15, help="seconds of each wrk run (default: 15)")
    ap.add_argument("--cap", type=int, default=2_000_000, help="requests per wrk thread at most (default: 2e6)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the HTTP comparison (default: 2)")
    ap.add_argument("--add", type=int, default=1000, help="products that `reelsim add` adds under load")
    ap.add_argument("--skip-add", action="store_true", help="no add under load")
    ap.add_argument("--skip-http", action="store_true", help="no HTTP comparison (open figures and the add only)")
    ap.add_argument("--add-with", choices=("cli", "vectors"), default="cli",
                    help="cli: `reelsim add` of text-only products (analysis with MiniLM on a local Dask cluster, "
                    "then the add); vectors: the add's similarity part alone in another process "
                    "(similarity/incremental.py::add_vectors, as `reelsim add` calls it), for new vectors of the "
                    "same kind (default: cli)")
    ap.add_argument("--wait-memory", type=float, default=20,
                    help="minutes to wait for enough free memory before the add (default: 20)")
    ap.add_argument("--child", choices=("build", "open", "add-vectors"), help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = int(args.n)
    if args.child == "build":
        print(json.dumps(build_store(args.store, n)))
        return
    if args.child == "add-vectors":
        print(json.dumps(add_vectors_child(args.store, n, args.tag)))
        return
    if args.child == "open":
        print(json.dumps(open_figures(args.store, n, args.queries, 50)))
        return

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    work = args.work or Path(tempfile.mkdtemp(prefix="reelsim-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"store-{n}"
    say(f"reelsim serve benchmark: N = {n}, {os.cpu_count()} cpus, {load()}")
    if not (store / "version.json").is_file():
        shutil.rmtree(store, ignore_errors=True)
        say(f"building the store in {store} ...")
        b = child(["--child", "build", "--store", str(store), "--n", str(n)])
        say(f"built: {b['n']} items in {b['seconds']} s ({b['index']}); {b['load']}")
    else:
        say(f"re-using {store}")

    o = child(["--child", "open", "--store", str(store), "--n", str(n), "--queries", str(args.queries)])
    say(f"\n1. open (fresh process): open_store {o['open_ms']} ms + first answer {o['first_answer_ms']} ms "
        f"(source {o['source']}, version {o['version']}) = {o['open_ms'] + o['first_answer_ms']:.1f} ms")
    say(f"   Store.similar over {o['queries']} random items, k = 10: p50 {o['similar_p50_ms'] * 1e3:.0f} us, "
        f"p99 {o['similar_p99_ms'] * 1e3:.0f} us, max {o['similar_max_ms']:.1f} ms; on-CPU time of a call (this "
        f"thread's, without the waits for a core): p50 {o['similar_cpu_p50_ms'] * 1e3:.0f} us, "
        f"p99 {o['similar_cpu_p99_ms'] * 1e3:.0f} us")
    say(f"   baseline, the item's rows from neighbors.parquet (pyarrow filter, {o['parquet_queries']} items): "
        f"p50 {o['parquet_p50_ms']:.1f} ms = {o['parquet_p50_ms'] / o['similar_p50_ms']:.0f}x Store.similar; "
        f"{o['load']}")

    if shutil.which("wrk") is None:
        say("\nwrk not found: the HTTP figures need it (Debian: apt-get install wrk). Skipped.")
        return
    script = work / "similar.lua"
    script.write_text(WRK_SCRIPT.replace("{n}", str(n)).replace("{cap}", str(args.cap)))
    if not args.skip_http:
        say(f"\n2. HTTP: wrk {args.threads} threads, {args.connections} connections, {args.seconds:g} s per run "
            f"(at most {args.cap} requests a thread), GET /similar/<random item>?k=10 on 127.0.0.1")
    configs = [("granian", 2), ("granian", 1)]
    try:
        import uvicorn  # noqa: F401  the baseline stack, when installed

        configs += [("uvicorn", 2), ("uvicorn", 1)]
    except ImportError:
        say("   (uvicorn not installed: no baseline run)")
    results: dict[str, list[dict]] = {}
    checked = False
    for rnd in range(0 if args.skip_http else args.rounds):
        for kind, workers in configs:
            server = Server(store, kind, workers)
            try:
                if not checked:
                    count = same_answers(server, store, n, 100)
                    say(f"   answers checked: {count} requests equal Store.answer / `reelsim similar --json`")
                    checked = True
                r = http_run(server, script, args)
            finally:
                server.stop()
            results.setdefault(server.label(), []).append(r)
            say(f"   round {rnd + 1} {server.label():<20} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:>7.2f} ms  "
                f"p99 {r['p99_ms']:>7.2f} ms  errors {r['socket_errors']} non-2xx {r['non_2xx']}  "
                f"server CPU {r['server_cpu_us_per_request']} us/request, memory {r['anon_mb']} MB anonymous "
                f"(PSS {r['pss_mb']} MB)  "
                f"load {r['load_1min'][0]}-{r['load_1min'][1]}")
    best = {label: max(rs, key=lambda r: r["rps"]) for label, rs in results.items()}
    for label, r in best.items():
        base = best.get(label.replace("granian", "uvicorn"))
        ratio = f" = {r['rps'] / base['rps']:.2f}x uvicorn with as many workers" if base and base is not r else ""
        say(f"   best of {args.rounds}: {label:<20} {r['rps']:>8.0f} req/s{ratio}")
    say(f"   {load()}")

    if args.skip_add:
        return
    need = add_memory_gb(n)
    if not wait_for_memory(need, args.wait_memory):
        say(f"\n3. add under load: skipped, less than {need:.1f} GB of memory available for {args.wait_memory:g} "
            "minutes (this machine is shared)")
        return
    what = "`reelsim add` of {} text-only products" if args.add_with == "cli" else "add_vectors of {} new items"
    say(f"\n3. add under load: {what.format(args.add)} in another process while wrk loads the service "
        "(granian, 2 workers)")
    server = Server(store, "granian", 2)
    try:
        a = add_under_load(server, store, script, args, work)
    finally:
        server.stop()
    w = a["wrk"]
    failed = w["socket_errors"] + w["non_2xx"]
    say(f"   add: {a['add_seconds']} s ({a['add_summary']}); version {a['version_after']}, {a['items_after']} items")
    say(f"   during it: {w['requests']} requests in {w['seconds']} s = {w['rps']:.0f} req/s, p50 {w['p50_ms']} ms, "
        f"p99 {w['p99_ms']} ms; failed requests: {failed} ({w['socket_errors']} socket errors, "
        f"{w['non_2xx']} non-2xx)")
    delay = a["new_item_delay_s"]
    say(f"   a new item answered {'never' if delay is None else f'{delay:+.3f} s'} after `add` returned: "
        f"{a['new_item_after_commit_s']} s after its commit (version.json replaced), which was "
        f"{a['commit_before_add_returned_s']} s before the add process exited; {a['load']}")
    print(json.dumps({"open": o, "http": results, "add": a}))


if __name__ == "__main__":
    main()
