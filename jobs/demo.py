"""``reelsim demo``: a sample catalog made with ffmpeg, run end to end.

The catalog (written under ``STORE/sample-media``) has short videos whose
shots are fractals, cellular automata, noise and test patterns with their
own tones, mobile edits of two of them (half size, mirrored, re-encoded),
and products (a still image, a title and a description) from three aisles.
"""

from __future__ import annotations

import json
from pathlib import Path

from reelsim.config import Config
from reelsim.jobs.runner import run_catalog
from reelsim.jobs.tables import neighbors_text
from reelsim.pipeline.synth import Segment, edit_copy, make_image, make_video
from reelsim.similarity.lookup import Lookup

# id -> (title, shots as (lavfi source, frames, audio source))
DEMO_VIDEOS = {
    "deep-zoom": ("Deep zoom: a fractal documentary", [
        ("mandelbrot", 50, "sine=frequency=220"),
        ("mandelbrot=start_scale=0.5:inner=period", 40, "sine=frequency=330"),
        ("perlin=octaves=4:persistence=0.8", 45, "anoisesrc=color=brown:amplitude=0.3:seed=1")]),
    "life-lab": ("Life lab: cellular automata at work", [
        ("life=seed=7:ratio=0.3:mold=10:life_color=#00ff66", 55, "sine=frequency=523"),
        ("cellauto=rule=110:seed=3", 40, "sine=frequency=659"),
        ("life=seed=11:ratio=0.5:death_color=#202040", 45, "sine=frequency=784")]),
    "test-card": ("Test card classics", [
        ("testsrc2", 45, "sine=frequency=1000"),
        ("smptehdbars", 40, "sine=frequency=1000"),
        ("rgbtestsrc", 45, "sine=frequency=1200")]),
    "sierpinski-suite": ("Sierpinski suite", [
        ("sierpinski=type=carpet:seed=2", 50, "anoisesrc=color=pink:amplitude=0.4:seed=2"),
        ("sierpinski=type=triangle:seed=4", 45, "anoisesrc=color=white:amplitude=0.2:seed=3"),
        ("zoneplate=ku=512:kv=100:kt2=10", 40, "sine=frequency=150")]),
    "colour-fields": ("Colour fields and gradients", [
        ("gradients=seed=5:speed=0.05", 50, "sine=frequency=392"),
        ("colorspectrum=type=all", 40, "sine=frequency=440"),
        ("gradients=seed=9:nb_colors=4:speed=0.08", 45, "sine=frequency=494")]),
}
DEMO_EDITS = {"deep-zoom-mobile": "deep-zoom", "life-lab-mobile": "life-lab"}

# id -> (image source, title, description)
DEMO_PRODUCTS = {
    "banana-bunch": ("gradients=seed=21:c0=#f5d60a:c1=#c9a800:nb_colors=2", "Organic bananas, bunch of 6",
                     "Ripe yellow Fairtrade bananas, sweet and creamy."),
    "apple-crate": ("gradients=seed=22:c0=#d01818:c1=#40a020:nb_colors=2", "Crisp red apples, 1 kg",
                    "Fresh orchard apples, juicy and sweet, great for snacking."),
    "orange-bag": ("gradients=seed=23:c0=#ff8c00:c1=#ffb347:nb_colors=2", "Navel oranges, 2 kg bag",
                   "Seedless juicy oranges, rich in vitamin C."),
    "anc-headphones": ("testsrc2", "Wireless noise-cancelling headphones",
                       "Over-ear Bluetooth headphones with 30 h battery and active noise cancelling."),
    "earbuds": ("rgbtestsrc", "True wireless earbuds",
                "In-ear Bluetooth earbuds with charging case and microphone."),
    "chef-knife": ("sierpinski=type=carpet:seed=5", "Chef's knife, 20 cm",
                   "Forged stainless steel kitchen knife for slicing and dicing."),
    "cutting-board": ("perlin=octaves=3:seed=8", "Oak cutting board",
                      "Solid wood chopping board for the kitchen, with juice groove."),
}


def make_sample_catalog(media: Path) -> Path:
    """Write the sample media and ``catalog.jsonl`` under ``media``; returns the manifest path."""
    media.mkdir(parents=True, exist_ok=True)
    rows = []
    for vid, (title, shots) in DEMO_VIDEOS.items():
        path = media / f"{vid}.mp4"
        if not path.exists():
            make_video(path, [Segment(*s) for s in shots])
        rows.append({"id": vid, "video": path.name, "title": title})
    for vid, src in DEMO_EDITS.items():
        path = media / f"{vid}.mp4"
        if not path.exists():
            edit_copy(media / f"{src}.mp4", path)
        rows.append({"id": vid, "video": path.name, "title": DEMO_VIDEOS[src][0] + " (mobile edit)"})
    for pid, (source, title, description) in DEMO_PRODUCTS.items():
        path = media / f"{pid}.png"
        if not path.exists():
            make_image(path, source)
        rows.append({"id": pid, "image": path.name, "title": title, "description": description})
    manifest = media / "catalog.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def run_demo(store: Path, cfg: Config, *, workers: int | None = None, scheduler: str | None = None,
             progress: bool = True, re_extract: bool = False) -> int:
    """Make the sample catalog, run it, print a few lists.  Returns the run's exit code."""
    import time

    store = Path(store)
    t0 = time.perf_counter()
    manifest = make_sample_catalog(store / "sample-media")
    print(f"sample catalog: {manifest} ({time.perf_counter() - t0:.1f} s to generate)")
    report = run_catalog([str(manifest)], store, cfg, scheduler=scheduler, workers=workers, progress=progress,
                         re_extract=re_extract)
    print(report.describe(store))
    if report.lists:
        lookup = Lookup(store)
        for item in ("deep-zoom", "banana-bunch", "anc-headphones"):
            if item in lookup.meta:
                print()
                print(neighbors_text(store, item, lookup.neighbors(item, 3)))
    print(f"\nnext: reelsim similar life-lab --store {store}   |   reelsim shots deep-zoom --store {store}")
    return report.exit_code
