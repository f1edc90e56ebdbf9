"""Light traps over many palettes: how often does colour cycling or a flickering lamp split one shot?

The trap tests (``tests/test_shot_traps.py``) use one palette each. This
builds the same two traps over ``--seeds`` palettes of ffmpeg's
``gradients`` source (colours drawn from the seed:
:func:`reelsim.pipeline.synth.seeded_colours`) and counts the videos in
which the default detector reports any boundary (each is one shot, so any
boundary is a false split):

- ``colour-cycle``: 50 frames, hue turned 120 degrees every 3 frames from frame 2;
- ``irregular-lamp``: 60 frames, dimmed to 45 % in irregular runs of 1-7 frames.

Examples
--------
    python benchmarks/palettes.py --seeds 0-99
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from reelsim.config import Config
from reelsim.pipeline.segment import segment_video
from reelsim.pipeline.synth import Shot, VideoSpec, build_video

TRAPS = {
    "colour-cycle": lambda seed: Shot(50, f"gradients=seed={seed}:speed=0.02", cycle=(2, 48, 3)),
    "irregular-lamp": lambda seed: Shot(60, f"gradients=seed={seed}:speed=0.03", flicker=(0, 60, -8)),
}


def false_splits(shot: Shot, work: Path, name: str) -> list[tuple[int, str]]:
    """Boundaries (frame, kind) the default detector reports in a one-shot 320x180 video of ``shot``."""
    path = work / f"{name}.mp4"
    build_video(VideoSpec(name, (shot,), (), size=(320, 180), crf=20), path, work / "photos")
    return [(b.frame, b.kind) for b in segment_video(str(path), Config()).boundaries if b.kind != "start"]


def seed_range(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-99", help="palette seeds, e.g. 0-99 (default)")
    args = ap.parse_args()
    seeds = seed_range(args.seeds)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for trap, make in TRAPS.items():
            split = {}
            for seed in seeds:
                found = false_splits(make(seed), Path(tmp), f"{trap}-{seed}")
                if found:
                    split[seed] = found
            print(f"{trap}: {len(split)} of {len(seeds)} palettes split "
                  f"({', '.join(f'seed {s}: {len(f)} false boundaries' for s, f in split.items()) or 'none'})")
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
