"""Inspection: the `similar` table, thumbnails in the shards, the HTML report, and a real headless browser."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import reelsim
from PIL import Image

from reelsim.config import ThumbnailConfig
from reelsim.jobs.report import ReportEntry, choose_items, render_html
from reelsim.jobs.tables import display_width, fit, neighbor_table, terminal_safe
from reelsim.pipeline.item import thumbnail
from reelsim.storage.cards import ItemCard, read_card
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import Neighbor
from reelsim.storage.thumbnails import jpeg_thumbnail

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class Page(HTMLParser):
    """The parts of a report page the tests look at."""

    def __init__(self):
        super().__init__()
        self.body, self.items, self.neighbors, self.imgs, self.scripts = {}, [], [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "section" and "data-item" in a:
            self.items.append(a["data-item"])
        elif tag == "tr" and "data-neighbor" in a:
            self.neighbors.append(a["data-neighbor"])
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "script":
            self.scripts += 1


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


# --- the `similar` table ---------------------------------------------------------------------------------------

def test_similar_table_is_aligned_and_labelled(run_store):
    store, _ = run_store
    out = reelsim("similar", "fractal", "--store", store, "-k", 10, check=0).stdout.splitlines()
    assert out[0] == "neighbours of fractal: fractal.mp4 (video)"  # no manifest title: the file name
    head, rows = out[1], out[2:-1]
    assert head.split() == ["rank", "id", "title", "kind", "score", "visual", "audio", "image", "text"]
    by_id = {r.split()[1]: r for r in rows}
    assert "fractal-edit.mp4" in by_id["fractal-edit"] and " video " in by_id["fractal-edit"]
    assert "Organic bananas, bunch of 6" in by_id["banana"] and " product " in by_id["banana"]
    # right-aligned numeric columns end where their header ends; blank where a modality is not shared
    ends = {name: head.index(name) + len(name) for name in ("score", "visual", "audio", "image", "text")}
    js = json.loads(reelsim("similar", "fractal", "--store", store, "-k", 10, "--json", check=0).stdout)
    for n in js["neighbors"]:
        row = by_id[n["item"]]
        assert row[ends["score"] - 5:ends["score"]] == f"{n['score']:.3f}"[-5:]
        for m in ("visual", "audio", "image", "text"):
            cell = row[ends[m] - 6:ends[m]].strip()
            assert cell == (f"{n['modalities'][m]:.3f}" if m in n["modalities"] else ""), (n["item"], m, row)


def test_table_strings_are_terminal_safe_and_wide_characters_align():
    labels = {"a": {"kind": "video", "title": "", "name": "Bad\x1b[2J\u202etitle"},
              "b": {"kind": "product", "title": "東京の地図", "name": "東京の地図"},
              "c": {"kind": "product", "title": "plain", "name": "plain"}}
    table = neighbor_table("a", [Neighbor("b", 0.5, {"text": 0.5}), Neighbor("c", 0.25, {"image": 0.25})], labels)
    assert "\x1b" not in table and "\u202e" not in table
    head, rows = table.splitlines()[1], table.splitlines()[2:4]
    assert {display_width(r[:r.index("0.")]) for r in rows} == {display_width(head[:head.index("score") + 5]) - 5}
    assert terminal_safe("a\tb\nc") == "a b c"
    assert fit("東京の地図", 5) == "東京…" and display_width(fit("東京の地図", 5)) == 5


# --- thumbnails in the shards ----------------------------------------------------------------------------------

def _jpeg(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG"
    im.load()
    return im


def test_shards_hold_jpeg_thumbnails_readable_with_h5py(run_store):
    store, _ = run_store
    with h5py.File(StoreLayout(store).shard("fractal"), "r") as f:
        n_shots = f["video/shots"].shape[0]
        kf = f["thumbnails/keyframes"]
        assert kf.shape == (n_shots,) == (3,) and f["thumbnails"].attrs["format"] == "jpeg"
        pics = [_jpeg(bytes(row)) for row in kf[()]]
    assert all(max(p.size) == 160 for p in pics)  # 320x240 source -> 160x120
    means = [np.asarray(p.convert("RGB")).mean(axis=(0, 1)) for p in pics]
    assert np.abs(means[0] - means[1]).max() > 10  # different shots, different pictures
    with h5py.File(StoreLayout(store).shard("banana"), "r") as f:
        (image,) = f["thumbnails/image"][()]
        assert "keyframes" not in f["thumbnails"] and f.attrs["image_path"].endswith("banana.png")
    banana = np.asarray(_jpeg(bytes(image)).convert("RGB")).astype(int)
    assert banana.shape == (160, 160, 3) and banana[..., 0].mean() > banana[..., 2].mean() + 60  # yellow


def test_thumbnail_size_and_off_switch():
    rgb = np.zeros((480, 640, 3), np.uint8)
    assert _jpeg(jpeg_thumbnail(rgb, max_side=100, quality=80)).size == (100, 75)
    assert _jpeg(jpeg_thumbnail(rgb[:40, :60], max_side=100, quality=80)).size == (60, 40)  # never enlarged
    assert thumbnail(rgb, ThumbnailConfig(max_side=0)) is None
    with pytest.raises(ValueError):
        jpeg_thumbnail(rgb.astype(np.float32), max_side=100, quality=80)


def test_cards_tolerate_shards_written_before_thumbnails(run_store, tmp_path):
    store, _ = run_store
    for item in ("fractal", "banana"):
        old = StoreLayout(tmp_path).shard(item)
        old.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(StoreLayout(store).shard(item), old)
        with h5py.File(old, "a") as f:
            del f["thumbnails"]
            del f.attrs["image_path"]
    fractal, banana = read_card(tmp_path, "fractal"), read_card(tmp_path, "banana")
    assert fractal.name == "fractal.mp4" and fractal.keyframes == [] and len(fractal.shot_times) == 3
    assert banana.name == "Organic bananas, bunch of 6" and banana.image is None and banana.kind == "product"
    html = render_html([ReportEntry(fractal, [(Neighbor("banana", 0.1, {"image": 0.1}), banana)])],
                       store_name="old", k=1, weights={"image": 1.0}, n_items=2, generated_utc="now")
    assert "no pictures stored" in html and "<img " not in html


# --- the HTML report ---------------------------------------------------------------------------------------------

def test_report_escapes_catalog_strings():
    card = ItemCard(id=HOSTILE, kind="product", title=HOSTILE, name=HOSTILE,
                    image=jpeg_thumbnail(np.full((8, 8, 3), 200, np.uint8), max_side=8, quality=80))
    html = render_html([ReportEntry(card, [(Neighbor(HOSTILE, 0.5, {"text": 0.5}), card)])],
                       store_name=HOSTILE, k=1, weights={"text": 1.0}, n_items=1, generated_utc="now")
    assert "<script>alert" not in html and "onerror=alert(2)>" not in html and "&lt;script&gt;" in html
    page = parse(html)
    assert page.scripts == 1 and page.items == [HOSTILE] and page.neighbors == [HOSTILE]
    assert all(i["src"].startswith("data:image/jpeg;base64,") for i in page.imgs)
    assert all(i["alt"].startswith(HOSTILE) for i in page.imgs)  # the attribute round-trips intact


def test_choose_items_is_deterministic_and_checks_ids():
    ids = [f"item-{i}" for i in range(50)]
    a = choose_items(ids, sample=5, seed=3)
    assert a == choose_items(list(reversed(ids)), sample=5, seed=3) and len(set(a)) == 5
    assert a != choose_items(ids, sample=5, seed=4)
    assert choose_items(ids, sample=99, seed=0) == sorted(ids)
    assert choose_items(ids, sample=5, seed=0, items=["item-7", "item-2", "item-7"]) == ["item-7", "item-2"]


@pytest.fixture(scope="module")
def report_page(run_store, tmp_path_factory):
    """`reelsim report` over the shared test store for two videos and a product: (path, html, Page)."""
    store, _ = run_store
    to = tmp_path_factory.mktemp("report") / "report.html"
    proc = reelsim("report", "--store", store, "--to", to, "--items", "fractal,banana,silent", "-k", 3,
                   "--no-progress", check=0)
    assert "3 items" in proc.stdout
    html = to.read_text(encoding="utf-8")
    return to, html, parse(html)


def test_report_shows_items_neighbours_and_pictures(run_store, report_page):
    store, _ = run_store
    _, html, page = report_page
    assert page.items == ["fractal", "banana", "silent"]
    assert len(page.neighbors) == 9 and "fractal-edit" in page.neighbors[:3]
    # fractal's strip: 3 keyframes with their shot times; banana: its product image
    shots = json.loads(reelsim("shots", "fractal", "--store", store, "--json", check=0).stdout)["shots"]
    fractal_alts = [i["alt"] for i in page.imgs if i["alt"].startswith("fractal.mp4: shot")]
    assert f"fractal.mp4: shot 2 of 3, {shots[1]['start_s']:.1f} to {shots[1]['end_s']:.1f} s, after a cut" in fractal_alts
    assert "Organic bananas, bunch of 6: product image" in [i["alt"] for i in page.imgs]
    assert all(i["src"].startswith("data:image/jpeg;base64,") and int(i["width"]) > 0 for i in page.imgs)
    assert int(page.body["data-images-total"]) == len(page.imgs) > 9
    assert "http://" not in html and "https://" not in html  # self-contained


def test_report_sample_is_reproducible_and_unknown_items_are_usage_errors(run_store, tmp_path):
    store, _ = run_store
    pages = [parse((reelsim("report", "--store", store, "--to", tmp_path / f"{n}.html", "--sample", 4,
                            "--seed", 5, "-k", 1, "--no-progress", check=0), tmp_path / f"{n}.html")[1]
                   .read_text(encoding="utf-8")) for n in range(2)]
    assert pages[0].items == pages[1].items and len(pages[0].items) == 4
    proc = reelsim("report", "--store", store, "--to", tmp_path / "x.html", "--items", "fractal,nope")
    assert proc.returncode == 2 and "unknown item id 'nope'" in proc.stderr and not (tmp_path / "x.html").exists()


# --- a real browser ----------------------------------------------------------------------------------------------

def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium from Debian's package, no network, a throwaway profile."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs /usr/bin/chromium (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report_page, tmp_path):
    path, _, _ = report_page
    (tmp_path / "p1").mkdir()
    proc = chromium("--virtual-time-budget=5000", "--dump-dom", path.as_uri(), profile=tmp_path / "p1")
    dom = parse(proc.stdout)
    assert dom.items == ["fractal", "banana", "silent"], proc.stderr[-2000:]
    total = int(dom.body["data-images-total"])
    assert total > 9 and int(dom.body["data-images-loaded"]) == total  # every picture decoded (naturalWidth > 0)

    (tmp_path / "p2").mkdir()
    shot = tmp_path / "report.png"
    chromium("--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri(),
             profile=tmp_path / "p2")
    png = np.asarray(Image.open(shot).convert("RGB"))
    assert png.shape == (2000, 1280, 3)
    assert len(np.unique(png.reshape(-1, 3)[::97], axis=0)) > 50  # pictures and text, not a blank page
