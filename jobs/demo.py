"""``reelsim demo``: a sample catalog made with ffmpeg, run end to end.

The catalog (written under ``STORE/sample-media``) has short videos whose
shots are fractals, cellular automata, noise and test patterns with their
own tones, mobile edits of two of them (half size, mirrored, re-encoded),
and products (a still image, a title and a description) from three aisles.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from reelsim.config import Config, LearnConfig
from reelsim.jobs.runner import run_catalog
from reelsim.jobs.tables import neighbors_text
from reelsim.pipeline.synth import Segment, edit_copy, make_image, make_video
from reelsim.reporting import Progress
from reelsim.similarity.evaluate import evaluate_store
from reelsim.similarity.evaluate import format_table as eval_table
from reelsim.similarity.lookup import Lookup
from reelsim.similarity.spaces import space_neighbors, train_store
from reelsim.similarity.synthetic import sample_log


def demo_catalog() -> dict:
    """The sample catalog's description (``demo_catalog.json`` beside this module): videos, edits, products."""
    return json.loads(resources.files("reelsim.jobs").joinpath("demo_catalog.json").read_text(encoding="utf-8"))


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
    print(f"\nlearning from {interactions.name} (reelsim evaluate at k = 3; 14 items are far too few for stable figures):")
    print(eval_table(evaluate_store(store, interactions, DEMO_LEARN, k=3)))
    train_store(store, interactions, DEMO_LEARN)
    nbs = space_neighbors(store, "banana-bunch", 3, "blend")
    print("\nreelsim similar banana-bunch --space blend (after reelsim train):")
    print(neighbors_text(store, "banana-bunch", nbs, space="blend"))


def make_sample_catalog(media: Path) -> Path:
    """Write the sample media and ``catalog.jsonl`` under ``media``; returns the manifest path."""
    media.mkdir(parents=True, exist_ok=True)
    demo = demo_catalog()
    rows = []
    for vid, video in demo["videos"].items():
        path = media / f"{vid}.mp4"
        if not path.exists():
            make_video(path, [Segment(s["source"], s["frames"], s["audio"]) for s in video["shots"]])
        rows.append({"id": vid, "video": path.name, "title": video["title"]})
    for vid, src in demo["edits"].items():
        path = media / f"{vid}.mp4"
        if not path.exists():
            edit_copy(media / f"{src}.mp4", path)
        rows.append({"id": vid, "video": path.name, "title": demo["videos"][src]["title"] + " (mobile edit)"})
    for pid, product in demo["products"].items():
        path = media / f"{pid}.png"
        if not path.exists():
            make_image(path, product["image"])
        rows.append({"id": pid, "image": path.name, "title": product["title"], "description": product["description"]})
    manifest = media / "catalog.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def run_demo(store: Path, cfg: Config, *, workers: int | None = None, scheduler: str | None = None,
             progress: bool | Progress = True, re_extract: bool = False) -> int:
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
        show_learning(store, make_sample_interactions(store / "sample-media"))
    print(f"\nnext: reelsim similar life-lab --store {store}   |   reelsim shots deep-zoom --store {store}   |   "
          f"reelsim search \"fresh fruit\" --store {store}")
    return report.exit_code
