"""``reelsim demo``: a sample catalog made with ffmpeg, run end to end.

The catalog (written under ``STORE/sample-media``) has short videos whose
shots are fractals, cellular automata, noise and test patterns with their
own tones, mobile edits of two of them (half size, mirrored, re-encoded),
and products (a still image, a title and a description) from three aisles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from reelsim.pipeline.config import Config, LearnConfig
from reelsim.pipeline.synth import Segment, edit_copy, make_image, make_video
from reelsim.similarity.evaluate import evaluate_store
from reelsim.similarity.evaluate import format_table as eval_table
from reelsim.similarity.spaces import space_neighbors, train_store
from reelsim.similarity.synthetic import sample_log

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


# what people use together: item -> group (the demo log's users each like one to three groups)
DEMO_GROUPS = {"banana-bunch": 0, "apple-crate": 0, "orange-bag": 0, "anc-headphones": 1, "earbuds": 1,
               "chef-knife": 2, "cutting-board": 2, "deep-zoom": 3, "deep-zoom-mobile": 3, "sierpinski-suite": 3,
               "life-lab": 4, "life-lab-mobile": 4, "test-card": 5, "colour-fields": 5}
#: small and quick settings for a 14-item catalog
DEMO_LEARN = LearnConfig(elsa_dim=6, elsa_epochs=40, elsa_batch=32, warm_min_interactions=2, tower_hidden=32, tower_dim=16, tower_epochs=20,
                         tower_batch=64, finetune_epochs=2, cold_fraction=0.25, eval_queries=50)


def make_sample_interactions(media: Path) -> Path:
    """Write ``interactions.csv`` (user, item, timestamp, event) for the sample catalog: 150 users, ~1800 rows."""
    ids = list(DEMO_GROUPS)
    log = sample_log(np.array([DEMO_GROUPS[i] for i in ids]), np.ones(len(ids)), n_users=150, n_interactions=1500,
                     noise=0.05, seed=7)
    return log.write(media / "interactions.csv", ids)


def show_learning(store: Path, interactions: Path) -> None:
    """Print the evaluate table for the demo log, train on all of it and print one blend list."""
    from reelsim.jobs.cli import format_table, item_labels

    print(f"\nlearning from {interactions.name} (reelsim evaluate at k = 3; 14 items are far too few for stable figures):")
    print(eval_table(evaluate_store(store, interactions, DEMO_LEARN, k=3)))
    train_store(store, interactions, DEMO_LEARN)
    nbs = space_neighbors(store, "banana-bunch", 3, "blend")
    print("\nreelsim similar banana-bunch --space blend (after reelsim train):")
    print(format_table("banana-bunch", nbs, item_labels(store, ["banana-bunch", *(n.item for n in nbs)]), "blend"))


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

    from reelsim.jobs.cli import format_table, item_labels
    from reelsim.jobs.lists import Lookup
    from reelsim.jobs.runner import run_catalog

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
                nbs = lookup.neighbors(item, 3)
                print(format_table(item, nbs, item_labels(store, [item, *(n.item for n in nbs)])))
        show_learning(store, make_sample_interactions(store / "sample-media"))
    print(f"\nnext: reelsim similar life-lab --store {store}   |   reelsim shots deep-zoom --store {store}   |   "
          f"reelsim search \"fresh fruit\" --store {store}")
    return report.exit_code
