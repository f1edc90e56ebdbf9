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

from reelsim.config import Config
from reelsim.jobs.runner import run_catalog
from reelsim.jobs.tables import neighbors_text
from reelsim.pipeline.synth import Segment, edit_copy, make_image, make_video
from reelsim.similarity.lookup import Lookup


def demo_catalog() -> dict:
    """The sample catalog's description (``demo_catalog.json`` beside this module): videos, edits, products."""
    return json.loads(resources.files("reelsim.jobs").joinpath("demo_catalog.json").read_text(encoding="utf-8"))


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
