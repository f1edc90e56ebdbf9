"""Peak memory of one item's analysis against video length (it must not grow).

Generates 720p H.264 videos of increasing length (a cut every 10 s, audio
on), analyses each in a fresh process (default models, CPU) and prints the
peak RSS and wall time per video, with the ratio to the shortest.

Usage: python benchmarks/memory.py [--minutes 0.5 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reelsim.pipeline.synth import Segment, make_video

# lavfi sources that take a seed, so every 10 s shot is different
SOURCES = ["life=ratio=0.2:mold=5:seed={}", "cellauto=rule=30:seed={}", "perlin=octaves=3:seed={}",
           "gradients=speed=0.05:seed={}", "sierpinski=type=carpet:seed={}"]

CHILD = r"""
import json, resource, sys, time
from reelsim.config import Config
from reelsim.pipeline.item import Models, analyse_item
from reelsim.storage.manifest import Item
cfg = Config()
t = time.perf_counter()
f = analyse_item(Item(id="long", video=sys.argv[1]), cfg, Models(cfg))
print(json.dumps({"seconds": time.perf_counter() - t, "shots": len(f.video.shots), "frames": f.video.n_frames,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_long_video(path: Path, minutes: float) -> Path:
    n = max(1, round(minutes * 6))  # 10 s shots
    segs = [Segment(SOURCES[i % len(SOURCES)].format(i), 250, f"sine=frequency={200 + 37 * i}") for i in range(n)]
    return make_video(path, segs, size=(1280, 720), crf=28)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[0.5, 2.0])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reelsim-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for minutes in args.minutes:
        path = work / f"long-{minutes:g}min.mp4"
        t = time.perf_counter()
        if not path.exists():
            make_long_video(path, minutes)
        gen = time.perf_counter() - t
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((minutes, r))
        print(f"{minutes:g} min 720p ({r['frames']} frames, {r['shots']} shots, generated in {gen:.0f} s): "
              f"analysed in {r['seconds']:.1f} s = {r['frames'] / r['seconds']:.0f} frames/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    base = rows[0][1]["peak_rss_mb"]
    for minutes, r in rows[1:]:
        print(f"peak RSS ratio {minutes:g} min / {rows[0][0]:g} min: {r['peak_rss_mb'] / base:.2f}")


if __name__ == "__main__":
    main()
