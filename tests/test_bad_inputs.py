"""Every kind of bad or awkward input in one catalog, in one real run on the session's Dask cluster.

One run over all of them must complete with exit code 3; then one
parametrised test checks, input by input, the status and the one-line reason
(or warning) that report.json and the console summary (what `reelsim run`
prints) give for it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from catalogue import AT_LINE, Case, check_case, run_catalogue

from reelsim.pipeline import synth
from reelsim.pipeline.decode import iter_frames
from reelsim.storage.layout import StoreLayout
from reelsim.storage.shards import read_shots

SIZE = (160, 120)
# VFR clip: (source, frames, fps) per shot -> cuts at frames 25 and 45, at 1.0 s and 3.0 s.
VFR_SHOTS = [("testsrc2", 25, 25), ("mandelbrot", 20, 10), ("smptebars", 25, 25)]


def vfr_time(frame: int) -> float:
    """Presentation time (s) of ``frame`` in the VFR clip."""
    t = 0.0
    for _, n, fps in VFR_SHOTS:
        if frame <= n:
            return t + frame / fps
        t, frame = t + n / fps, frame - n
    return t


def clip(d: Path, name: str, **kw) -> str:
    synth.make_pattern_video(d / name, size=kw.pop("size", SIZE), frames=kw.pop("frames", 20), **kw)
    return name


def _no_audio(store, row, media):
    with h5py.File(StoreLayout(store).shard(row["item"]), "r") as f:
        assert "audio" not in f["features"] and {"visual", "image"} <= set(f["features"])


def _one_shot(store, row, media):
    rec = read_shots(store, row["item"])
    assert rec["n_frames"] == 1 and len(rec["shots"]) == 1


def _vfr_times(store, row, media):
    rec = read_shots(store, row["item"])
    starts = [s["start_frame"] for s in rec["shots"]]
    assert starts == [0, 25, 45]  # the two cuts
    for s in rec["shots"]:  # seconds from timestamps, not frame / average fps (17.5 here)
        assert s["start_s"] == pytest.approx(vfr_time(s["start_frame"]), abs=1e-3)
    assert rec["shots"][-1]["end_s"] == pytest.approx(4.0, abs=0.05)


def _upright(store, row, media):
    with h5py.File(StoreLayout(store).shard(row["item"]), "r") as f:
        assert (f["video"].attrs["width"], f["video"].attrs["height"]) == (SIZE[1], SIZE[0])
    # Our first frame equals what ffmpeg's own autorotate shows.
    ref = subprocess.run([synth.ffmpeg_exe(), "-v", "error", "-i", str(media / "rotated.mp4"), "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    ours = next(iter_frames(str(media / "rotated.mp4"), short_side=min(SIZE))).rgb
    assert ours.shape == (SIZE[0], SIZE[1], 3)
    assert np.abs(ours.astype(int) - np.frombuffer(ref, np.uint8).reshape(ours.shape)).mean() < 1.0


def _dims(w, h):
    def check(store, row, media):
        with h5py.File(StoreLayout(store).shard(row["item"]), "r") as f:
            assert (f["video"].attrs["width"], f["video"].attrs["height"]) == (w, h)
            assert np.isfinite(f["features/visual/item"][()]).all()
    return check


def _inside_store(store, row, media):
    path = StoreLayout(store).shard(row["item"])
    assert path.is_file() and store in path.parents
    assert not (store.parent / "outside").exists() and not (media.parent / "outside").exists()


def _rotated(d):
    synth.make_pattern_video(d / "upright.mp4", size=SIZE, frames=20, audio=True)
    synth.with_rotation(d / "upright.mp4", d / "rotated.mp4", 90)
    return [{"id": "rotated", "video": "rotated.mp4"}]


def _truncated(d):
    synth.make_pattern_video(d / "full.mp4", size=SIZE, frames=100, audio=True)
    synth.truncated_copy(d / "full.mp4", d / "truncated.mp4")
    return [{"id": "truncated", "video": "truncated.mp4"}]


def _write(d, name, data):
    (d / name).write_bytes(data)
    return name


CASES = [
    Case("zero-byte", lambda d: [{"id": "zero-byte", "video": _write(d, "zero.mp4", b"")}],
         "failed", "empty file (0 bytes)"),
    Case("truncated", _truncated, "ok", "truncated"),
    Case("not-a-video", lambda d: [{"id": "not-a-video", "video": _write(d, "notes.mp4", b"just some notes\n" * 64)}],
         "failed", "not a readable media file"),
    Case("audio-only", lambda d: [{"id": "audio-only", "video": synth.make_audio_only(d / "tone.mp4").name}],
         "failed", "no video stream"),
    Case("video-only", lambda d: [{"id": "video-only", "video": clip(d, "mute.mp4")}],
         "ok", "no audio track", check=_no_audio),
    Case("one-frame", lambda d: [{"id": "one-frame", "video": clip(d, "one.mp4", frames=1)}],
         "ok", "no audio track", check=_one_shot),
    Case("vfr", lambda d: [{"id": "vfr", "video": synth.make_vfr_video(d / "vfr.mp4", VFR_SHOTS).name}],
         "ok", "no audio track", check=_vfr_times),
    Case("rotated", _rotated, "ok", None, check=_upright),
    Case("16x16", lambda d: [{"id": "16x16", "video": clip(d, "tiny.mp4", size=(16, 16), audio=True)}],
         "ok", None, check=_dims(16, 16)),
    Case("4k", lambda d: [{"id": "4k", "video": clip(d, "uhd.mp4", size=(3840, 2160), frames=6, audio=True)}],
         "ok", None, check=_dims(3840, 2160)),
    Case("non-ascii", lambda d: [{"id": "vidéo-東京", "video": clip(d, "vidéo 東京 ü.mp4", audio=True),
                                  "title": "Ünïcödé 東京"}],
         "ok", None, item="vidéo-東京"),
    Case("missing-file", lambda d: [{"id": "missing-file", "video": "gone.mp4"}], "failed", "video file not found"),
    Case("missing-image", lambda d: [{"id": "missing-image", "image": "gone.png"}], "failed", "image file not found"),
    Case("malformed-row", lambda d: ['{"id": "malformed", "video": '], "failed", "not valid JSON"),
    Case("duplicate-id", lambda d: [{"id": "twice", "video": clip(d, "first.mp4", audio=True)},
                                    {"id": "twice", "video": "first.mp4", "title": "second entry"}],
         "failed", "duplicate id 'twice': already used by catalog.jsonl:", item=AT_LINE),
    Case("duplicate-id-first-wins", lambda d: [], "ok", None, item="twice"),
    Case("id-with-dotdot", lambda d: [{"id": "../../outside/x", "video": clip(d, "dots.mp4", audio=True)}],
         "ok", None, item="../../outside/x", check=_inside_store),
    Case("id-with-separators", lambda d: [{"id": "a/b\\c", "video": "dots.mp4"}],
         "ok", None, item="a/b\\c", check=_inside_store),
]


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, dask_client):
    """One run over all cases (:class:`catalogue.CatalogueRun`)."""
    store = tmp_path_factory.mktemp("bad-store") / "store"
    return run_catalogue(CASES, tmp_path_factory.mktemp("bad-media"), store, dask_client)


def test_all_bad_inputs_together_complete_with_exit_3(bad_run):
    rows = bad_run.rows
    assert bad_run.proc.returncode == 3, bad_run.proc.stdout
    failed = {c.name for c in CASES if c.status == "failed"}
    assert sum(r["status"] == "failed" for r in rows.values()) == len(failed)
    assert sum(r["status"] == "ok" for r in rows.values()) == len(CASES) - len(failed)
    assert (bad_run.store / "lists" / "neighbors.parquet").is_file()
    assert all(r["reason"] and "\n" not in r["reason"] for r in rows.values() if r["status"] == "failed")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_reported(bad_run, case):
    check_case(bad_run, case)
