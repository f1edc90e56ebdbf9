"""The store as versions: one write session, lists as the answer in every space, hygiene everywhere, fresh readers.

One real run over text-only products (fast: the text model only), a trained
model and the lists of every space; each test works on its own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import reelsim, run_items

from reelsim import open_store
from reelsim.config import Config, FusionConfig, LearnConfig
from reelsim.errors import ReelsimError, StoreWriteError
from reelsim.similarity.spaces import train_store, write_space_lists
from reelsim.storage.atomic import remove_file, write_text_atomic
from reelsim.storage.layout import StoreLayout
from reelsim.storage.listset import ListSet
from reelsim.storage.lock import StoreLockedError
from reelsim.storage.session import WriteSession
from reelsim.storage.version import read_version

TITLES = {
    "apple-crate": "Crate of crisp red apples, 5 kg", "bananas": "Organic bananas, bunch of 6",
    "banana-bunch": "Ripe banana bunch, 1 kg", "oranges": "Navel oranges, 2 kg bag",
    "pears": "Conference pears, 1 kg", "grapes": "Seedless green grapes, 500 g",
    "chef-knife": "Chef's knife, 20 cm blade", "cutting-board": "Oak cutting board",
    "frying-pan": "Non-stick frying pan, 28 cm", "whisk": "Stainless steel balloon whisk",
    "kettle": "Electric kettle, 1.7 litres", "toaster": "Two-slice toaster",
    "headphones": "Wireless noise-cancelling headphones", "earbuds": "True wireless earbuds",
    "speaker": "Portable bluetooth speaker", "soundbar": "TV soundbar with subwoofer",
    "turntable": "Belt-drive record turntable", "microphone": "USB condenser microphone",
    "garden-hose": "Garden hose, 25 m", "shovel": "Steel garden shovel", "rake": "Leaf rake",
    "gloves": "Gardening gloves, size M", "seeds": "Tomato seeds, heirloom mix", "planter": "Terracotta planter",
}
GROUPS = [list(TITLES)[i:i + 6] for i in range(0, len(TITLES), 6)]
LEARN = ["--set", "learn.elsa_dim=4", "--set", "learn.tower_epochs=3", "--set", "learn.tower_hidden=32",
         "--set", "learn.tower_dim=16", "--set", "learn.warm_min_interactions=2", "--set", "learn.tower_batch=32"]
SPACES = ("content", "learned", "blend")


def products(folder: Path, titles: dict, name: str = "catalog.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps({"id": i, "title": t}) + "\n" for i, t in titles.items()), encoding="utf-8")
    return path


def interactions(path: Path, seed: int = 0) -> Path:
    """Users who each engage with items of one group (co-engagement inside the groups)."""
    rng = np.random.default_rng(seed)
    rows = ["user,item"]
    for u in range(240):
        group = GROUPS[u % len(GROUPS)]
        rows += [f"u{u},{i}" for i in rng.choice(group, size=4, replace=False)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def trained_store(d: Path, dask_client, spaces=("learned", "blend"), formats="parquet,jsonl,hdf5") -> Path:
    """``d/store``: content lists (k=5) of :data:`TITLES`, a model trained on ``d/log.csv``, lists of ``spaces``."""
    store = d / "store"
    run_items([products(d, TITLES)], store, dask_client, Config().with_overrides(fusion={"k": 5}))
    reelsim("train", "--interactions", interactions(d / "log.csv"), "--store", store, *LEARN, check=0)
    for space in spaces:
        reelsim("lists", "--store", store, "--space", space, "-k", "5", "--lists-format", formats, check=0)
    return store


@pytest.fixture(scope="module")
def base(tmp_path_factory, dask_client):
    """A store with content lists (k=5), a trained model and learned and blend lists: its folder."""
    return trained_store(tmp_path_factory.mktemp("versions"), dask_client)


@pytest.fixture
def store(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "store"))


def version(store: Path) -> int:
    return read_version(StoreLayout(store))["version"]


def rows_of(path: Path) -> dict[str, list[str]]:
    """item -> neighbours in rank order, from a Parquet list file."""
    out: dict[str, list[str]] = {}
    for r in pq.read_table(path).to_pylist():
        out.setdefault(r["item"], []).append(r["neighbor"])
    return out


# ---------------------------------------------------------------------------- the write session


def test_session_stages_every_file_until_its_commit(tmp_path):
    layout = StoreLayout(tmp_path / "s")
    layout.make_root()
    layout.index_dir.mkdir()
    write_text_atomic(layout.items_meta, "old")
    with WriteSession(layout.root, "test") as session:
        write_text_atomic(layout.items_meta, "new")
        write_text_atomic(layout.index_dir / "other.json", "x")
        assert layout.items_meta.read_text() == "old" and not (layout.index_dir / "other.json").exists()
        assert len(session.staged) == 2
        v = session.commit({"catalog": {"stamp": "s1", "items": 0}})
    assert layout.items_meta.read_text() == "new" and (layout.index_dir / "other.json").read_text() == "x"
    assert v["version"] == 1 and read_version(layout)["catalog"]["stamp"] == "s1"
    assert not layout.commit_journal.exists() and not layout.lock.exists()
    assert not list(layout.index_dir.glob(".*.tmp"))


def test_a_failed_session_leaves_the_store_as_it_was(tmp_path):
    layout = StoreLayout(tmp_path / "s")
    layout.make_root()
    layout.index_dir.mkdir()
    write_text_atomic(layout.items_meta, "old")
    with pytest.raises(RuntimeError), WriteSession(layout.root, "test"):
        write_text_atomic(layout.items_meta, "new")
        raise RuntimeError("the command failed half-way")
    assert layout.items_meta.read_text() == "old" and version(layout.root) == 0
    assert not list(layout.index_dir.glob(".*.tmp")) and not layout.lock.exists()


def test_a_removal_in_the_store_waits_for_the_commit(tmp_path):
    """Also of a file written at once (the previous build's index file): the current version refers to it."""
    layout = StoreLayout(tmp_path / "s")
    layout.make_root()
    layout.index_dir.mkdir()
    old = layout.index_dir / "group-1-aaaaaaaa.faiss"
    old.write_bytes(b"old index")
    with pytest.raises(RuntimeError), WriteSession(layout.root, "add"):
        remove_file(old)
        assert old.exists()
        raise RuntimeError("failed before the commit")
    assert old.exists()
    with WriteSession(layout.root, "add") as session:
        remove_file(old)
        assert old.exists()
        session.commit()
    assert not old.exists()


def test_a_full_disk_is_one_line_naming_the_file_and_nothing_changes(tmp_path, monkeypatch):
    layout = StoreLayout(tmp_path / "s")
    layout.make_root()
    layout.index_dir.mkdir()
    write_text_atomic(layout.items_meta, "old")
    monkeypatch.setenv("REELSIM_FAULT", "enospc:write:2")
    with pytest.raises(StoreWriteError, match=r"cannot write .*other\.json: no space left on device"):
        with WriteSession(layout.root, "test") as session:
            write_text_atomic(layout.items_meta, "new")
            write_text_atomic(layout.index_dir / "other.json", "x")
            session.commit()
    assert layout.items_meta.read_text() == "old" and not (layout.index_dir / "other.json").exists()
    assert not list(layout.index_dir.glob(".*.tmp"))


def test_a_commit_killed_half_way_is_finished_by_the_next_writer(tmp_path):
    layout = StoreLayout(tmp_path / "s")
    layout.make_root()
    layout.index_dir.mkdir()
    script = ("import sys; from reelsim.storage.session import WriteSession; "
              "from reelsim.storage.atomic import write_text_atomic as w\n"
              f"root = {str(layout.root)!r}\n"
              "with WriteSession(root, 'test') as s:\n"
              "    for name in 'abc': w(root + '/index/' + name + '.json', name)\n"
              "    s.commit({'catalog': {'stamp': 'x', 'items': 3}})\n")
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "REELSIM_FAULT": "kill:rename:2"})
    assert proc.returncode == -9
    assert layout.commit_journal.exists() and (layout.index_dir / "a.json").exists()
    assert not (layout.index_dir / "c.json").exists() and version(layout.root) == 0
    found = json.loads(reelsim("verify", "--store", layout.root, "--json", check=3).stdout)
    assert [(p["path"], p["redo"]) for p in found["problems"]] == [(str(layout.commit_journal), "verify --repair")]
    reelsim("verify", "--repair", "--store", layout.root, check=0)  # the next writer (here: the repair) finishes it
    assert [(layout.index_dir / f"{n}.json").read_text() for n in "abc"] == list("abc")
    assert read_version(layout)["catalog"]["stamp"] == "x" and not layout.commit_journal.exists()


def test_a_kept_value_may_be_made_of_other_kept_values(tmp_path):
    """The blocklist mask is made of the catalog's ids, both kept per version: asking for one inside the other
    returns (it hung on a plain lock), and each is made once."""
    import threading

    from reelsim.similarity.answer import VersionView

    view = VersionView(StoreLayout(tmp_path), {}, {}, {})
    made, got = [], []

    def ids():
        made.append("ids")
        return ["a", "b"]

    worker = threading.Thread(target=lambda: got.append(view.live(("blocked",), lambda: [
        i == "b" for i in view.live(("ids",), ids)])))
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and got == [[False, True]]
    assert view.live(("ids",), ids) == ["a", "b"] and made == ["ids"]


def test_writers_refuse_a_store_another_process_holds(store, tmp_path):
    """`train`, `lists --space` and `lists` all take the lock (issue #20, case 1)."""
    layout = StoreLayout(store)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        layout.lock.write_text(json.dumps({"host": os.uname().nodename, "pid": sleeper.pid,
                                           "started_utc": "now", "command": "reelsim run"}))
        before = layout.version_file.read_text()
        log = interactions(tmp_path / "log.csv", seed=1)
        for args in (("train", "--interactions", log, *LEARN), ("lists", "--space", "learned"), ("lists",)):
            out = reelsim(*args, "--store", store, check=2)
            assert "in use by" in out.stderr and "Traceback" not in out.stderr
        assert layout.version_file.read_text() == before
    finally:
        sleeper.kill()
        layout.lock.unlink()


# ---------------------------------------------------------------------------- one answer


@pytest.mark.parametrize("space", SPACES)
def test_cli_api_and_lists_file_give_the_same_list(store, space):
    folder = StoreLayout(store).space_lists_dir(space)
    stored = rows_of(folder / "neighbors.parquet")
    st = open_store(store)
    for item in TITLES:
        out = json.loads(reelsim("similar", item, "--store", store, "--space", space, "-k", "3", "--json",
                                 check=0).stdout)
        assert out["source"] == "lists" and out["space"] == space and out["version"] == st.version
        assert [n["item"] for n in out["neighbors"]] == stored[item][:3]
        assert [n.item for n in st.similar(item, 3, space=space)] == stored[item][:3]
    beyond = st.answer("apple-crate", 12, space=space)  # more than the stored k: computed live
    assert beyond.source == "live" and len(beyond.neighbors) == 12
    assert [n.item for n in beyond.neighbors][:5] == stored["apple-crate"]  # same hygiene, same order


def test_flags_that_cannot_apply_to_a_space_are_refused(store):
    for args, says in ((("lists", "--space", "learned", "--weights", "text=1"), "--weights applies to the content"),
                       (("lists", "--space", "blend", "--index", "exact"), "--index applies"),
                       (("lists", "--space", "learned", "--workers", "2"), "--workers applies"),
                       (("similar", "bananas", "--space", "learned", "--weights", "text=0"), "--weights applies")):
        out = reelsim(*args, "--store", store, check=2)
        assert says in out.stderr and "Traceback" not in out.stderr


def test_a_blocklisted_item_appears_in_no_space_and_no_output(store, tmp_path):
    """`lists --space learned --blocklist bananas` blocks in every space and every output (issue #19, case 2)."""
    out = json.loads(reelsim("lists", "--store", store, "--space", "learned", "--blocklist", "bananas",
                             "--lists-format", "parquet,jsonl,hdf5", check=0).stdout)
    assert out["blocked"] >= 1 and "content" in out and "blend" in out["spaces"]
    layout = StoreLayout(store)
    v = read_version(layout)
    assert v["blocklist"]["phrases"] == ["bananas"]
    sets = {s: ListSet.open(layout.list_set(v["lists"][s])) for s in SPACES}
    blocked = {i for i, b in zip(sets["content"].ids(), sets["content"].blocked) if b}
    assert "bananas" in blocked
    st = open_store(store)
    for space in SPACES:
        assert sets[space].manifest["hygiene"]["blocklist"] == ["bananas"]
        folder = layout.space_lists_dir(space)
        listed = [r["neighbor"] for r in pq.read_table(folder / "neighbors.parquet").to_pylist()]
        listed += [json.loads(line)["neighbor"] for line in (folder / "neighbors.jsonl").read_text().splitlines()]
        import h5py

        assert (folder / "neighbors.h5").exists() == (space != "content")  # each space keeps its own formats
        if space != "content":
            with h5py.File(folder / "neighbors.h5") as f:
                ids = [i.decode() for i in f["ids"][...]]
                listed += [ids[j] for j in f["neighbors"][...].ravel() if j >= 0]
        for item in TITLES:
            for k in (5, 15):  # from the lists, and live (beyond the stored k)
                listed += [n.item for n in st.similar(item, k, space=space)]
            cli = json.loads(reelsim("similar", item, "--store", store, "--space", space, "--json", "-k", 20,
                                     check=0).stdout)
            listed += [n["item"] for n in cli["neighbors"]]
        if space == "content":
            listed += [n.item for item in TITLES for n in st.similar(item, 8, weights={"text": 1, "image": 0})]
        exported = {fmt: tmp_path / f"{space}.{fmt}" for fmt in ("parquet", "jsonl")}
        for fmt, to in exported.items():
            reelsim("export", "--store", store, "--format", fmt, "--space", space, "--to", to, check=0)
        listed += [r["neighbor"] for r in pq.read_table(exported["parquet"]).to_pylist()]
        listed += [json.loads(line)["neighbor"] for line in exported["jsonl"].read_text().splitlines()]
        page = tmp_path / f"{space}.html"
        reelsim("report", "--store", store, "--space", space, "--to", page, "--items", "oranges,apple-crate",
                "-k", "10", "--no-progress", check=0)
        html = page.read_text(encoding="utf-8")
        assert "oranges" in html and not any(f">{b}<" in html or f"'{b}'" in html for b in blocked), space
        assert not blocked & set(listed), (space, blocked & set(listed))
    for space in ("content", "learned"):
        found = json.loads(reelsim("search", "banana", "--store", store, "--space", space, "-k", 10, "--json",
                                   check=0).stdout)
        assert found["results"] and not blocked & {r["item"] for r in found["results"]}


def test_an_open_store_follows_an_add_in_another_process(store, tmp_path):
    """Issue #19, case 3: no UnknownItemError, and the old item gets its new nearest neighbour."""
    st = open_store(store)
    before = st.similar("apple-crate", 3)
    v0 = st.version
    new = products(tmp_path, {"apple-box": "Box of crisp red apples, 5 kg", "kiwi-pack": "Kiwi fruit, pack of 6"},
                   "new.jsonl")
    proc = reelsim("add", new, "--store", store, "--workers", "1", "--no-progress", check=0)
    assert "added 2 items" in proc.stdout
    assert st.version > v0 and {"apple-box", "kiwi-pack"} <= set(st.ids())
    assert st.answer("kiwi-pack", 3).source == "lists" and len(st.similar("kiwi-pack", 3)) == 3
    after = st.similar("apple-crate", 3)
    assert after[0].item == "apple-box" and after != before


def test_stale_learned_lists_are_not_served_and_add_rewrites_them(store, tmp_path, dask_client):
    """Issue #20, case 6: a run that drops an item, then `add --space learned`: lists match the catalog."""
    rerun = products(tmp_path, TITLES, "rerun.jsonl")
    with rerun.open("a", encoding="utf-8") as f:  # grapes fails this time: the run leaves it out
        f.write(json.dumps({"id": "grapes", "title": TITLES["grapes"], "image": "gone.png"}) + "\n")
    rerun.write_text("".join(line + "\n" for line in rerun.read_text().splitlines()
                             if '"grapes"' not in line or "gone.png" in line), encoding="utf-8")
    report = run_items([rerun], store, dask_client, Config().with_overrides(fusion={"k": 5}))
    assert report.exit_code == 3 and [r["item"] for r in report.failed] == ["grapes"]
    assert "grapes" not in open_store(store).ids()
    st = open_store(store)
    assert st.answer("pears", 3, space="learned").source == "live"  # made over another catalog: not served
    assert "grapes" not in {n.item for n in st.similar("pears", 10, space="learned")}
    verdict = json.loads(reelsim("verify", "--store", store, "--json").stdout)
    assert any("learned lists" in n and "answered live" in n for n in verdict["notes"])
    assert {p["item"] for p in verdict["problems"]} == {"grapes"}  # its old shard, not indexed: `run` redoes it
    new = products(tmp_path, {"kiwi-pack": "Kiwi fruit, pack of 6"}, "new.jsonl")
    from reelsim.jobs import api

    api.add([new], store, Config().with_overrides(fusion={"k": 5}), client=dask_client, space="learned")
    listed = rows_of(StoreLayout(store).space_lists_dir("learned") / "neighbors.parquet")
    assert "kiwi-pack" in listed and "grapes" not in listed and not any("grapes" in v for v in listed.values())
    assert st.answer("kiwi-pack", 3, space="learned").source == "lists"


def test_model_and_lists_files_are_checked_by_verify(store):
    """Issue #20, case 3: damage in the learned space is named, with the command that rewrites it."""
    layout = StoreLayout(store)
    v = read_version(layout)
    cases = {
        layout.learned_dir / "tower.npz": "train",
        layout.learned_dir / "provenance.json": "train",
        layout.list_set(v["lists"]["learned"]) / "S.npy": "lists --space learned",
        layout.space_lists_dir("blend") / "neighbors.jsonl": "lists --space blend",
    }
    space = lambda redo: "blend" if "blend" in redo else "learned"
    uses = {  # what each command reads of the learned space, and so must name when damaged
        "similar": lambda redo: ("similar", "pears", "--store", store, "--space", space(redo), "-k", "20"),
        "search": lambda redo: ("search", "fresh fruit", "--store", store, "--space", "learned"),
        "lists": lambda redo: ("lists", "--store", store, "--space", space(redo), "-k", "5"),  # as made: same lists
    }
    for path, redo in cases.items():
        saved = path.read_bytes()
        path.write_bytes(saved[: len(saved) // 2])
        found = json.loads(reelsim("verify", "--store", store, "--json", check=3).stdout)
        assert {(p["path"], p["redo"]) for p in found["problems"]} >= {(str(path), redo)}, found
        for name, args in uses.items():
            out = reelsim(*args(redo))
            assert "Traceback" not in out.stderr, (name, out.stderr)
            reads_it = redo == "train" or (name == "similar" and path.suffix == ".npy")
            if reads_it:
                assert out.returncode == 2 and str(path) in out.stderr, (name, path, out.stderr)
        path.write_bytes(saved)
    assert json.loads(reelsim("verify", "--store", store, "--json", check=0).stdout)["ok"]


def test_write_space_lists_applies_dedup_and_mmr_in_the_space(store):
    plain = rows_of(StoreLayout(store).space_lists_dir("learned") / "neighbors.parquet")
    write_space_lists(store, "learned", FusionConfig(k=5, mmr=0.3, lists_formats=("parquet",)))
    diverse = rows_of(StoreLayout(store).space_lists_dir("learned") / "neighbors.parquet")
    assert diverse != plain and all(len(v) == 5 for v in diverse.values())
    assert all(diverse[i][0] == plain[i][0] for i in TITLES)  # MMR keeps the best first
    assert open_store(store).answer("pears", 5, space="learned").source == "lists"


def test_a_failed_training_keeps_the_old_model(store, tmp_path):
    """A training that fails (here: a log with no known item) publishes nothing and keeps the model."""
    layout = StoreLayout(store)
    prov = (layout.learned_dir / "provenance.json").read_text()
    bad = tmp_path / "log.csv"
    bad.write_text("user,item\nu1,nothing-we-know\n", encoding="utf-8")
    with pytest.raises(ReelsimError, match="none of the 1 rows names an item"):
        train_store(store, bad, LearnConfig())
    assert (layout.learned_dir / "provenance.json").read_text() == prov
    assert not list(layout.learned_dir.glob(".*.tmp"))


def test_lock_error_type(store):
    with WriteSession(store, "a"):
        with pytest.raises(StoreLockedError):
            WriteSession(store, "b").__enter__()
