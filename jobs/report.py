"""``reelsim report``: one static HTML page to look at neighbour lists.

For a sample of items, the page shows the item (its shot strip: one keyframe
per shot with the shot's times, or its product image) and its top-k
neighbours with their pictures, fused score and per-modality cosines; and,
for a video with copies (``reelsim matches``), each copy with its aligned
spans, the kind of edit, and the matched shots of both items side by side.

The page is self-contained: pictures are the JPEG thumbnails stored in the
shards (:mod:`reelsim.storage.thumbnails`), embedded as ``data:`` URIs, so the
file can be mailed or attached to a ticket.  It needs no JavaScript; one tiny
inline script (allowed by hash in the page's Content-Security-Policy, which
allows nothing else) counts the pictures that decoded into
``<body data-images-loaded>``, for the headless-browser check.  Every catalog
string is HTML-escaped; the CSP is a second line of defence.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import random
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from reelsim._version import __version__
from reelsim.config import MODALITIES
from reelsim.errors import StoreError, UnknownItemError, UsageError
from reelsim.jobs.console import progress_for
from reelsim.jobs.tables import terminal_safe
from reelsim.reporting import Counter, Progress
from reelsim.similarity.answer import StoreReader
from reelsim.similarity.catalog import load_catalog
from reelsim.similarity.copies import matches as copy_matches
from reelsim.storage.atomic import write_text_atomic
from reelsim.storage.cards import ItemCard, read_card
from reelsim.storage.layout import StoreLayout
from reelsim.storage.thumbnails import jpeg_size

#: Keyframes shown per strip: the items the page is about, and each neighbour.
MAX_SHOTS_ITEM = 24
MAX_SHOTS_NEIGHBOR = 6

IMAGE_COUNT_SCRIPT = (
    'addEventListener("load",function(){var n=0,a=document.images;'
    "for(var i=0;i<a.length;i++){if(a[i].complete&&a[i].naturalWidth>0)n++}"
    'document.body.setAttribute("data-images-loaded",n)});'
)

CSS = """
:root{--fg:#1d2330;--muted:#5b6474;--line:#d6dbe3;--bg:#f6f7f9;--card:#fff;--accent:#2457c5}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header,main,footer{max-width:1200px;margin:0 auto;padding:16px 24px}
header h1{margin:0 0 4px;font-size:24px}
.muted,figcaption,.id,.kind{color:var(--muted)}
nav ol{display:flex;flex-wrap:wrap;gap:4px 22px;list-style-position:inside;padding:0;margin:8px 0 0}
section.item{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:0 0 24px}
section.item h2{margin:0 0 2px;font-size:19px}
.id{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
.kind{display:inline-block;font-size:12px;border:1px solid var(--line);border-radius:10px;padding:0 8px;margin-left:6px}
.strip{display:flex;flex-wrap:wrap;gap:6px 12px;margin:10px 0;padding:0;list-style:none}
.strip figure{margin:0}
.strip img{display:block;height:72px;width:auto;border-radius:3px;background:#000}
.strip.small img{height:48px}
figcaption{font-size:12px;white-space:nowrap}
.strip.small{gap:6px}
.strip.small figcaption{font-size:11px}
th[scope=row]{width:30%}
th[scope=row] .muted{font-weight:normal;font-size:13px}
th[scope=row] .sub{margin-top:2px}
.nopic{display:flex;align-items:center;justify-content:center;height:48px;padding:0 10px;border:1px dashed var(--line);border-radius:3px;color:var(--muted);font-size:12px}
.more{align-self:center;font-size:12px;color:var(--muted)}
table{border-collapse:collapse;width:100%;margin-top:8px}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border-top:1px solid var(--line);padding:6px 8px;vertical-align:top;text-align:left}
thead th{font-size:13px;color:var(--muted);font-weight:600;border-top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.na{color:var(--line);text-align:right}
meter{width:60px;height:10px;vertical-align:middle;margin-left:6px}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
a{color:var(--accent)}
.scroll{overflow-x:auto}
"""


@dataclass(frozen=True)
class ReportEntry:
    """One item of the page and its neighbours: ``neighbors`` is [(Neighbor, ItemCard)], best first;
    ``copies`` is [(Segment, ItemCard)] (:func:`reelsim.similarity.copies.matches`), best first."""

    card: ItemCard
    neighbors: list
    copies: list = field(default_factory=list)


#: copies shown per item, and matched shots shown per side of a copy
MAX_COPIES = 8
MAX_COPY_SHOTS = 4


def shots_in(card: ItemCard, start: float, end: float) -> list[int]:
    """Shots of ``card`` that overlap ``[start, end]`` seconds by more than a tenth of a second (or of the shot)."""
    out = []
    for i, (t0, t1) in enumerate(card.shot_times):
        overlap = min(t1, end) - max(t0, start)
        if overlap > min(0.1, 0.5 * (t1 - t0)):
            out.append(i)
    return out


def _shot_figures(card: ItemCard, shots: list[int], role: str) -> str:
    figs = []
    for i in shots[:MAX_COPY_SHOTS]:
        t0, t1 = card.shot_times[i]
        if i < len(card.keyframes):
            alt = f"{card.name}: shot {i + 1}, {_seconds(t0)} to {_seconds(t1)} s ({role})"
            figs.append(f"<li><figure>{_img(card.keyframes[i], alt)}<figcaption>{_seconds(t0)}–{_seconds(t1)} s"
                        "</figcaption></figure></li>")
    if len(shots) > MAX_COPY_SHOTS:
        figs.append(f'<li class="more">+{len(shots) - MAX_COPY_SHOTS} more</li>')
    if not figs:
        figs.append('<li class="nopic">no keyframes stored</li>')
    return f'<ul class="strip small" aria-label="{escape(role)}">{"".join(figs)}</ul>'


def copies_html(entry: ReportEntry) -> str:
    """The item's copies: relation, spans, edit and score, with the matched shots of both items side by side."""
    if not entry.copies:
        return ""
    card = entry.card
    rows = []
    words = {"copies": "shows footage of", "copied-by": "is shown in", "duplicate": "is a duplicate of"}
    for seg, other in entry.copies[:MAX_COPIES]:
        here = _shot_figures(card, shots_in(card, seg.item_start, seg.item_end), f"matched shots of {card.name}")
        there = _shot_figures(other, shots_in(other, seg.other_start, seg.other_end),
                              f"matched shots of {other.name}")
        rows.append(
            f'<tr data-copy="{escape(seg.other)}"><th scope="row">{escape(words.get(seg.relation, seg.relation))} '
            f'{escape(other.name)}<div class="sub"><span class="id">{escape(seg.other)}</span> '
            f'<span class="kind">{escape(seg.edit)}</span></div></th>'
            f'<td>{here}<div class="muted">{_seconds(seg.item_start)}–{_seconds(seg.item_end)} s here</div></td>'
            f'<td>{there}<div class="muted">{_seconds(seg.other_start)}–{_seconds(seg.other_end)} s there</div></td>'
            f'<td class="num">{seg.score:.3f}<div class="muted">{seg.shots} shots</div></td></tr>')
    more = (f'<p class="muted">+{len(entry.copies) - MAX_COPIES} more copies (reelsim matches)</p>'
            if len(entry.copies) > MAX_COPIES else "")
    return (f'<div class="scroll"><table class="copies"><caption>Copies: where the shots of {escape(card.name)} '
            "appear elsewhere, and what it shows of other items</caption><thead><tr>"
            '<th scope="col">Copy</th><th scope="col">Matched shots here</th><th scope="col">Matched shots there</th>'
            f'<th scope="col" class="num">Score</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>{more}')


def choose_items(ids: list[str], *, sample: int, seed: int, items: list[str] | None = None) -> list[str]:
    """The items the page shows: ``items`` as given, else ``sample`` ids drawn with ``seed``, in id order.

    Raises
    ------
    UnknownItemError
        An id in ``items`` that is not in ``ids``.

    Examples
    --------
    >>> choose_items(list("abcdef"), sample=3, seed=0) == choose_items(list("fedcba"), sample=3, seed=0)
    True
    """
    if items:
        known = set(ids)
        missing = [i for i in items if i not in known]
        if missing:
            raise UnknownItemError(f"unknown item id {missing[0]!r}: not in this store's index")
        return list(dict.fromkeys(items))
    if sample < 1:
        raise UsageError("--sample must be at least 1")
    pool = sorted(ids)
    return sorted(random.Random(seed).sample(pool, min(sample, len(pool))))


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _img(jpeg: bytes, alt: str) -> str:
    w, h = jpeg_size(jpeg)
    return f'<img src="{data_uri(jpeg)}" width="{w}" height="{h}" alt="{escape(alt)}" loading="eager">'


def _seconds(t: float) -> str:
    """Short time: ``4.2`` under a minute, else ``m:ss.s`` (``1:02.5``) or ``h:mm:ss``."""
    t = max(t, 0.0)
    if t < 60:
        return f"{t:.1f}"
    m, s = divmod(t, 60)
    return f"{int(m)}:{s:04.1f}" if m < 60 else f"{int(m // 60)}:{int(m % 60):02d}:{int(s):02d}"


def pictures_html(card: ItemCard, max_shots: int, small: bool) -> str:
    """The shot strip of a video (one figure per shot) or the product image of ``card``."""
    cls = "strip small" if small else "strip"
    name = card.name
    figures = []
    if card.keyframes:
        n = len(card.keyframes)
        for i, (jpeg, (t0, t1)) in enumerate(zip(card.keyframes[:max_shots], card.shot_times)):
            entered = card.transitions[i] if i < len(card.transitions) else ""
            how = f", after a {entered}" if entered in ("cut", "dissolve", "fade") else ""
            alt = f"{name}: shot {i + 1} of {n}, {_seconds(t0)} to {_seconds(t1)} s{how}"
            caption = f"{_seconds(t0)} s" if small else f"{i + 1} · {_seconds(t0)}–{_seconds(t1)} s"
            if not small and how and entered != "cut":
                caption += f" · {entered}"
            figures.append(f"<li><figure>{_img(jpeg, alt)}<figcaption>{caption}</figcaption></figure></li>")
        if n > max_shots:
            figures.append(f'<li class="more">+{n - max_shots} more shots</li>')
    if card.image is not None:
        figures.append(f"<li><figure>{_img(card.image, f'{name}: product image')}"
                       f"<figcaption>{'image' if small else 'product image'}</figcaption></figure></li>")
    if not figures:
        why = "no pictures stored for this item (shard written before thumbnails; re-run to add them)"
        figures.append(f'<li class="nopic">{escape(why)}</li>')
    label = f"Shots of {name}" if card.keyframes else f"Picture of {name}"
    return f'<ul class="{cls}" aria-label="{escape(label)}">{"".join(figures)}</ul>'


def _about(card: ItemCard) -> str:
    bits = [f'<span class="id">{escape(card.id)}</span>', f'<span class="kind">{escape(card.kind)}</span>']
    if card.shot_times:
        detector = f", shots from the {escape(card.detector)} detector" if card.detector else ""
        bits.append(f'<span class="muted">{len(card.shot_times)} shots, '
                    f"{_seconds(card.shot_times[-1][1])} s{detector}</span>")
    return " ".join(bits)


def _score_cell(v: float | None) -> str:
    if v is None:
        return '<td class="na"><span aria-hidden="true">·</span><span class="vh">not shared</span></td>'
    return f'<td class="num">{v:.3f}</td>'


def entry_html(n: int, entry: ReportEntry, k: int) -> str:
    card = entry.card
    head = ('<tr><th scope="col" class="num">#</th><th scope="col">Neighbour</th><th scope="col">Pictures</th>'
            '<th scope="col" class="num">Score</th>'
            + "".join(f'<th scope="col" class="num">{m}</th>' for m in MODALITIES) + "</tr>")
    rows = []
    for rank, (nb, nc) in enumerate(entry.neighbors, 1):
        rows.append(
            f'<tr data-neighbor="{escape(nb.item)}"><td class="num">{rank}</td>'
            f'<th scope="row">{escape(nc.name)}<div class="sub">{_about(nc)}</div></th>'
            f"<td>{pictures_html(nc, MAX_SHOTS_NEIGHBOR, small=True)}</td>"
            f'<td class="num">{nb.score:.3f}<meter min="0" max="1" value="{max(nb.score, 0.0):.3f}" '
            f'aria-hidden="true"></meter></td>'
            + "".join(_score_cell(nb.modalities.get(m)) for m in MODALITIES) + "</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{4 + len(MODALITIES)}">No neighbours: this item shares no weighted '
                    "modality with any other.</td></tr>")
    return (f'<section class="item" id="item-{n}" aria-labelledby="item-{n}-h" data-item="{escape(card.id)}">'
            f'<h2 id="item-{n}-h">{escape(card.name)}</h2><p>{_about(card)}</p>'
            f"{pictures_html(card, MAX_SHOTS_ITEM, small=False)}"
            f'<div class="scroll"><table><caption>Top {k} neighbours of {escape(card.name)}</caption>'
            f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>{copies_html(entry)}</section>")


def render_html(entries: list[ReportEntry], *, store_name: str, k: int, weights: dict[str, float],
                n_items: int, generated_utc: str) -> str:
    """The whole page as a string (pure: no file access)."""
    script_hash = base64.b64encode(hashlib.sha256(IMAGE_COUNT_SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    nav = "".join(f'<li><a href="#item-{i}">{escape(e.card.name)}</a></li>' for i, e in enumerate(entries))
    w = ", ".join(f"{m} {v:g}" for m, v in weights.items())
    body = "".join(entry_html(i, e, k) for i, e in enumerate(entries))
    n_images = body.count("<img ")  # catalog strings are escaped, so every "<img " is one of ours
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>reelsim neighbours: {escape(store_name)}</title><style>{CSS}</style>"
        f"<script>{IMAGE_COUNT_SCRIPT}</script></head>"
        f'<body data-items="{len(entries)}" data-images-total="{n_images}" data-images-loaded="0">'
        f"<header><h1>Neighbour lists: {escape(store_name)}</h1>"
        f'<p class="muted">{len(entries)} of {n_items} items, top {k} neighbours each. Score: the weighted mean '
        f"of the cosines of the modalities both items have (weights: {escape(w)}); a blank modality cell "
        "means the pair does not share it.</p>"
        f'<nav aria-label="Items on this page"><ol>{nav}</ol></nav></header>'
        f"<main>{body}</main>"
        f'<footer class="muted">Generated by reelsim {escape(__version__)} at {escape(generated_utc)}.</footer>'
        "</body></html>\n")


def write_html_report(store: Path, to: Path, *, sample: int = 12, seed: int = 0, items: list[str] | None = None,
                 k: int = 5, weights: dict[str, float] | None = None, progress: bool | Progress | None = True,
                 space: str = "content") -> dict:
    """Write the page for ``store`` to ``to`` atomically.  Returns {items, neighbours, images, bytes}.

    ``progress``: the items done, stage ``report`` (:func:`~reelsim.jobs.console.progress_for`).
    """
    if k < 1:
        raise UsageError("-k must be at least 1")
    reader = StoreReader(store)  # the store's lists answer, with their hygiene (similarity/answer.py)
    ids = reader.ids()
    chosen = choose_items(list(ids), sample=sample, seed=seed, items=items)
    cards: dict[str, ItemCard] = {}

    def card(i: str) -> ItemCard:
        if i not in cards:
            cards[i] = read_card(store, i)
        return cards[i]

    def copies(i: str) -> list:
        try:
            return [(seg, card(seg.other)) for seg in copy_matches(store, i)]
        except (StoreError, UnknownItemError):  # no copy index (older store), or not a video
            return []

    tick = Counter(progress_for(progress), "report", total=len(chosen))
    entries = []
    for i in chosen:
        neighbors = reader.similar(i, k, space=space, weights=weights).neighbors
        entries.append(ReportEntry(card(i), [(nb, card(nb.item)) for nb in neighbors], copies(i)))
        tick(1)
    shown = weights or load_catalog(StoreLayout(store).require_catalog(), header=True)[1]
    html = render_html(entries, store_name=terminal_safe(Path(store).resolve().name), k=k, weights=dict(shown),
                       n_items=len(ids),
                       generated_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    write_text_atomic(to, html)
    return {"items": len(entries), "neighbours": sum(len(e.neighbors) for e in entries),
            "images": html.count("<img "), "bytes": len(html.encode("utf-8"))}
