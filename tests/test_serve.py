"""`reelsim serve`: the HTTP service over a store, started as a user starts it (the CLI, in its own process).

Checked: every endpoint; that the service, `reelsim similar --json` and
`Store.answer` give the same list for the same (item, space, k); ids that
need escaping; the error table (status and the CLI's exit code); a banned
query; and that an add committed by another process is answered without a
restart and without a failed request while a client keeps asking.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pytest
from conftest import reelsim

from reelsim.config import FusionConfig
from reelsim.errors import BannedQueryError, DamagedStoreError, StoreError, UnknownItemError, UsageError
from reelsim.jobs.api import open_store
from reelsim.jobs.serve import ERRORS, error_status, path_id, query_params
from reelsim.similarity import CatalogEmbeddings, normalise
from reelsim.similarity.rebuild import new_stamp, save_and_list
from reelsim.similarity.synthetic import make_catalog
from reelsim.storage.atomic import write_text_atomic
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lock import StoreLockedError
from reelsim.storage.session import writing

#: titles of the text store's items; the ids are the keys, several of which need escaping in a URL
TITLES = {
    "anc-headphones": "Wireless noise-cancelling headphones",
    "earbuds/true wireless": "True wireless earbuds",
    "speaker": "Portable bluetooth speaker",
    "bananas 6 pack": "Organic bananas, bunch of 6",
    "äpfel rot ☕": "Crisp red apples, 1 kg",
    "oranges+lemons&limes": "Navel oranges, 2 kg bag",
    "50% off knife?": "Chef's knife, 20 cm",
    "board#oak": "Oak cutting board",
    "tea%2Fcups": "Porcelain tea cups, set of 4",
    "kettle": "Electric kettle, 1.7 l",
    "lamp": "Desk lamp with LED",
    "mug": "Ceramic coffee mug",
}
FUSION = FusionConfig(k=3, lists_formats=("parquet",))


def listed_store(folder: Path, raw: CatalogEmbeddings, fusion: FusionConfig, titles: dict | None = None) -> Path:
    """A store without media, listed as `reelsim run` lists one: one version with its catalog stamp and item count."""
    layout = StoreLayout(folder)
    with writing(layout.root, "run") as session:
        layout.index_dir.mkdir(parents=True, exist_ok=True)
        meta = {i: {"kind": "product", "title": (titles or {}).get(i, i)} for i in raw.ids}
        write_text_atomic(layout.items_meta, json.dumps(meta, ensure_ascii=False))
        session.note({"catalog": {"stamp": new_stamp(), "items": raw.n}})
        save_and_list(layout.root, normalise(raw), fusion)
    return layout.root


class Service:
    """`reelsim serve` in a subprocess on a free port; stopped with Ctrl-C (SIGINT) as a user stops it."""

    def __init__(self, store: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "reelsim.jobs.cli", "serve", "--store", str(store),
                                      "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            raise AssertionError(f"serve did not start: {line}{self.proc.stderr.read()}")
        self.url = line.split(" on ", 1)[1].split()[0]
        deadline = time.monotonic() + 120
        while True:  # the worker processes are up when /health answers
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"serve never answered /health: {self.proc.stderr.read()}")
            time.sleep(0.2)

    def get(self, path: str, method: str = "GET", timeout: float = 600) -> tuple[int, dict | None]:
        """(status, JSON body) of one request (the first search loads the text model: a minute on a busy machine)."""
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                body = r.read()
                return r.status, json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            body = e.read()
            return e.code, json.loads(body) if body else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def text_store(tmp_path_factory):
    """12 products with MiniLM title embeddings (so /search works) and a random image vector; a banned list."""
    from reelsim.extractors.registry import load

    ids = list(TITLES)
    text = load("text", "minilm-l6-v2", device="cpu").extract(list(TITLES.values()))
    image = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    raw = CatalogEmbeddings(ids, {"text": text, "image": image}, {m: np.ones(len(ids), bool) for m in ("text", "image")})
    store = listed_store(tmp_path_factory.mktemp("serve-store"), raw, FUSION, TITLES)
    banned = store / "banned.txt"
    banned.write_text("# never searched for\nhow to make a bomb\n", encoding="utf-8")
    return store, banned


@pytest.fixture(scope="module")
def service(text_store):
    store, banned = text_store
    svc = Service(store, "--workers", "1", "--banned", str(banned))
    yield svc
    svc.stop()


def test_health_and_items(service, text_store):
    status, body = service.get("/health")
    assert status == 200
    assert body["version"] >= 1 and body["items"] == len(TITLES)
    assert body["spaces"]["content"] == {"k": 3, "answers": "lists"}
    status, body = service.get("/items/" + quote("äpfel rot ☕", safe=""))
    assert (status, body) == (200, {"id": "äpfel rot ☕", "kind": "product", "title": "Crisp red apples, 1 kg"})
    status, _ = service.get("/health", method="HEAD")
    assert status == 200


@pytest.mark.parametrize("item", list(TITLES))
def test_ids_that_need_escaping_round_trip(service, item):
    status, body = service.get("/similar/" + quote(item, safe="") + "?k=3")
    assert status == 200 and body["item"] == item and len(body["neighbors"]) == 3
    assert item not in [n["item"] for n in body["neighbors"]]
    status, body = service.get("/items/" + quote(item, safe=""))
    assert status == 200 and body["id"] == item


def test_plus_in_a_path_is_a_plus_and_percent_2f_is_a_slash(service):
    assert service.get("/items/oranges+lemons%26limes")[1]["id"] == "oranges+lemons&limes"
    assert service.get("/items/earbuds%2Ftrue%20wireless")[1]["id"] == "earbuds/true wireless"
    assert service.get("/items/tea%252Fcups")[1]["id"] == "tea%2Fcups"  # the id holds the text %2F
    assert service.get("/items/tea%2Fcups")[0] == 404  # that is tea/cups, another (unknown) id


@pytest.mark.parametrize("k", [1, 3, 7])
def test_service_cli_and_api_give_the_same_list(service, text_store, k):
    """k 1 and 3 come from the stored lists (k = 3), 7 is computed live: the same either way."""
    store, _ = text_store
    api = open_store(store)
    for item in TITLES:
        status, served = service.get(f"/similar/{quote(item, safe='')}?k={k}")
        assert status == 200
        cli = json.loads(reelsim("similar", item, "--store", store, "-k", k, "--json", check=0).stdout)
        answer = api.answer(item, k).to_json()
        assert served == cli == answer
        assert served["source"] == ("lists" if k <= 3 else "live")
        assert [n["item"] for n in served["neighbors"]] == [n.item for n in api.similar(item, k)]


def test_weights_as_on_the_command_line(service, text_store):
    store, _ = text_store
    status, served = service.get("/similar/speaker?" + urlencode({"k": 3, "weights": "image=0"}))
    cli = json.loads(reelsim("similar", "speaker", "--store", store, "-k", 3, "--weights", "image=0", "--json",
                             check=0).stdout)
    assert status == 200 and served == cli and served["source"] == "live"


def test_search_as_the_cli_and_a_banned_query_is_403(service, text_store):
    store, banned = text_store
    status, served = service.get("/search?" + urlencode({"q": "noise cancelling headphones", "k": 3}))
    assert status == 200
    cli = json.loads(reelsim("search", "noise cancelling headphones", "--store", store, "-k", 3, "--banned", banned,
                             "--json", check=0).stdout)
    assert served == cli and served["results"][0]["item"] == "anc-headphones"
    status, body = service.get("/search?" + urlencode({"q": "bomb making instructions"}))
    assert status == 403 and body["exit_code"] == 4 and "line 2 of" in body["error"]
    assert "bomb" not in body["error"]  # the reason names the file and line, not the phrase
    reelsim("search", "bomb making instructions", "--store", store, "--banned", banned, check=4)


@pytest.mark.parametrize("path, status, needle", [
    ("/similar/nope", 404, "unknown item id 'nope'"),
    ("/items/nope", 404, "unknown item id 'nope'"),
    ("/similar/kettle?k=0", 400, "between 1 and 1000"),
    ("/similar/kettle?k=1001", 400, "between 1 and 1000"),
    ("/similar/kettle?k=ten", 400, "positive integer"),
    ("/similar/kettle?k=2&k=3", 400, "given twice"),
    ("/similar/kettle?space=nope", 400, "unknown space 'nope'"),
    ("/similar/kettle?limit=3", 400, "unknown parameter 'limit'"),
    ("/similar/kettle?weights=sound=1", 400, "bad --weights entry"),
    ("/similar/kettle?space=learned&weights=text=0", 400, "content space only"),
    ("/similar/kettle?space=learned", 503, "no trained model"),
    ("/similar/", 400, "no item id"),
    ("/similar/%FF", 400, "not UTF-8"),
    ("/search?q=", 400, "query is empty"),
    ("/search?k=3", 400, "query is empty"),
    ("/search?q=tea&space=blend", 400, "search space must be one of"),
    ("/health?verbose=1", 400, "takes no parameters"),
    ("/nope", 404, "no such endpoint"),
])
def test_errors_are_json_with_the_cli_exit_code(service, text_store, path, status, needle):
    got, body = service.get(path)
    assert got == status and needle in body["error"] and "Traceback" not in body["error"]
    assert body["exit_code"] == (1 if status == 500 else 2)


def test_the_cli_exits_with_the_code_the_service_reports(service, text_store):
    store, _ = text_store
    for args, path in ((["nope"], "/similar/nope"), (["kettle", "--space", "learned"], "/similar/kettle?space=learned"),
                       (["kettle", "--space", "nope"], "/similar/kettle?space=nope")):
        code = reelsim("similar", *args, "--store", store).returncode
        assert service.get(path)[1]["exit_code"] == code


def test_only_get_and_head(service):
    status, body = service.get("/health", method="POST")
    assert status == 405 and body["exit_code"] == 2


def test_serve_refuses_what_it_cannot_serve(tmp_path, text_store):
    store, _ = text_store
    out = reelsim("serve", "--store", tmp_path / "none", check=2)
    assert "no store at" in out.stderr
    out = reelsim("serve", "--store", store, "--banned", tmp_path / "none.txt", check=2)
    assert "no such banned-phrases file" in out.stderr
    out = reelsim("serve", "--store", store, "--workers", "0", check=2)
    assert "--workers" in out.stderr
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        out = reelsim("serve", "--store", store, "--port", busy.getsockname()[1], check=2)
        assert "cannot listen on 127.0.0.1" in out.stderr


def test_the_error_table():
    assert error_status(UnknownItemError("x")) == (404, 2)
    assert error_status(UsageError("x")) == (400, 2)
    assert error_status(BannedQueryError("x")) == (403, 4)
    assert error_status(StoreLockedError("x")) == (503, 2)
    assert error_status(DamagedStoreError("f", "truncated", "lists")) == (503, 2)
    assert error_status(StoreError("x")) == (503, 2)
    assert error_status(KeyError("x")) == (500, 1)
    # most specific first: no class is shadowed by one of its bases listed before it
    for i, (cls, _, _) in enumerate(ERRORS):
        assert not any(issubclass(cls, base) for base, _, _ in ERRORS[:i])


def test_paths_and_query_strings_decode():
    assert path_id(b"/items/a%2Fb%20c+d%25%E2%98%95", b"/items/") == "a/b c+d%☕"
    assert query_params(b"q=red+apples%21&k=3", "search") == {"q": "red apples!", "k": "3"}
    with pytest.raises(UsageError, match="not UTF-8"):
        query_params(b"q=%C3", "search")


# ---------------------------------------------------------------------------- a new version under load

ADD = """
import sys
from reelsim.config import FusionConfig
from reelsim.similarity import CatalogEmbeddings
from reelsim.similarity.incremental import add_vectors
from reelsim.similarity.synthetic import make_catalog
raw = make_catalog(300, dims={"image": 16, "text": 8}, seed=5).raw
s = slice(280, 300)
new = CatalogEmbeddings(raw.ids[s], {m: v[s] for m, v in raw.vectors.items()}, {m: v[s] for m, v in raw.masks.items()})
add_vectors(sys.argv[1], new, {i: {"kind": "product", "title": i} for i in new.ids},
            FusionConfig(k=5, lists_formats=("parquet",)))
"""


def test_an_add_in_another_process_is_answered_without_restart_or_failed_request(tmp_path):
    raw = make_catalog(300, dims={"image": 16, "text": 8}, seed=5).raw
    s = slice(0, 280)
    old = CatalogEmbeddings(raw.ids[s], {m: v[s] for m, v in raw.vectors.items()},
                            {m: v[s] for m, v in raw.masks.items()})
    store = listed_store(tmp_path / "s", old, FusionConfig(k=5, lists_formats=("parquet",)))
    svc = Service(store, "--workers", "2")
    try:
        version = svc.get("/health")[1]["version"]
        new_id = raw.ids[290]
        assert svc.get(f"/similar/{new_id}")[0] == 404
        failures, done, counts = [], threading.Event(), {"requests": 0}
        rng = np.random.default_rng(0)

        def keep_asking():  # what a client sees during the add: every request for a known item answers
            while not done.is_set():
                item = old.ids[int(rng.integers(0, 280))]
                try:
                    status, body = svc.get(f"/similar/{item}?k=5", timeout=30)
                    if status != 200 or len(body["neighbors"]) != 5:
                        failures.append((item, status, body))
                except OSError as e:
                    failures.append((item, "no answer", repr(e)))
                counts["requests"] += 1

        client = threading.Thread(target=keep_asking)
        client.start()
        time.sleep(0.5)
        before = counts["requests"]
        subprocess.run([sys.executable, "-c", ADD, str(store)], check=True, timeout=300,
                       env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        during = counts["requests"] - before
        deadline = time.monotonic() + 30
        while svc.get(f"/similar/{new_id}")[0] != 200:  # both workers switch at their next request
            assert time.monotonic() < deadline, "the new item was never answered"
            time.sleep(0.05)
        time.sleep(0.5)
        done.set()
        client.join()
        assert failures == [] and during > 0
        health = svc.get("/health")[1]
        assert health["version"] > version and health["items"] == 300
        answer = open_store(store).answer(new_id, 5).to_json()
        for _ in range(6):  # whichever worker answers
            assert svc.get(f"/similar/{new_id}?k=5")[1] == answer
        assert answer["source"] == "lists" and answer["version"] == health["version"]
    finally:
        svc.stop()


def test_a_killed_add_leaves_the_served_version_whole_and_a_rerun_adds(tmp_path):
    """An add killed after it saved its index and before its commit (as the OOM killer did to one in
    benchmarks/serve.py at 10^6): the store still answers from its version, the index that version names is
    there, and the same add run again succeeds."""
    from reelsim.similarity.grouped import GroupedIndex

    raw = make_catalog(300, dims={"image": 16, "text": 8}, seed=5).raw
    old = CatalogEmbeddings(raw.ids[:280], {m: v[:280] for m, v in raw.vectors.items()},
                            {m: v[:280] for m, v in raw.masks.items()})
    fusion = FusionConfig(k=5, lists_formats=("parquet",))
    counted, store = listed_store(tmp_path / "counted", old, fusion), listed_store(tmp_path / "s", old, fusion)
    count = ADD + "\nfrom reelsim.storage.faults import fault_count\nprint(fault_count('write'))\n"
    out = subprocess.run([sys.executable, "-c", count, str(counted)], capture_output=True, text=True, check=True,
                         timeout=300, env={**os.environ, "REELSIM_FAULT": "kill:write:1000000"})  # counts, kills none
    journal = int(out.stdout.split()[-1]) - 1  # the last two writes are the commit's journal and version.json
    killed = subprocess.run([sys.executable, "-c", ADD, str(store)], timeout=300, check=False,  # index, lists written
                            env={**os.environ, "REELSIM_FAULT": f"kill:write:{journal}"})
    assert killed.returncode == -signal.SIGKILL
    GroupedIndex.load(store / "index")  # raised "names index file ..., which is not there" before the fix
    assert open_store(store).version == 1
    subprocess.run([sys.executable, "-c", ADD, str(store)], check=True, timeout=300)
    st = open_store(store)
    assert st.version == 2 and st.answer(raw.ids[290], 5).source == "lists"
