"""GPU server benchmark: ``reelsim run`` on a GPU against the model alone and the machine's decode floor.

Made for one machine of 16 cores and one H200 (about 5 minutes there); it
makes its own media with PyAV (no ffmpeg binary, no network) and needs only
what reelsim installs (FAISS and the text model are optional: without FAISS
the run writes shards only, and the catalog has no text). Steps, each timed
on its own and reported even if another fails:

(a) model only: clips/s of each visual model on clips already on the device
    (preprocessing + network), fp32 and bf16, batch 8/64/256; models whose
    weights are not here run with RANDOM weights saved to a file (speed only);
    the image model (keyframes, product images) likewise, images/s;
(b) decode floor: frames/s of reelsim's PyAV decoder at the analysis size,
    one process per core over the catalog's videos (decoding only); and, in
    one process on a 1280x720 video (also with ``--dry``), decoding alone against
    the whole CPU stage (decode, shot detection, clips, keyframes, audio), with
    the detector's and the audio's share of it: the most (c) can reach;
(c) end to end: ``reelsim run --device cuda`` on the generated catalog
    (30 videos of 30 s at 640x360, 3 minutes of 1280x720, 6 products): cold
    (a fresh process and cluster, as a user runs it) and warm (the GPU run's
    local cluster already started and its models loaded); items/s, frames/s,
    end-to-end / decode floor, GPU stage / model only (at ``jobs.gpu_batch``);
(d) GPU against CPU: one video through the run's stages on the GPU (bf16) and analysed
    in one process on CPU (fp32): shots identical, cosine per clip and per shot;
(e) the lists job on the GPU, when ``reelsim lists --device`` exists (else skipped);
(f) what moving clips between worker processes costs: a batch of clips from one
    worker process to another through Dask (worker to worker) and through
    shared memory (``/dev/shm``), MB/s, against a plain in-memory copy.

Usage::

    python benchmarks/gpu.py --out DIR            # a GPU machine: the table, and DIR/gpu.json
    python benchmarks/gpu.py --dry                # the same steps on CPU at small sizes (checks the script)

The table goes to stdout (last), with the machine and its load average.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from reelsim.config import Config
from reelsim.extractors import registry
from reelsim.extractors.device import row_cosine
from reelsim.jobs.driver import local_client
from reelsim.jobs.runner import run_catalog
from reelsim.pipeline import decode
from reelsim.pipeline.item import Models, analyse_item
from reelsim.storage.layout import StoreLayout
from reelsim.storage.manifest import Item
from reelsim.storage.shm import SharedArray


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each step is."""

    device: str
    videos: int  # 640x360 (dry: smaller) videos
    seconds: int
    size: tuple[int, int]
    hd_videos: int
    hd_seconds: int
    hd_size: tuple[int, int]
    products: int
    batches: tuple[int, ...]  # model-only batch sizes
    model_s: float  # seconds per model-only measurement
    speed_only: tuple[str, ...]  # visual models also run with random weights (speed only)
    gpu_batch: int
    transport_clips: int


GPU = Sizes("cuda", 30, 30, (640, 360), 3, 60, (1280, 720), 6, (8, 64, 256), 1.5, ("r3d_18",), 256, 256)
DRY = Sizes("cpu", 3, 4, (320, 180), 1, 8, (1280, 720), 2, (2, 4), 0.3, (), 8, 16)

RESULTS: dict = {}


def step(name: str):
    """Run one step, record its result (or its failure) and its time; never stop the others."""

    def deco(fn):
        t0 = time.perf_counter()
        print(f"== {name} ...", flush=True)
        try:
            RESULTS[name] = fn()
        except Exception as e:  # noqa: BLE001  a benchmark reports a failed step and goes on
            traceback.print_exc()
            RESULTS[name] = {"FAILED": f"{e.__class__.__name__}: {e}"[:400]}
        RESULTS[name]["step_s"] = round(time.perf_counter() - t0, 1)
        print(f"== {name}: {json.dumps(RESULTS[name], default=str)[:600]}", flush=True)
        return fn

    return deco


# ---------------------------------------------------------------- media (PyAV only)


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """uint8 (h, w, 3): smoothed random blocks of 16 px in a random tint."""
    small = rng.random((h // 16 + 2, w // 16 + 2, 3), dtype=np.float32)
    big = np.kron(small, np.ones((16, 16, 1), np.float32))[:h, :w]
    big = (big + np.roll(big, 8, 0) + np.roll(big, 8, 1) + np.roll(np.roll(big, 8, 0), 8, 1)) / 4
    tint = rng.random(3, dtype=np.float32) * 0.6 + 0.4
    return (big * tint * 255).clip(0, 255).astype(np.uint8)


def ping_pong(v: int, n: int) -> int:
    v %= 2 * n
    return v if v < n else 2 * n - v


def encode_video(args) -> tuple[str, int, list[int]]:
    """One H.264 + AAC mp4 of shots (a panned texture and a tone each) cut at random frames; (path, frames, cuts)."""
    import av

    path, (w, h), seconds, seed = args
    fps, rate = 25, 16000
    rng = np.random.default_rng(seed)
    n = seconds * fps
    n_shots = max(2, seconds // 5)
    cuts = np.sort(rng.choice(np.arange(fps, n - fps), n_shots - 1, replace=False)).tolist()
    bounds = list(zip([0, *cuts], [*cuts, n]))
    with av.open(path, "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        aus = out.add_stream("aac", rate=rate)
        aus.layout = "mono"
        tones = []
        for k, (s, e) in enumerate(bounds):
            srng = np.random.default_rng(seed * 1000 + k)
            tex = texture(srng, 2 * h, 2 * w)
            dx, dy = srng.integers(-3, 4, 2)
            for t in range(e - s):
                y, x = ping_pong(h // 2 + dy * t, h), ping_pong(w // 2 + dx * t, w)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[y : y + h, x : x + w]), format="rgb24")
                for p in vs.encode(frame):
                    out.mux(p)
            tt = np.arange(int((e - s) / fps * rate)) / rate
            tones.append((0.3 * np.sin(2 * np.pi * (150 + 40 * ((seed * 7 + k) % 20)) * tt)).astype(np.float32))
        for p in vs.encode():
            out.mux(p)
        audio, pts = np.concatenate(tones), 0
        for i in range(0, len(audio), 1024):
            chunk = audio[i : i + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate, af.pts = rate, pts
            pts += len(chunk)
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)
    return path, n, cuts


def make_media(folder: Path, sizes: Sizes) -> dict:
    """Videos, 720p videos and product images in ``folder``; ``catalog.jsonl`` lists them all (no text)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"v{i:02d}.mp4"), sizes.size, sizes.seconds, i + 1) for i in range(sizes.videos)]
    jobs += [(str(folder / f"hd{i}.mp4"), sizes.hd_size, sizes.hd_seconds, 100 + i) for i in range(sizes.hd_videos)]
    with cf.ProcessPoolExecutor(os.cpu_count()) as ex:
        made = list(ex.map(encode_video, jobs))
    rows = [{"id": Path(p).stem, "video": p} for p, _, _ in made]
    for k in range(sizes.products):
        path = folder / f"prod{k}.png"
        Image.fromarray(texture(np.random.default_rng(500 + k), 256 + 32 * k, 256)).save(path)
        rows.append({"id": f"prod{k}", "image": str(path)})
    (folder / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"videos": [p for p, _, _ in made], "frames": {p: n for p, n, _ in made},
            "cuts": {Path(p).stem: c for p, _, c in made}, "catalog": str(folder / "catalog.jsonl")}


# ---------------------------------------------------------------- (a) model only


def random_weights_file(name: str, work: Path) -> Path:
    """A randomly initialised state dict of torchvision video model ``name`` (speed only)."""
    import torch
    import torchvision

    path = work / f"{name}-RANDOM-weights.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(getattr(torchvision.models.video, name)(weights=None).state_dict(), path)
    return path


def timed_rate(fn, n_rows: int, seconds: float, cuda: bool) -> float:
    """Rows per second of ``fn()`` (``n_rows`` rows per call) after two warm-up calls, for at least 3 calls."""
    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn(), fn()
    sync()
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    sync()
    return round(calls * n_rows / (time.perf_counter() - t0), 1)


def usable(name: str) -> bool:
    """Whether visual model ``name`` has its weights here (False too when its package is missing)."""
    try:
        return registry.get_class("visual", name).usable()[0]
    except ImportError:  # e.g. pytorchvideo (X3D) is not on the GPU machine
        return False


def model_only(sizes: Sizes, work: Path) -> dict:
    import torch

    cuda = sizes.device == "cuda"
    out: dict = {}
    names = [n for n in registry.names("visual") if usable(n)]
    names += [n for n in sizes.speed_only if n not in names]
    for name in names:
        cls = registry.get_class("visual", name)
        weights = None if usable(name) else str(random_weights_file(name, work))
        label = name if weights is None else f"{name} (RANDOM weights, speed only)"
        for precision in ("fp32", "bf16"):
            model = cls(device=sizes.device, precision=precision, weights_path=weights)
            for b in sizes.batches:
                x = torch.randint(0, 256, (b, model.clip_len, 160, 160, 3), dtype=torch.uint8, device=model.device)
                out[f"{label} {precision} b{b}"] = timed_rate(lambda m=model, x=x: m.embed(x), b, sizes.model_s, cuda)
            del model
            if cuda:
                torch.cuda.empty_cache()
    image = registry.get_class("image", Config().models.image)(device=sizes.device)
    for b in sizes.batches:
        x = torch.randint(0, 256, (b, 160, 160, 3), dtype=torch.uint8, device=image.device)
        out[f"image {image.name} (keyframes 160->224, auto) b{b}"] = timed_rate(lambda: image.embed(x), b,
                                                                               sizes.model_s, cuda)
    return out


# ---------------------------------------------------------------- (b) decode floor


def count_frames(path: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = sum(1 for _ in decode.iter_frames(path, short_side=Config().decode.analysis_short_side))
    return n, time.perf_counter() - t0


def stage_costs(path: str, repeats: int = 5) -> dict:
    """The CPU stage against decoding alone, on one video, in this process (the bound of (c)'s ratio).

    Wall and CPU seconds (the best of ``repeats`` interleaved runs, after one warm-up run of each) of:
    ``decode`` (reelsim's decoder at the analysis size, frames only); ``decode+audio`` (frames and audio
    in one demux pass, where the decoder has one: ``decode.MediaReader``); ``audio`` (the audio track
    decoded on its own, as a second pass reads it); ``segment`` (decode, shot detector and clip sampler,
    no audio, no decoding thread: ``segment_video``); ``prepare`` (the whole CPU stage of ``reelsim run``:
    decode once, shots, clips, keyframes, audio features, thumbnails). ``prepare_over_decode`` is the wall
    ratio (one process, decoding overlapped with analysis where a core is free); ``cpu_prepare_over_decode``
    the CPU-time ratio (what counts when every core is busy). Shares are of ``prepare``'s CPU time.
    """
    from reelsim.pipeline.batcher import prepare_item
    from reelsim.pipeline.segment import segment_video

    cfg = Config()
    models = Models(cfg, device="cpu")
    item = Item(id=Path(path).stem, video=path)
    short = cfg.decode.analysis_short_side
    steps = {
        "decode": lambda: sum(1 for _ in decode.iter_frames(path, short_side=short)),
        "audio": lambda: sum(c.size for c in decode.iter_audio(path, rate=cfg.decode.audio_rate)),
        "segment": lambda: segment_video(path, cfg, clip_len=8).n_frames,
        "prepare": lambda: prepare_item(item, cfg, models, clip_len=8).features.video.n_frames,
    }
    if hasattr(decode, "MediaReader"):  # one demux pass for frames and audio
        def one_pass():
            with decode.MediaReader(path) as video:
                return sum(1 for _ in video.frames(short_side=short, audio=decode.AudioTrack(cfg.decode.audio_rate)))

        steps["decode+audio"] = one_pass
    wall, cpu = dict.fromkeys(steps, np.inf), dict.fromkeys(steps, np.inf)
    frames = steps["decode"]()
    for fn in steps.values():  # warm-up: imports, the audio model, the detector's tables
        fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - w)
            cpu[name] = min(cpu[name], time.process_time() - c)
    info = decode.probe(path)
    out = {"video": f"{Path(path).name} {info.width}x{info.height}, {frames} frames", "repeats": repeats,
           "wall_s": {k: round(v, 3) for k, v in wall.items()}, "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
           "decode_fps": round(frames / wall["decode"]), "prepare_fps": round(frames / wall["prepare"]),
           "prepare_over_decode": round(wall["decode"] / wall["prepare"], 3),
           "cpu_prepare_over_decode": round(cpu["decode"] / cpu["prepare"], 3),
           "share_of_prepare_cpu": {"decode": round(cpu["decode"] / cpu["prepare"], 3),
                                    "detector_and_clips": round((cpu["segment"] - cpu["decode"]) / cpu["prepare"], 3),
                                    "audio_second_pass": round(cpu["audio"] / cpu["prepare"], 3)}}
    if "decode+audio" in cpu:
        out["share_of_prepare_cpu"]["audio_in_the_one_pass"] = round((cpu["decode+audio"] - cpu["decode"])
                                                                     / cpu["prepare"], 3)
    return out


def decode_floor(videos: list[str], hd: str) -> dict:
    """One process per core, each decoding whole videos (largest first), at the analysis size; and, in one
    process, the CPU stage against decoding alone on the 720p video ``hd`` (:func:`stage_costs`)."""
    order = sorted(videos, key=lambda p: -os.path.getsize(p))
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(os.cpu_count()) as ex:
        counts = list(ex.map(count_frames, order))
    wall = time.perf_counter() - t0
    frames = sum(n for n, _ in counts)
    one = stage_costs(hd)
    return {"processes": os.cpu_count(), "frames": frames, "wall_s": round(wall, 2), "fps": round(frames / wall),
            "one_process_decode_fps": one["decode_fps"], "one_process_prepare_fps": one["prepare_fps"],
            "prepare_over_decode": one["prepare_over_decode"],
            "cpu_prepare_over_decode": one["cpu_prepare_over_decode"], "one_process": one,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


# ---------------------------------------------------------------- (c) end to end


def run_config(sizes: Sizes) -> Config:
    mode = "auto" if sizes.device == "cuda" else "on"  # on CPU: the same driver, items sharing forward passes
    return Config().with_overrides(models={"device": sizes.device}, jobs={"cross_item": mode,
                                                                          "gpu_batch": sizes.gpu_batch})


def lists_mode() -> str:
    """``rebuild`` where FAISS is installed, else ``none`` (shards only)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "none"
    return "rebuild"


def gpu_stage_window(rows: list[dict]) -> dict:
    """The GPU stage from the rows' batch records: clips, rows and the union of the batches' busy intervals."""
    batches = {r["batch"]["batch"]: r["batch"] for r in rows if r.get("batch")}
    spans = sorted((b["started"], b["ended"]) for b in batches.values())
    busy, end = 0.0, -np.inf
    for s, e in spans:
        busy += max(0.0, e - max(s, end))
        end = max(end, e)
    clips = sum(b["clips"] for b in batches.values())
    return {"batches": len(batches), "clips": clips, "rows": clips + sum(b["images"] for b in batches.values()),
            "busy_s": round(busy, 3), "clips_per_s": round(clips / busy, 1) if busy else None,
            "fill_s": round(sum(b["fill_s"] for b in batches.values()), 3),
            "mean_items_per_batch": round(float(np.mean([b["items"] for b in batches.values()])), 1)}


def summarise(report, wall: float, frames: int) -> dict:
    rows = report.items
    s = report.summary()
    return {"summary": s, "wall_s": round(wall, 2), "items_per_s": round(s["total"] / wall, 2),
            "frames_per_s": round(frames / wall), "gpu_stage": gpu_stage_window(rows),
            "failed": [(r["item"], r["reason"]) for r in report.failed][:5], "lists": report.lists}


def run_once(catalog: str, store: str, sizes_name: str) -> None:
    """(c) cold, in a fresh process: run_catalog as `reelsim run` calls it; prints one JSON line."""
    sizes = GPU if sizes_name == "gpu" else DRY
    t0 = time.perf_counter()
    report = run_catalog([catalog], Path(store), run_config(sizes), progress=False, lists=lists_mode())
    print(json.dumps({"wall_s": time.perf_counter() - t0, "summary": report.summary(),
                      "failed": [(r["item"], r["reason"]) for r in report.failed][:5], "lists": report.lists}))


def end_to_end(media: dict, sizes: Sizes, work: Path, sizes_name: str) -> dict:
    frames = sum(media["frames"].values())
    out: dict = {"frames": frames, "lists": lists_mode()}
    cold_store = work / "store-cold"
    proc = subprocess.run([sys.executable, __file__, "--_run", media["catalog"], str(cold_store), sizes_name],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"cold run exit {proc.returncode}: {proc.stderr[-1500:]}")
    cold = json.loads(proc.stdout.strip().splitlines()[-1])
    n = cold["summary"]["total"]
    out["cold"] = {**cold, "items_per_s": round(n / cold["wall_s"], 2), "frames_per_s": round(frames / cold["wall_s"])}
    cfg = run_config(sizes)
    warm_store = work / "store-warm"
    with local_client(None, warm_store, cfg) as client:
        warmup = work / "warmup.jsonl"
        warmup.write_text("".join(json.dumps({"id": Path(v).stem, "video": v}) + "\n" for v in media["videos"][:2])
                          + json.dumps({"id": "prod0", "image": str(Path(media["catalog"]).parent / "prod0.png")}) + "\n")
        run_catalog([str(warmup)], work / "store-warmup", cfg, client=client, progress=False, lists="none")
        t0 = time.perf_counter()
        report = run_catalog([media["catalog"]], warm_store, cfg, client=client, progress=False, lists="none")
        out["warm"] = summarise(report, time.perf_counter() - t0, frames)
        out["warm"]["cpu_workers"] = sum(1 for w in client.scheduler_info(n_workers=-1)["workers"].values()
                                         if (w.get("resources") or {}).get("DECODE"))
    return out


# ---------------------------------------------------------------- (d) GPU against CPU


def gpu_vs_cpu(store: Path, video: str) -> dict:
    """The GPU run's shard of ``video`` against the in-process analysis on CPU in fp32 (``analyse_item``)."""
    import h5py
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    item = Item(id=Path(video).stem, video=video)
    cpu_cfg = Config().with_overrides(models={"device": "cpu", "precision": "fp32"})
    ref = analyse_item(item, cpu_cfg, Models(cpu_cfg))
    with h5py.File(StoreLayout(store).shard(item.id), "r") as f:
        shots = f["video/shots"][()]
        out = {"precision": str(f["features/visual"].attrs.get("precision")),
               "shots_identical": bool(np.array_equal(shots, ref.video.shots)), "n_shots": int(len(shots))}
        for m, level in (("visual", "clips"), ("visual", "shot"), ("image", "shot"), ("visual", "item")):
            got = f[f"features/{m}/{level}"][()]
            want = ref.embeddings[m].extra["clips"] if level == "clips" else getattr(ref.embeddings[m], level)
            cos = row_cosine(np.atleast_2d(got), np.atleast_2d(want))
            out[f"{m} {level} min cosine"] = round(float(cos.min()), 5)
    return out


# ---------------------------------------------------------------- (e) lists on the GPU


def lists_on_gpu(store: Path, sizes: Sizes) -> dict:
    from reelsim.jobs.cli import build_parser

    lists = build_parser()._subparsers._group_actions[0].choices["lists"]
    if not any("--device" in a.option_strings for a in lists._actions):
        return {"skipped": "`reelsim lists --device` does not exist in this version (the scale issue's GPU kNN)"}
    if lists_mode() == "none" or not StoreLayout(store).catalog.exists():
        return {"skipped": "no FAISS here, so the run wrote no catalog to list"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "reelsim.jobs.cli", "lists", "--store", str(store), "--device",
                           sizes.device, "--no-progress"], capture_output=True, text=True, timeout=300)
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 2), "out": proc.stdout[-300:],
            "err": proc.stderr[-300:]}


# ---------------------------------------------------------------- (f) moving clips between processes


def make_clips(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 8, 160, 160, 3), dtype=np.uint8)


def make_shared(n: int, folder: str) -> SharedArray:
    return SharedArray.write(make_clips(n), folder, "clips")


def stage(a) -> float:
    """Copy an array (or a shared one, mapped) into a fresh staging buffer, as the GPU stage does; seconds."""
    t0 = time.perf_counter()
    x = a.load() if isinstance(a, SharedArray) else a
    buf = np.empty(x.shape, x.dtype)
    np.copyto(buf, x)
    return time.perf_counter() - t0


def transport(sizes: Sizes, work: Path) -> dict:
    import logging

    from distributed import Client, LocalCluster, wait

    n = sizes.transport_clips
    mb = make_clips(1).nbytes * n / 1e6
    out = {"clips": n, "MB": round(mb, 1), "in_process_copy_MBps": round(mb / min(stage(make_clips(n))
                                                                              for _ in range(3)))}
    folder = tempfile.mkdtemp(prefix="reelsim-transport-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR, local_directory=str(work)) as cluster, Client(cluster) as client:
        a, b = list(client.scheduler_info()["workers"])
        for name, make, args in (("dask", make_clips, (n,)), ("shm", make_shared, (n, folder))):
            best = np.inf
            for k in range(3):
                src = client.submit(make, *args, workers=[a], pure=False, key=f"src-{name}-{k}")
                wait(src)
                t0 = time.perf_counter()
                client.submit(stage, src, workers=[b], pure=False, key=f"dst-{name}-{k}").result()
                best = min(best, time.perf_counter() - t0)
                src.release()
            out[f"{name}_MBps"] = round(mb / best)
            out[f"{name}_s_per_batch"] = round(best, 3)
    with contextlib.suppress(OSError):
        for p in Path(folder).iterdir():
            p.unlink()
        Path(folder).rmdir()
    return out


# ---------------------------------------------------------------- report


def machine() -> dict:
    import torch

    info = {"cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def table() -> str:
    lines = ["", "RESULTS", f"machine: {json.dumps(RESULTS.get('machine'))}"]
    for name, res in RESULTS.items():
        if name == "machine":
            continue
        lines.append(f"-- {name} ({res.get('step_s')} s)")
        for k, v in res.items():
            if k != "step_s":
                lines.append(f"   {k:<58} {json.dumps(v, default=str)[:300]}")
    e2e, floor, mo = RESULTS.get("c end to end", {}), RESULTS.get("b decode floor", {}), RESULTS.get("a model only", {})
    warm = e2e.get("warm") or {}
    if warm and floor.get("fps"):
        lines.append(f"end-to-end / decode floor (warm): {warm['frames_per_s'] / floor['fps']:.2f}   "
                     f"(cold: {e2e['cold']['frames_per_s'] / floor['fps']:.2f}; goal >= 0.90)")
    precision = "bf16" if RESULTS["machine"]["cuda"] else "fp32"  # what --precision auto runs
    ref = [v for k, v in mo.items() if k.startswith(f"{Config().models.visual} {precision} b") and isinstance(v, float)]
    stage_rate = (warm.get("gpu_stage") or {}).get("clips_per_s")
    if stage_rate and ref:
        lines.append(f"GPU stage / model only ({precision}, largest batch measured): {stage_rate / ref[-1]:.2f}   "
                     "(goal >= 0.70)")
    lines.append(f"load average at the end: {[round(x, 2) for x in os.getloadavg()]}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="CPU, small sizes: check the script")
    p.add_argument("--out", type=Path, help="folder for gpu.json (default: $OUT if set)")
    p.add_argument("--work", type=Path, help="working folder (default: a new temp folder)")
    p.add_argument("--skip", nargs="*", default=[], metavar="STEP", help="steps to skip: a b c d e f")
    p.add_argument("--transport-clips", type=int, metavar="N", help="clips per batch in (f) (default: gpu_batch)")
    p.add_argument("--_run", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._run:
        return run_once(*args._run)
    sizes, sizes_name = (DRY, "dry") if args.dry else (GPU, "gpu")
    if args.transport_clips:
        sizes = dataclasses.replace(sizes, transport_clips=args.transport_clips)
    work = args.work or Path(tempfile.mkdtemp(prefix="reelsim-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    RESULTS["machine"] = machine()
    t0 = time.perf_counter()
    media = make_media(work / "media", sizes)
    RESULTS["machine"]["media_s"] = round(time.perf_counter() - t0, 1)
    print(f"media: {len(media['videos'])} videos, {sum(media['frames'].values())} frames, "
          f"{RESULTS['machine']['media_s']} s", flush=True)
    if "a" not in args.skip:
        step("a model only")(lambda: model_only(sizes, work))
    if "b" not in args.skip:
        hd = next(v for v in media["videos"] if Path(v).stem.startswith("hd"))
        step("b decode floor")(lambda: decode_floor(media["videos"], hd))
    if "c" not in args.skip:
        step("c end to end")(lambda: end_to_end(media, sizes, work, sizes_name))
    if "d" not in args.skip:
        step("d gpu vs cpu features")(lambda: gpu_vs_cpu(work / "store-warm", media["videos"][0]))
    if "e" not in args.skip:
        step("e lists on the gpu")(lambda: lists_on_gpu(work / "store-cold", sizes))
    if "f" not in args.skip:
        step("f clip transport")(lambda: transport(sizes, work))
    text = table()
    print(text, flush=True)
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gpu.json").write_text(json.dumps(RESULTS, indent=1, default=str), encoding="utf-8")
        (out_dir / "gpu.txt").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
