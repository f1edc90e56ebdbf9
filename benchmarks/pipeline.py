"""End-to-end figures on the demo catalog: wall time, items/s, per-stage seconds.

Prints, in one run:
- the demo catalog run at 1 and 2 Dask worker processes (cold store each time),
  with items/s and the per-stage seconds summed over items (from report.json);
- a re-run on the warm store (everything cached): the runner's own overhead;
- for one demo video, decode-only (PyAV at analysis size, null sink) against
  decode + shot detection + clip sampling (no model), as a ratio.

Usage: python benchmarks/pipeline.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from reelsim.config import ClipConfig, Config
from reelsim.jobs.demo import make_sample_catalog
from reelsim.jobs.runner import run_catalog
from reelsim.pipeline.decode import iter_frames
from reelsim.pipeline.segment import ShotPass


def timed_run(manifest: Path, store: Path, workers: int) -> dict:
    t = time.perf_counter()
    report = run_catalog([str(manifest)], store, Config(), workers=workers, progress=False)
    wall = time.perf_counter() - t
    body = json.loads((store / "report.json").read_text())
    return {"wall_s": wall, "summary": report.summary(), "stages_s": body["stages_s"],
            "lists_s": body["lists"].get("seconds"), "items_per_s": len(report.items) / wall}


def decode_floor(path: Path, repeats: int = 3) -> tuple[float, float, int]:
    """Best-of-``repeats`` seconds: (decode only, decode + shots + clip sampling), frames."""
    best_decode = best_segment = float("inf")
    n = 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = sum(1 for _ in iter_frames(str(path), short_side=160))
        best_decode = min(best_decode, time.perf_counter() - t)
        t = time.perf_counter()
        shot_pass = ShotPass(str(path), Config(clips=ClipConfig(clip_len=8)), clip_len=8)
        for _ in shot_pass:
            pass
        shot_pass.finish()
        best_segment = min(best_segment, time.perf_counter() - t)
    return best_decode, best_segment, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reelsim-bench-"))
    t = time.perf_counter()
    manifest = make_sample_catalog(work / "media")
    print(f"sample catalog generated in {time.perf_counter() - t:.1f} s: {manifest}")

    for workers in (1, 2):
        r = timed_run(manifest, work / f"store-w{workers}", workers)
        print(f"\n{workers} worker(s), cold store: {r['summary']['total']} items in {r['wall_s']:.1f} s "
              f"= {r['items_per_s']:.2f} items/s (cluster start and model loading included)")
        print("  stage seconds summed over items: " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_s"].items())
              + f"; lists {r['lists_s']:.2f}")
    r = timed_run(manifest, work / "store-w2", 2)
    print(f"\nre-run, warm store: {r['summary']['cached']} cached of {r['summary']['total']} in {r['wall_s']:.1f} s")

    video = work / "media" / "deep-zoom.mp4"
    dec, seg, n = decode_floor(video)
    print(f"\n{video.name} ({n} frames): decode-only {n / dec:.0f} fps, decode + shots + clip sampling "
          f"{n / seg:.0f} fps; ratio {seg / dec:.2f}x the decode floor")


if __name__ == "__main__":
    main()
