"""Fault injection: `train`, `add` and `lists --space` killed at each write step, and a full disk at each write.

After each fault, `reelsim verify` calls the store whole or names the damage
with the command that redoes it; that command repairs it; and nothing ever
prints a traceback. Kills are real (SIGKILL of the command's process, at the
step ``REELSIM_FAULT`` names: storage/faults.py); a full disk is the write
failing with ENOSPC there (and once on a real, small tmpfs where the machine
lets us mount one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import reelsim
from test_versions import LEARN, products, trained_store

from reelsim.storage.layout import StoreLayout
from reelsim.storage.version import read_version

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory, dask_client):
    d = tmp_path_factory.mktemp("faults")
    trained_store(d, dask_client, spaces=("blend",), formats="parquet,jsonl")
    products(d, {"apple-box": "Box of crisp red apples", "kiwi-pack": "Kiwi fruit, pack of 6"}, "new.jsonl")
    return d


def command(name: str, d: Path, store: Path) -> list[str]:
    return {"train": ["train", "--interactions", str(d / "log.csv"), "--store", str(store), *LEARN],
            "add": ["add", str(d / "new.jsonl"), "--store", str(store), "--workers", "1", "--no-progress"],
            "lists-space": ["lists", "--store", str(store), "--space", "blend", "-k", "4"]}[name]


def cli(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REELSIM_FAULT"}
    if fault:
        env["REELSIM_FAULT"] = fault
    # its own process group: a kill takes the command's local Dask workers with it (storage/faults.py), so
    # no orphaned worker writes its lost-scheduler traceback into the stderr checked here
    return subprocess.run([sys.executable, "-m", "reelsim.jobs.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600, start_new_session=True)


def verify(store: Path) -> dict:
    proc = reelsim("verify", "--store", store, "--json")  # in this process (no cluster): fast
    assert proc.returncode in (0, 3) and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def repair(store: Path, found: dict, d: Path) -> None:
    """Run the commands ``found`` names, in the order verify gives them; the store is whole afterwards."""
    redo = found["redo"]
    steps = []
    if redo.get("repair"):
        steps.append(["verify", "--repair", "--store", str(store)])
    if redo.get("run"):
        steps.append(["add", str(d / "new.jsonl"), "--store", str(store), "--workers", "1", "--no-progress"])
    if redo.get("lists"):
        steps.append(["lists", "--store", str(store), "--no-progress"])
    if redo.get("train"):
        steps.append(command("train", d, store)[:-len(LEARN)] + LEARN)
    steps += [["lists", "--store", str(store), "--space", s] for s in redo.get("spaces", [])]
    for step in steps:
        proc = reelsim(*step)  # `add` in a subprocess, the others in this process (conftest.reelsim)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (step, proc.stderr)
    after = verify(store)
    assert after["ok"], (found, after)


#: the steps at which each command is killed: (point, occurrence) — every write of a model or list file,
#: the journal, the first and last moves of a commit, and the version file
KILLS = {
    "train": [("write", 1), ("write", 3), ("journal", 1), ("rename", 1), ("version", 1)],
    "lists-space": [("write", 1), ("write", 10), ("journal", 1), ("rename", 2), ("version", 1)],
    "add": [("write", 1), ("write", 12), ("rename", 2), ("version", 1)],
}
CASES = [(name, point, n) for name, kills in KILLS.items() for point, n in kills]


@pytest.mark.parametrize("name,point,n", CASES, ids=[f"{a}-{p}{n}" for a, p, n in CASES])
def test_a_killed_writer_leaves_a_store_verify_names_and_its_command_repairs(base, tmp_path, name, point, n):
    store = Path(shutil.copytree(base / "store", tmp_path / "store"))
    before = read_version(StoreLayout(store))
    proc = cli(command(name, base, store), fault=f"kill:{point}:{n}")
    assert proc.returncode == -9, f"the command ended before step {point}:{n}: {proc.returncode} {proc.stderr}"
    found = verify(store)
    if point in ("write",):  # killed before its commit: the old version is whole (maybe a shard of the new item)
        assert read_version(StoreLayout(store)) == before
        assert found["ok"] or {p["redo"] for p in found["problems"]} == {"run"}, found
    if point in ("rename", "version") or (point == "journal"):
        assert not found["ok"] and found["redo"]["repair"], found
    repair(store, found, base)
    assert "Traceback" not in proc.stderr


ENOSPC = {"train": [1, 3], "lists-space": [1, 6, 10], "add": [1, 8, 14]}
FULL = [(name, n) for name, ns in ENOSPC.items() for n in ns]


@pytest.mark.parametrize("name,n", FULL, ids=[f"{a}-write{n}" for a, n in FULL])
def test_a_full_disk_is_one_line_and_the_previous_version_stays(base, tmp_path, name, n):
    store = Path(shutil.copytree(base / "store", tmp_path / "store"))
    layout = StoreLayout(store)
    before = read_version(layout)
    proc = cli(command(name, base, store), fault=f"enospc:write:{n}")
    if proc.returncode == 0:
        pytest.skip(f"{name} writes fewer than {n} files")
    assert proc.returncode == 2, proc.stderr
    assert "no space left on device" in proc.stderr and "Traceback" not in proc.stderr
    assert read_version(layout) == before  # nothing published
    found = verify(store)
    temps = [p for p in layout.root.rglob(".*.tmp")]
    assert not temps, temps
    assert found["ok"] or {p["redo"] for p in found["problems"]} == {"run"}, found  # add: the new item's shard
    assert reelsim(*command(name, base, store)).returncode == 0  # space again: the same command completes
    assert verify(store)["ok"]


def test_a_really_full_disk(base, tmp_path):
    """On a 3 MB tmpfs (root only), `lists --space blend` fails with one line and leaves the store as it was."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the ENOSPC tests above cover the write path")
    try:
        store = Path(shutil.copytree(base / "store", mnt / "store"))
        layout = StoreLayout(store)
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * max(0, free - 20_000))
        before = (read_version(layout), (layout.space_lists_dir("blend") / "neighbors.parquet").read_bytes())
        proc = cli(["lists", "--store", str(store), "--space", "blend", "-k", "5", "--lists-format",
                    "parquet,jsonl,hdf5"])
        assert proc.returncode == 2 and "no space left on device" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 2
        assert (read_version(layout), (layout.space_lists_dir("blend") / "neighbors.parquet").read_bytes()) == before
        assert not list(store.rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)])
