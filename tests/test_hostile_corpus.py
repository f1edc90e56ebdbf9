"""A hostile corpus: every case goes through the real CLI (``reelsim.jobs.cli.main``) and ends in its exit code,
one line naming the file or flag at fault, and no traceback.

The cases come from trying to break the store and its inputs (issue "The store as one transaction"): special
files in a store (a FIFO hung ``similar`` and ``verify``, a link to ``/dev/zero`` read until ``MemoryError``),
input text that is not UTF-8, weights that are not numbers, banned queries spelt with look-alike letters,
a ``-k`` of 10^12, a model older than its catalog, a store path that is not UTF-8, out-of-range settings, an
unreachable scheduler. One small store of text products (built once per module on the session's Dask
cluster, with a trained model) is copied for each case that changes it.

Commands run in this process (:func:`conftest.reelsim`). A case that could block for ever (a FIFO opened
for reading) runs beside a watchdog process that, past :data:`HANG_S`, unblocks the reader and fails the case; one
that could fill memory (``/dev/zero``) runs in a subprocess with an address-space limit and a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import reelsim, run_items

import reelsim as api
from reelsim.config import Config, LearnConfig
from reelsim.errors import UsageError
from reelsim.similarity.knn import Checkpoint, knn_graph
from reelsim.similarity.spaces import train_store
from reelsim.storage.interactions import write_interactions
from reelsim.storage.layout import StoreLayout

#: seconds a command may take on a case before it counts as hung
HANG_S = 60.0
PRODUCTS = {
    "bananas": "Organic bananas, bunch of 6", "apples": "Crisp red apples, 1 kg",
    "oranges": "Navel oranges, 2 kg bag", "headphones": "Wireless noise-cancelling headphones",
    "earbuds": "True wireless earbuds", "speaker": "Portable bluetooth speaker",
    "knife": "Chef's knife, 20 cm", "board": "Oak cutting board",
}
GROUPS = [["bananas", "apples", "oranges"], ["headphones", "earbuds", "speaker"], ["knife", "board"]]
FAST = ["--set", "learn.elsa_dim=2", "--set", "learn.tower_epochs=1", "--set", "learn.finetune_epochs=0",
        "--set", "learn.tower_hidden=16", "--set", "learn.tower_dim=8"]


def interactions(n_users: int = 40, seed: int = 0) -> tuple[list[str], list[str]]:
    """(users, items) of a log where each user engages with two or three items of one group."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        group = GROUPS[u % len(GROUPS)]
        for item in rng.choice(group, size=min(len(group), 2 + u % 2), replace=False):
            users.append(f"u{u}")
            items.append(str(item))
    return users, items


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, dask_client) -> Path:
    """A finished store of 8 text products (shards, catalog, index, lists) with a trained model."""
    d = tmp_path_factory.mktemp("corpus")
    rows = [{"id": i, "title": t, "description": f"{t}. In stock."} for i, t in PRODUCTS.items()]
    (d / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    store = d / "store"
    report = run_items([d / "catalog.jsonl"], store, dask_client, Config().with_overrides(fusion={"k": 3}))
    assert report.exit_code == 0, report.items
    users, items = interactions()
    write_interactions(d / "log.csv", users, items)
    train_store(store, d / "log.csv", LearnConfig(elsa_dim=2, tower_epochs=1, finetune_epochs=0, tower_hidden=16,
                                                  tower_dim=8))
    (d / "banned.txt").write_text("how to make a bomb\nc++\n", encoding="utf-8")
    return store


@pytest.fixture
def store(corpus, tmp_path) -> Path:
    """A private copy of the corpus store."""
    return Path(shutil.copytree(corpus, tmp_path / "store", symlinks=True))


# ------------------------------------------------------------------ damage: special files and links
def fifo(path: Path) -> Path:
    path.unlink()
    os.mkfifo(path)
    return path


def link(target: str | Path) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.unlink()
        path.symlink_to(target)
        return path
    return make


def outside_json(path: Path) -> Path:
    """The store's own items.json, moved out of the store and linked back: whole, but not the store's."""
    outside = path.parent.parent.parent / "outside.json"
    shutil.move(path, outside)
    path.symlink_to(outside)
    return path


def unix_socket(path: Path) -> Path:
    path.unlink()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    return path


def content_set_dir(store: Path) -> Path:
    """The folder of the content list set the store's version names."""
    layout = StoreLayout(store)
    return layout.list_set(json.loads(layout.version_file.read_text())["lists"]["content"])


def first_shard(store: Path) -> Path:
    return StoreLayout(store).shard("bananas")


FILES = {
    "items-json": lambda s: StoreLayout(s).items_meta,
    "catalog": lambda s: StoreLayout(s).catalog,
    "shard": first_shard,
    "faiss": lambda s: next(StoreLayout(s).index_dir.glob("group-*.faiss")),
    "parquet": lambda s: StoreLayout(s).list_file("parquet"),
    "list-set": lambda s: content_set_dir(s) / "floor.npy",
    "tower": lambda s: StoreLayout(s).learned_dir / "tower.npz",
    "report": lambda s: StoreLayout(s).report,
    "lock": lambda s: StoreLayout(s).lock,
}


@dataclass(frozen=True)
class Case:
    """One hostile case: ``argv(store, tmp)`` the command line (after ``setup`` changed the store copy);
    ``code`` the exit code; ``says(store, tmp)`` a text (or texts) the message must hold (the file or flag at
    fault, what is wrong);
    ``where`` which stream holds it; ``mode``: ``fifo`` (watchdog), ``subprocess`` (memory limit), or ``""``."""

    name: str
    argv: Callable[[Path, Path], list]
    code: int
    says: Callable[[Path, Path], str]
    setup: Callable[[Path, Path], object] | None = None
    where: str = "stderr"
    mode: str = ""


def special(damage: str, what: str, make: Callable, command: str, code: int) -> Case:
    """A store file ``what`` turned into a special file by ``make``, then ``command``."""
    argv = {
        "similar": lambda s, t: ["similar", "bananas", "--store", s],
        "similar-learned": lambda s, t: ["similar", "bananas", "--store", s, "--space", "learned"],
        "verify": lambda s, t: ["verify", "--store", s],
        "search": lambda s, t: ["search", "fresh fruit", "--store", s],
        "lists": lambda s, t: ["lists", "--store", s, "--no-progress"],
        "shots": lambda s, t: ["shots", "bananas", "--store", s],
        "export-hdf5": lambda s, t: ["export", "--store", s, "--format", "hdf5", "--to", t / "x.h5"],
        "export-parquet": lambda s, t: ["export", "--store", s, "--format", "parquet", "--to", t / "x.parquet"],
    }[command]
    mode = "subprocess" if damage == "zero" else "fifo" if damage == "fifo" else ""
    said = {"fifo": "it is a FIFO (named pipe)", "socket": "it is a socket"}.get(damage, "it leads out of the store")
    return Case(f"{damage}-{what}-{command}", argv, code, lambda s, t: (str(FILES[what](s)), said),
                setup=lambda s, t: make(FILES[what](s)), where="stdout" if command == "verify" else "stderr",
                mode=mode)


SPECIAL = [
    special("fifo", "items-json", fifo, "similar", 2),
    special("fifo", "items-json", fifo, "verify", 3),
    special("fifo", "items-json", fifo, "search", 2),
    special("zero", "items-json", link("/dev/zero"), "verify", 3),
    special("zero", "items-json", link("/dev/zero"), "similar", 2),
    special("outside", "items-json", outside_json, "similar", 2),
    special("outside", "items-json", outside_json, "verify", 3),
    special("fifo", "catalog", fifo, "similar", 2),
    special("fifo", "catalog", fifo, "lists", 2),
    special("fifo", "catalog", fifo, "verify", 3),
    special("fifo", "shard", fifo, "shots", 2),
    special("fifo", "shard", fifo, "verify", 3),
    special("fifo", "shard", fifo, "export-hdf5", 3),
    special("fifo", "faiss", fifo, "similar", 2),
    special("fifo", "faiss", fifo, "verify", 3),
    special("fifo", "parquet", fifo, "export-parquet", 2),
    special("fifo", "parquet", fifo, "verify", 3),
    special("fifo", "list-set", fifo, "verify", 3),
    special("fifo", "list-set", fifo, "similar", 2),
    special("null", "list-set", link("/dev/null"), "verify", 3),
    special("fifo", "tower", fifo, "similar-learned", 2),
    special("socket", "report", unix_socket, "verify", 3),
]


def _lock_fifo(s: Path, t: Path) -> None:
    os.mkfifo(StoreLayout(s).lock)


SPECIAL.append(Case("fifo-lock-lists", lambda s, t: ["lists", "--store", s, "--no-progress"], 2,
                    lambda s, t: (str(StoreLayout(s).lock), "lock file being written"), setup=_lock_fifo,
                    mode="fifo"))


# ------------------------------------------------------------------ input decoding and weights
def log_file(name: str, data: bytes | Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def make(s: Path, t: Path) -> None:
        if callable(data):
            data(t / name)
        else:
            (t / name).write_bytes(data)
    return make


def parquet(columns: dict) -> Callable[[Path], None]:
    return lambda path: pq.write_table(pa.table(columns), path)


def train(name: str, code: int, says: str, data) -> Case:
    return Case(f"train-{name.replace('.', '-')}", lambda s, t: ["train", "--interactions", t / name, "--store", s,
                                                                  *FAST], code, lambda s, t: says,
                setup=log_file(name, data))


DECODING = [
    train("surrogate.jsonl", 2, "surrogate.jsonl:2: user '\\ud800' is not valid Unicode text",
          b'{"user": "u1", "item": "apples"}\n{"user": "\\ud800", "item": "bananas"}\n'),
    train("latin1.jsonl", 2, "latin1.jsonl:2: not UTF-8 text (byte 0xe9",
          '{"user": "u1", "item": "apples"}\n{"user": "Ren\xe9", "item": "bananas"}\n'.encode("latin-1")),
    train("latin1.csv", 2, "latin1.csv:3: not UTF-8 text (byte 0xe9",
          "user,item\nu1,apples\nRen\xe9,bananas\n".encode("latin-1")),
    train("binary-user.parquet", 2, "binary-user.parquet: row 2: user b'\\xff\\xfe' is not UTF-8",
          parquet({"user": pa.array([b"u1", b"\xff\xfe"], pa.binary()), "item": ["apples", "bananas"]})),
    train("list-user.parquet", 2, "list-user.parquet: column 'user' has type list<",
          parquet({"user": pa.array([[1, 2], [3]], pa.list_(pa.int64())), "item": ["apples", "bananas"]})),
    train("struct-item.parquet", 2, "struct-item.parquet: column 'item' has type struct<",
          parquet({"user": ["u1", "u2"], "item": pa.array([{"a": 1}, {"a": 2}])})),
    train("nan.csv", 2, "nan.csv:3: weight nan must be a finite number >= 0 and <= 1e+09",
          b"user,item,weight\nu1,apples,1\nu1,bananas,nan\n"),
    train("inf.csv", 2, "inf.csv:2: weight inf must be a finite number >= 0 and <= 1e+09",
          b"user,item,weight\nu1,apples,inf\nu1,bananas,1\n"),
    train("huge.csv", 2, "huge.csv:3: weight 1e+300 must be a finite number >= 0 and <= 1e+09",
          b"user,item,weight\nu1,apples,2\nu1,bananas,1e300\n"),
    train("negative.csv", 2, "negative.csv:2: weight -1.0 must be a finite number >= 0 and <= 1e+09",
          b"user,item,weight\nu1,apples,-1\nu1,bananas,1\n"),
    train("nan.parquet", 2, "nan.parquet: row 2: weight nan must be a finite number",
          parquet({"user": ["u1", "u1"], "item": ["apples", "bananas"], "weight": [1.0, float("nan")]})),
    train("infinity.jsonl", 2, "infinity.jsonl:2: weight inf must be a finite number",
          b'{"user": "u1", "item": "apples"}\n{"user": "u1", "item": "bananas", "weight": Infinity}\n'),
    train("inf-time.csv", 2, "inf-time.csv:3: timestamp inf is not a finite number",
          b"user,item,timestamp\nu1,apples,1\nu1,bananas,inf\n"),
]


def banned_file(name: str, data: bytes) -> Callable[[Path, Path], None]:
    def make(s: Path, t: Path) -> None:
        (t / name).parent.mkdir(parents=True, exist_ok=True)
        (t / name).write_bytes(data)
    return make


def search(name: str, query: str, code: int, says: str, banned: str = "banned.txt",
           data: bytes = b"how to make a bomb\nc++\n") -> Case:
    return Case(f"search-{name}", lambda s, t: ["search", query, "--store", s, "--banned", t / banned, "-k", "2"],
                code, lambda s, t: says, setup=banned_file(banned, data), where="stderr" if code else "stdout")


ESCAPES = "esc\x1b[31mdir"
BANNED = [
    search("latin1-banned-file", "fresh fruit", 2, "banned.txt:1: not UTF-8 text (byte 0xe9",
           data="caf\xe9 bomb\n".encode("latin-1")),
    search("query-not-utf8", "fresh \udcff fruit", 2, "the search query is not UTF-8 text (byte 0xff"),
    search("fullwidth", "ｈｏｗ ｔｏ ｍａｋｅ ａ ｂｏｍｂ", 4, "banned phrase on line 1"),
    search("cyrillic-o", "how to make a b\u043emb", 4, "banned phrase on line 1"),
    search("greek-and-cyrillic", "h\u03bfw t\u03bf m\u0430ke \u0430 b\u03bfmb", 4, "banned phrase on line 1"),
    search("zero-width", "how to make a bo\u200bmb", 4, "banned phrase on line 1"),
    search("math-bold", "how to make a \U0001d41b\U0001d428\U0001d426\U0001d41b", 4, "banned phrase on line 1"),
    search("vitamin-c-is-not-c++", "vitamin c supplements", 0, "  1 "),
    search("c++-is-c++", "learn c++ programming", 4, "banned phrase on line 2"),
    search("escapes-in-banned-path", "how to make a bomb", 4, "esc\ufffd[31mdir/banned.txt",
           banned=f"{ESCAPES}/banned.txt"),
]


# ------------------------------------------------------------------ k, model vs catalog, store path, settings
def huge_k(name: str, argv: list, says: str, where: str = "stderr") -> Case:
    item = ["bananas"] if argv[0] == "similar" else []
    return Case(f"huge-k-{name}", lambda s, t: [argv[0], *item, "--store", s, "-k", "1000000000000", *argv[1:]], 0,
                lambda s, t: says, where=where)


HUGE_K = [
    huge_k("similar", ["similar"], "-k 1000000000000 is more than the 7 other items of the catalog; using -k 7"),
    huge_k("similar-learned", ["similar", "--space", "learned"], "using -k 7"),
    huge_k("similar-blend", ["similar", "--space", "blend", "--json"], "using -k 7"),
    huge_k("lists", ["lists", "--no-progress"], '"k_requested": 1000000000000', "stdout"),
    huge_k("lists-learned", ["lists", "--no-progress", "--space", "learned"], '"k_requested": 1000000000000',
           "stdout"),
]


def pca_4(s: Path, t: Path) -> None:
    """The catalog rebuilt with --pca 4 after training (as `reelsim run --pca 4` does)."""
    from reelsim.config import FusionConfig
    from reelsim.similarity.catalog import load_catalog
    from reelsim.similarity.rebuild import build_lists

    ids = load_catalog(StoreLayout(s).catalog)[0].ids
    build_lists(s, ids, FusionConfig(k=3, pca_dim=4))


RETRAIN = "re-train with `reelsim train"
MISMATCH = [Case(f"model-older-than-catalog-{name}", argv, 2, lambda s, t: RETRAIN, setup=pca_4) for name, argv in [
    ("similar-learned", lambda s, t: ["similar", "bananas", "--store", s, "--space", "learned"]),
    ("similar-blend", lambda s, t: ["similar", "bananas", "--store", s, "--space", "blend"]),
    ("search-learned", lambda s, t: ["search", "fruit", "--store", s, "--space", "learned"]),
    ("lists-learned", lambda s, t: ["lists", "--store", s, "--space", "learned", "--no-progress"]),
    ("add-learned", lambda s, t: ["add", t / "new.jsonl", "--store", s, "--space", "learned", "--no-progress"]),
]]


def odd_store(s: Path, t: Path) -> Path:
    """The store moved to a folder whose name has the byte 0xff (not UTF-8)."""
    target = Path(os.fsdecode(os.fsencode(str(t)) + b"/odd-\xff"))
    shutil.move(s, target)
    return target


def on_odd(argv: Callable[[Path, Path], list], code: int, says: Callable, where: str = "stdout",
           name: str = "") -> Case:
    return Case(f"non-utf8-store-{name}", lambda s, t: argv(odd_store(s, t), t), code, says, where=where)


NON_UTF8 = [
    on_odd(lambda s, t: ["verify", "--store", s], 0, lambda s, t: "ok: 8 shards, 8 indexed items", name="verify"),
    on_odd(lambda s, t: ["verify", "--store", s, "--json"], 0, lambda s, t: '"ok": true', name="verify-json"),
    on_odd(lambda s, t: ["similar", "bananas", "--store", s, "--json"], 0, lambda s, t: '"item": "bananas"',
           name="similar"),
    on_odd(lambda s, t: ["lists", "--store", s, "--no-progress"], 0, lambda s, t: '"items": 8', name="lists"),
    on_odd(lambda s, t: ["similar", "bananas", "--store", s, "--space", "blend"], 0, lambda s, t: "apples",
           name="similar-blend"),
    on_odd(lambda s, t: ["export", "--store", s, "--format", "parquet", "--to", t / "x.parquet"], 0,
           lambda s, t: "exported 24 rows", name="export"),
    on_odd(lambda s, t: ["search", "fresh fruit", "--store", s], 0, lambda s, t: "bananas", name="search"),
    on_odd(lambda s, t: ["lists", "--store", s, "--no-progress", "--workers", "1"], 2,
           lambda s, t: "odd-\\xff is not valid UTF-8, which a Dask cluster cannot carry", "stderr",
           name="lists-workers"),
    on_odd(lambda s, t: ["run", t / "new.jsonl", "--store", s, "--no-progress"], 2,
           lambda s, t: "odd-\\xff is not valid UTF-8", "stderr", name="run"),
]


def setting(command: str, value: str, says: str) -> Case:
    argv = {"train": lambda s, t: ["train", "--interactions", t / "log.csv", "--store", s, "--set", value],
            "run": lambda s, t: ["run", t / "new.jsonl", "--store", s, "--set", value, "--no-progress"]}[command]
    return Case(f"setting-{command}-{value}", argv, 2, lambda s, t: says)


SCHEDULER = "tcp://127.0.0.1:1"
MISC = [
    setting("train", "learn.seed=99999999999999999999999", "learn.seed must be an integer of at most 4294967295"),
    setting("train", "learn.tower_hidden=2147483648", "learn.tower_hidden must be an integer of at most"),
    setting("run", "fusion.knn_batch=99999999999999999999", "fusion.knn_batch must be an integer of at most"),
    setting("run", "clips.hop_s=inf", "clips.hop_s must be a finite number"),
    setting("run", "limits.max_image_pixels=2147483648", "limits.max_image_pixels must be an integer of at most"),
    Case("scheduler-unreachable-run", lambda s, t: ["run", t / "new.jsonl", "--store", s, "--scheduler", SCHEDULER],
         2, lambda s, t: f"--scheduler {SCHEDULER}: cannot connect"),
    Case("scheduler-unreachable-add", lambda s, t: ["add", t / "new.jsonl", "--store", s, "--scheduler", SCHEDULER],
         2, lambda s, t: f"--scheduler {SCHEDULER}: cannot connect"),
    Case("scheduler-unreachable-lists", lambda s, t: ["lists", "--store", s, "--scheduler", SCHEDULER], 2,
         lambda s, t: f"--scheduler {SCHEDULER}: cannot connect"),
    Case("scheduler-not-an-address", lambda s, t: ["lists", "--store", s, "--scheduler", "nowhere"], 2,
         lambda s, t: "--scheduler 'nowhere' is not a scheduler address"),
    Case("export-to-a-folder-hdf5", lambda s, t: ["export", "--store", s, "--format", "hdf5", "--to", t], 2,
         lambda s, t: f"--to {t} is a folder"),
    Case("export-to-a-folder-jsonl", lambda s, t: ["export", "--store", s, "--format", "jsonl", "--to", t], 2,
         lambda s, t: f"--to {t} is a folder"),
    Case("export-under-a-file", lambda s, t: ["export", "--store", s, "--format", "jsonl", "--to",
                                              t / "new.jsonl" / "x.jsonl"], 2,
         lambda s, t: f"cannot make its folder {t / 'new.jsonl'}"),
]

CASES = SPECIAL + DECODING + BANNED + HUGE_K + MISMATCH + NON_UTF8 + MISC


# ------------------------------------------------------------------ running a case
def fifo_paths(store: Path) -> list[Path]:
    """Every FIFO under ``store``."""
    import stat

    return [Path(d, n) for d, _, names in os.walk(store) for n in names
            if stat.S_ISFIFO(os.lstat(os.path.join(d, n)).st_mode)]


#: the watchdog: a separate process (a reader blocked in C, e.g. inside h5py, may hold this process's GIL)
WATCHDOG = """
import os, sys, time
time.sleep(float(sys.argv[1]))
while True:  # a reader blocked opening a FIFO is sent EOF (a writer that opens and closes at once)
    for path in sys.argv[2:]:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    time.sleep(0.1)
"""


def with_watchdog(fifos: list[Path], run: Callable[[], subprocess.CompletedProcess]):
    """``run()``, and (elapsed seconds); past :data:`HANG_S` a blocked reader of ``fifos`` is sent EOF."""
    dog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(HANG_S), *map(str, fifos)])
    t0 = time.perf_counter()
    try:
        return run(), time.perf_counter() - t0
    finally:
        dog.kill()
        dog.wait()


def limited_subprocess(argv: list) -> subprocess.CompletedProcess:
    """The CLI in a subprocess with at most 3 GiB of address space and :data:`HANG_S` seconds."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    try:
        return subprocess.run([sys.executable, "-m", "reelsim.jobs.cli", *map(str, argv)], capture_output=True,
                              text=True, timeout=HANG_S, preexec_fn=limit, check=False)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(argv, -9, e.stdout or "", f"timed out after {HANG_S} s")


def prepare(case: Case, store: Path, tmp: Path) -> None:
    (tmp / "new.jsonl").write_text(json.dumps({"id": "pears", "title": "Conference pears, 1 kg"}) + "\n",
                                   encoding="utf-8")
    users, items = interactions(seed=1)
    write_interactions(tmp / "log.csv", users, items)
    if case.setup is not None:
        case.setup(store, tmp)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(store, tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    prepare(case, store, work)
    argv = case.argv(store, work)
    if case.mode == "subprocess":
        proc, took = limited_subprocess(argv), 0.0
    elif case.mode == "fifo":
        proc, took = with_watchdog(fifo_paths(store), lambda: reelsim(*argv, subprocess_=False))
    else:
        proc, took = reelsim(*argv, subprocess_=False), 0.0
    report = f"exit {proc.returncode} after {took:.1f} s\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert took < HANG_S, "hung: " + report
    assert "Traceback" not in proc.stderr, report
    assert proc.returncode == case.code, report
    said = proc.stdout if case.where == "stdout" else proc.stderr
    for says in [case.says(store, work)] if isinstance(case.says(store, work), str) else case.says(store, work):
        assert says in said, f"{says!r} not said\n{report}"
    if case.code in (2, 4):  # the error is one line
        assert len(proc.stderr.strip().splitlines()) == 1, report
    assert "\x1b" not in proc.stderr and "\x1b" not in proc.stdout, report


def test_the_corpus_counts():
    """How many hostile cases run through the CLI (the report quotes it)."""
    assert len(CASES) == len({c.name for c in CASES}) >= 70


# ------------------------------------------------------------------ the same rules below the CLI
def test_verify_names_every_special_file_once_and_the_remedy_repairs_them(corpus, store, dask_client):
    """FIFOs at items.json, the catalog, a shard and the lists: verify names each once; `reelsim run` (the
    remedy it names) rewrites them all, and the store verifies clean."""
    bad = [fifo(FILES[w](store)) for w in ("items-json", "catalog", "shard", "parquet")]
    proc, took = with_watchdog(bad, lambda: reelsim("verify", "--store", store, "--json", subprocess_=False))
    found = json.loads(proc.stdout)
    assert proc.returncode == 3 and took < HANG_S, proc.stderr
    named = [p["path"] for p in found["problems"]]
    assert sorted(named) == sorted(map(str, bad)), found
    assert {p["redo"] for p in found["problems"]} == {"run", "lists"}
    run_items([corpus.parent / "catalog.jsonl"], store, dask_client, Config().with_overrides(fusion={"k": 3}))
    assert json.loads(reelsim("verify", "--store", store, "--json", subprocess_=False).stdout)["ok"]


def test_every_int_and_float_setting_is_bounded():
    """Every integer setting refuses 2^31 (``learn.seed`` 2^32), every float setting inf and nan: a UsageError
    naming it, before any work."""
    import dataclasses

    checked = 0
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            value = getattr(getattr(Config(), section.name), f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            bad = ["4294967296" if f.name == "seed" else "2147483648"] if isinstance(value, int) else ["inf", "nan"]
            for text in bad:
                with pytest.raises(UsageError, match=f"{section.name}.{f.name} must be"):
                    Config().with_settings([f"{section.name}.{f.name}={text}"])
                checked += 1
    assert checked > 40


def test_api_similar_and_features_take_hostile_arguments(corpus):
    s = api.open_store(corpus)
    assert len(s.similar("bananas", k=10**12)) == 7
    with pytest.raises(UsageError, match="level must be 'item' or 'shot'"):
        s.features("bananas", level="bogus")


def test_a_failed_lists_job_leaves_no_checkpoint(corpus, tmp_path):
    from reelsim.similarity.catalog import load_catalog
    from reelsim.similarity.grouped import GroupedIndex

    cat, weights = load_catalog(StoreLayout(corpus).catalog)
    gi = GroupedIndex.load(StoreLayout(corpus).index_dir)
    ckpt = Checkpoint(tmp_path / "ckpt", {"job": 1})

    class OutOfMemory:  # the search of the first batch fails, before any batch is finished
        def search_group(self, code, xq, k):
            raise MemoryError("no room for the candidates")

    with pytest.raises(MemoryError):
        knn_graph(cat, gi, weights, 10**12, checkpoint=ckpt, searcher=OutOfMemory())
    assert not ckpt.folder.exists()
    lists = knn_graph(cat, gi, weights, 10**12, checkpoint=ckpt)
    assert lists.I.shape == (8, 8)
