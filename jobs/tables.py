"""What the CLI prints: the ``reelsim similar`` neighbour table and its JSON, terminal-safe.

Catalog strings (ids, titles) are user data: control characters and
bidirectional overrides are replaced before printing, so a title cannot
move the cursor, recolour the terminal or reorder what is shown.  Columns are
aligned by display width (East Asian wide characters take two cells).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from reelsim.config import MODALITIES
from reelsim.storage.cards import read_card
from reelsim.storage.lists import Neighbor

#: Invisible characters that reorder text (Trojan Source, CVE-2021-42574).
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def terminal_safe(text: str) -> str:
    """``text`` with whitespace runs as one space, control/bidi characters as U+FFFD, and the bytes of a path
    that are not UTF-8 (``surrogateescape``: U+DC80..U+DCFF) as ``\\xNN`` (other lone surrogates: U+FFFD).

    Examples
    --------
    >>> terminal_safe("Bad\\x1b[31m title\\n\\u202eevil")
    'Bad\\ufffd[31m title \\ufffdevil'
    >>> print(terminal_safe("store-\\udcff"))
    store-\\xff
    """
    out = []
    for ch in " ".join(str(text).split()):
        cat = unicodedata.category(ch)
        if cat == "Cs":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else "\ufffd")
        else:
            out.append("\ufffd" if ch in _BIDI or cat == "Cc" else ch)
    return "".join(out)


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes: 2 per wide/full-width character, 0 per combining mark."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` cells (with "…" when cut), padded with spaces to ``width``.

    Examples
    --------
    >>> fit("headphones", 6) + "|", fit("ab", 4) + "|"
    ('headp…|', 'ab  |')
    """
    if display_width(text) > width:
        cut, used = [], 0
        for ch in text:
            w = display_width(ch)
            if used + w > width - 1:
                break
            cut.append(ch)
            used += w
        text = "".join(cut) + "…"
    return text + " " * (width - display_width(text))


def _score(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


FUSED_NOTE = "score: weighted mean of the cosines of the modalities both items have (blank: not shared)"


def neighbor_table(item: str, neighbors: Sequence, labels: Mapping[str, Mapping[str, str]], *,
                   max_id: int = 28, max_title: int = 40, note: str = FUSED_NOTE) -> str:
    """An aligned table of ``neighbors`` (``Neighbor`` tuples, best first) of ``item``.

    ``labels`` maps an id to ``{"kind", "title", "name"}`` (``name``: the title,
    else the file name; see :func:`reelsim.storage.cards.display_name`).
    Columns: rank, id, title, kind, fused score, then the cosine of each
    modality, blank where the two items do not share it; ``note`` is the last line.
    """
    def label(i: str, key: str) -> str:
        info = labels.get(i, {})
        return terminal_safe(info.get(key) or (info.get("title") if key == "name" else "") or "")

    rows = [[str(r), terminal_safe(n.item), label(n.item, "name"), label(n.item, "kind"), _score(n.score),
             *(_score(n.modalities.get(m)) for m in MODALITIES)] for r, n in enumerate(neighbors, 1)]
    head = ["rank", "id", "title", "kind", "score", *MODALITIES]
    caps = [4, max_id, max_title, 7] + [6] * (1 + len(MODALITIES))
    widths = [min(cap, max(display_width(c) for c in col)) for cap, col in zip(caps, zip(head, *rows))]
    right = [True, False, False, False] + [True] * (1 + len(MODALITIES))

    def line(cells):
        out = []
        for c, w, r in zip(cells, widths, right):
            out.append(" " * (w - display_width(c)) + c if r else fit(c, w))
        return "  ".join(out).rstrip()

    name, kind = label(item, "name"), label(item, "kind")
    top = f"neighbours of {terminal_safe(item)}: {name} ({kind})" if name else f"neighbours of {terminal_safe(item)}"
    if not rows:
        return top + "\n(no neighbours: this item shares no weighted modality with any other)"
    return "\n".join([top, line(head), *map(line, rows), note])


def item_labels(store: Path, ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """{id: {kind, title, name}} read from the shards (name: the title, else the file name)."""
    out = {}
    for i in dict.fromkeys(ids):
        card = read_card(store, i, pictures=False)
        out[i] = {"kind": card.kind, "title": card.title, "name": card.name}
    return out


#: the table's last line for scores of the learned and blend spaces (docs/learning.md)
SPACE_NOTE = "score: {space}-space score (docs/learning.md); modality columns: content cosines (blank: not shared)"


def neighbors_text(store: Path, item: str, neighbors: Sequence[Neighbor], *, space: str = "content",
                   copies: Mapping[str, dict] | None = None) -> str:
    """The readable table of ``item``'s neighbours in ``space``, labelled from the store's shards.

    ``copies`` (:func:`reelsim.similarity.copies.copy_marks`): neighbours that
    are copies of ``item``, each listed under the table with its matched spans.
    """
    note = FUSED_NOTE if space == "content" else SPACE_NOTE.format(space=space)
    text = neighbor_table(item, neighbors, item_labels(store, [item, *(n.item for n in neighbors)]), note=note)
    lines = [f"copy: {terminal_safe(n.item)} {copy_line(copies[n.item])}" for n in neighbors if n.item in (copies or {})]
    return "\n".join([text, *lines])


def copy_line(span: Mapping) -> str:
    """``relation: item a-b s = other c-d s (edit, score)`` of one copy span."""
    return (f"{span['relation']}: {span['item_start']:.2f}-{span['item_end']:.2f} s here = "
            f"{span['other_start']:.2f}-{span['other_end']:.2f} s there ({span['edit']}, score {span['score']:.3f})")


def neighbors_json(item: str, neighbors: Sequence[Neighbor], copies: Mapping[str, dict] | None = None) -> dict:
    """``reelsim similar --json``: ``{"item", "neighbors": [{"item", "score", "modalities"}]}``.

    A neighbour that ``copies`` (:func:`reelsim.similarity.copies.copy_marks`)
    marks as a copy also has ``"copy": true`` and ``"copy_span"``: its best
    matched span (``item_start``, ``item_end``, ``other_start``, ``other_end``
    in seconds, ``relation``, ``edit``, ``score``, ``shots``, ``speed``).
    """
    copies = copies or {}
    rows = []
    for n in neighbors:
        row = {"item": n.item, "score": float(n.score), "modalities": {m: float(v) for m, v in n.modalities.items()}}
        if n.item in copies:
            row.update({"copy": True, "copy_span": dict(copies[n.item])})
        rows.append(row)
    return {"item": item, "neighbors": rows}


def matches_text(store: Path, item: str, segments: Sequence) -> str:
    """The readable table of ``reelsim matches``: one row per copy (:class:`~reelsim.similarity.copies.Segment`)."""
    labels = item_labels(store, [item, *(s.other for s in segments)])
    name = terminal_safe(labels.get(item, {}).get("name") or "")
    top = f"copies of {terminal_safe(item)}" + (f": {name}" if name else "")
    if not segments:
        return top + "\n(none found: no other item shows this item's shots, and it shows none of theirs)"
    head = ["id", "title", "relation", "here (s)", "there (s)", "score", "shots", "edit"]
    rows = [[terminal_safe(s.other), terminal_safe(labels.get(s.other, {}).get("name") or ""), s.relation,
             f"{s.item_start:.2f}-{s.item_end:.2f}", f"{s.other_start:.2f}-{s.other_end:.2f}", f"{s.score:.3f}",
             str(s.shots), s.edit] for s in segments]
    caps = [28, 30, 10, 13, 13, 6, 5, 40]
    widths = [min(c, max(display_width(x) for x in col)) for c, col in zip(caps, zip(head, *rows))]
    line = lambda cells: "  ".join(fit(c, w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([top, line(head), *map(line, rows),
                      "here/there: the aligned spans in this item and the other; score: mean cosine of the matched "
                      "shots' regions"])
