"""Broken stores: every command that reads one names the damaged file (exit 2), never a traceback.

Each test damages a copy of the session's finished store (``run_store``) the
way a crash, a full disk or a careless hand does, then runs the real CLI
(in-process; ``run``/``add`` on the session's Dask cluster through the API).
``reelsim verify`` must name the same damage and what ``run`` or ``lists``
would redo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from conftest import reelsim, run_items

import reelsim as api
from reelsim.config import Config
from reelsim.errors import StoreError, UsageError
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lock import StoreLock


@pytest.fixture
def store(run_store, tmp_path) -> Path:
    """A private copy of the session's finished store."""
    return Path(shutil.copytree(run_store[0], tmp_path / "store"))


# ------------------------------------------------------------------ damage
def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(b"\xff\xfe not what reelsim wrote \x00\x81" * 40)
    return path


def unmark(path: Path) -> Path:
    with h5py.File(path, "a") as f:
        del f.attrs["complete"]
    return path


def not_a_map(path: Path) -> Path:
    path.write_text("[1, 2]")
    return path


def content_set_file(store: Path, name: str) -> Path:
    """A file of the content list set that the store's version names."""
    layout = StoreLayout(store)
    return layout.list_set(json.loads(layout.version_file.read_text())["lists"]["content"]) / name


def faiss_file(store: Path) -> Path:
    return next(StoreLayout(store).index_dir.glob("group-*.faiss"))


DAMAGE = {
    "truncated-shard": lambda s: truncate(StoreLayout(s).shard("carpet")),
    "unmarked-shard": lambda s: unmark(StoreLayout(s).shard("carpet")),
    "garbage-items-json": lambda s: garbage(StoreLayout(s).items_meta),
    "items-json-not-a-map": lambda s: not_a_map(StoreLayout(s).items_meta),
    "truncated-catalog": lambda s: truncate(StoreLayout(s).catalog),
    "garbage-faiss-index": lambda s: garbage(faiss_file(s)),
    "garbage-index-manifest": lambda s: garbage(StoreLayout(s).index_dir / "index.json"),
    "garbage-parquet": lambda s: garbage(StoreLayout(s).list_file("parquet")),
    "garbage-list-set": lambda s: garbage(content_set_file(s, "S.npy")),
}

#: (damage, command) -> exit code; every message names the damaged file
COMMANDS = {
    "similar": lambda s, to: ("similar", "fractal", "--store", s, "-k", 8),
    "similar-json": lambda s, to: ("similar", "fractal", "--store", s, "-k", 8, "--json"),
    "shots": lambda s, to: ("shots", "carpet", "--store", s),
    "report": lambda s, to: ("report", "--store", s, "--to", to, "--items", "fractal,carpet", "--no-progress"),
    "export-hdf5": lambda s, to: ("export", "--store", s, "--format", "hdf5", "--to", to),
    "export-parquet": lambda s, to: ("export", "--store", s, "--format", "parquet", "--to", to),
    "lists": lambda s, to: ("lists", "--store", s, "--no-progress"),
}
CASES = [
    ("truncated-shard", "similar", 2), ("truncated-shard", "shots", 2), ("truncated-shard", "report", 2),
    ("truncated-shard", "export-hdf5", 3),
    ("unmarked-shard", "shots", 2), ("unmarked-shard", "similar", 2),
    ("garbage-items-json", "similar", 2), ("garbage-list-set", "similar", 2), ("garbage-list-set", "report", 2),
    ("items-json-not-a-map", "similar", 2),
    ("truncated-catalog", "similar", 2), ("truncated-catalog", "lists", 2), ("truncated-catalog", "report", 2),
    ("garbage-faiss-index", "similar-json", 2), ("garbage-index-manifest", "similar", 2),
    ("garbage-parquet", "export-parquet", 2),
]


@pytest.mark.parametrize("damage,command,code", CASES, ids=[f"{d}-{c}" for d, c, _ in CASES])
def test_damaged_file_is_named_not_a_traceback(store, tmp_path, damage, command, code):
    bad = DAMAGE[damage](store)
    proc = reelsim(*COMMANDS[command](store, tmp_path / "out"))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and str(bad) in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") <= 1 + (code == 3) * 2, proc.stderr  # a line or two, not a dump


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_verify_names_the_damage_and_the_remedy(store, damage):
    bad = DAMAGE[damage](store)
    proc = reelsim("verify", "--store", store, "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    found = json.loads(proc.stdout)
    assert not found["ok"] and any(p["path"] == str(bad) for p in found["problems"]), found
    remedy = {p["path"]: p["redo"] for p in found["problems"]}[str(bad)]
    assert remedy == ("run" if damage.endswith("shard") or damage.startswith(("garbage-items", "items-json",
                                                                              "truncated-catalog")) else "lists")
    text = reelsim("verify", "--store", store)
    assert text.returncode == 3 and str(bad) in text.stdout and "reelsim " + remedy in text.stdout


@pytest.mark.parametrize("damage", ["truncated-shard", "garbage-faiss-index"])
def test_the_named_remedy_repairs_the_store(store, manifest, dask_client, damage):
    DAMAGE[damage](store)
    (StoreLayout(store).knn_checkpoint / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
    (StoreLayout(store).knn_checkpoint / "manifest.json").write_text("{}")  # an unfinished kNN job, too
    redo = json.loads(reelsim("verify", "--store", store, "--json").stdout)["redo"]
    if redo["run"]:
        assert redo["run"] == ["carpet"]
        run_items([manifest], store, dask_client, Config().with_overrides(fusion={"k": 5}))
    else:
        assert redo["lists"]
        reelsim("lists", "--store", store, "--no-progress", check=0)
    assert json.loads(reelsim("verify", "--store", store, "--json").stdout)["ok"]


def test_verify_clean_store(run_store):
    proc = reelsim("verify", "--store", run_store[0], "--json", check=0)
    found = json.loads(proc.stdout)
    assert found["ok"] and found["problems"] == []
    assert found["checked"]["shards"] == 10 and found["checked"]["indexed"] == 10 and found["checked"]["rows"] > 0
    assert reelsim("verify", "--store", run_store[0], check=0).stdout.startswith("ok: ")


def test_verify_finds_missing_and_unindexed_shards_and_leftovers(store):
    layout = StoreLayout(store)
    layout.shard("banana").unlink()  # indexed, no shard
    stray = layout.shard("not-indexed")  # a complete shard the index lacks
    stray.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(layout.shard("apple"), stray)
    with h5py.File(stray, "a") as f:
        f.attrs["item_id"] = "not-indexed"
    (layout.shards_dir / "ab").mkdir(exist_ok=True)
    (layout.shards_dir / "ab" / ".x.h5.1234.tmp").write_bytes(b"partial")
    found = json.loads(reelsim("verify", "--store", store, "--json").stdout)
    about = {p["item"]: p for p in found["problems"] if p.get("item")}
    assert about["banana"]["redo"] == "run" and "no shard" in about["banana"]["what"]
    assert about["not-indexed"]["redo"] == "run" and "not in the index" in about["not-indexed"]["what"]
    assert any("temporary file" in p["what"] for p in found["problems"])


@pytest.mark.parametrize("command", ["similar", "shots", "lists", "verify", "export-hdf5"])
def test_store_that_is_a_file(tmp_path, command):
    (tmp_path / "file").write_text("not a store")
    proc = reelsim(*COMMANDS.get(command, lambda s, to: ("verify", "--store", s))(tmp_path / "file", tmp_path / "o"))
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr, proc.stderr


def test_run_into_a_store_path_that_is_a_file(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "t", "title": "text"}) + "\n")
    (tmp_path / "file").write_text("not a store")
    proc = reelsim("run", tmp_path / "m.jsonl", "--store", tmp_path / "file", subprocess_=False)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_lists_waits_for_the_lock(store):
    before = StoreLayout(store).list_file("parquet").read_bytes()
    with StoreLock(store):
        proc = reelsim("lists", "--store", store, "--no-progress")
    assert proc.returncode == 2 and "is in use by pid" in proc.stderr
    assert StoreLayout(store).list_file("parquet").read_bytes() == before
    with StoreLock(store), pytest.raises(StoreError, match="in use"):
        api.open_store(store).rebuild_lists()


def test_run_after_add_keeps_every_item_with_a_shard(store, manifest, dask_client, tmp_path):
    (tmp_path / "new.jsonl").write_text(json.dumps({"id": "added-later", "title": "Wireless earbuds, blue"}) + "\n")
    api.add([tmp_path / "new.jsonl"], store, client=dask_client)
    assert "added-later" in api.open_store(store).ids()
    report = run_items([manifest], store, dask_client, Config().with_overrides(fusion={"k": 5}))
    assert {r["status"] for r in report.items} <= {"cached", "failed"}
    ids = api.open_store(store).ids()
    assert "added-later" in ids and len(ids) == 11
    assert [n.item for n in api.open_store(store).similar("added-later", k=1)] == ["earbuds"]


def test_add_refuses_a_damaged_store_before_any_work(store, dask_client, tmp_path):
    bad = garbage(content_set_file(store, "floor.npy"))
    (tmp_path / "new.jsonl").write_text(json.dumps({"id": "added-later", "title": "Wireless earbuds"}) + "\n")
    with pytest.raises(StoreError, match=re.escape(str(bad))):
        api.add([tmp_path / "new.jsonl"], store, client=dask_client)
    assert not StoreLayout(store).shard("added-later").exists()  # nothing was analysed


def lists_is_a_file(store: Path) -> str:
    shutil.rmtree(StoreLayout(store).lists_dir)
    StoreLayout(store).lists_dir.write_text("not a folder")
    return str(StoreLayout(store).lists_dir)


@pytest.mark.parametrize("cause,error,says", [
    ("index-for-another-dimension", UsageError, lambda s: "PQ7"),  # valid FAISS syntax, not for this dimension
    ("lists-is-a-file", StoreError, lists_is_a_file),
])
def test_lists_failure_still_writes_report(store, manifest, dask_client, cause, error, says):
    StoreLayout(store).report.unlink()
    cfg = Config().with_overrides(fusion={"k": 5, "index": "PQ7" if cause.startswith("index") else "auto"})
    said = says(store)
    with pytest.raises(error, match="the lists stage failed after every item was processed") as e:
        run_items([manifest], store, dask_client, cfg)
    report = json.loads(StoreLayout(store).report.read_text(encoding="utf-8"))
    assert said in report["lists"]["error"] and said in str(e.value)
    assert report["summary"]["cached"] == 10 and report["summary"]["total"] == len(report["items"])
    assert e.value.report.lists == report["lists"]


def _as_unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run so that file permissions apply (root without the capabilities that bypass them)."""
    if os.geteuid() != 0:
        return argv
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-dac_override", *argv]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "add", "lists"])
def test_read_only_store(store, manifest, command):
    for p in [store, *store.rglob("*")]:
        p.chmod(p.stat().st_mode & 0o555)
    try:
        args = {"lists": ["lists"], "run": ["run", str(manifest)], "add": ["add", str(manifest)]}[command]
        proc = subprocess.run(_as_unprivileged([sys.executable, "-m", "reelsim.jobs.cli", *args, "--store", str(store),
                                                "--no-progress"]), capture_output=True, text=True, timeout=300)
    finally:
        for p in [store, *store.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "cannot write" in proc.stderr and str(store) in proc.stderr


@pytest.mark.slow
def test_output_into_a_closed_pipe_is_no_traceback(run_store):
    """`reelsim shots ITEM | head -0`: the reader has gone."""
    proc = subprocess.Popen([sys.executable, "-m", "reelsim.jobs.cli", "shots", "fractal", "--store",
                             str(run_store[0])], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # gone before anything was written
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and b"Error" not in err, err


def test_lock_owner_from_a_hostile_lock_file_reaches_the_terminal_escaped(tmp_path):
    """A lock file's host and command are anyone's text: the take-over warning and the refusal print no controls."""
    import socket

    from reelsim.storage.lock import StoreLockedError

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = StoreLayout(tmp_path).lock
    hostile = "reelsim run \x1b[2J\x1b]0;owned\x07 \u202eevil\nsecond line"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started_utc": "x", "command": hostile}))
    warned: list = []
    with StoreLock(tmp_path, progress=warned.append):  # a dead owner on this host: taken over, with a warning
        pass
    lock.write_text(json.dumps({"host": "far\x1b[31m.example", "pid": 1, "started_utc": "x", "command": hostile}))
    with pytest.raises(StoreLockedError) as refused:
        StoreLock(tmp_path).acquire()
    for text in (warned[0].message, str(refused.value)):
        assert "evil" in text and not any(not ch.isprintable() for ch in text), repr(text)
