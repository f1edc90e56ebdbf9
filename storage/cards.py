"""What a person sees of a stored item: a readable name, its kind, its shots and its pictures.

Read from the item's shard (:mod:`reelsim.storage.shards`); used by the
``reelsim similar`` table and the ``reelsim report`` page.  Shards written
before thumbnails or ``image_path`` existed still give a card (no pictures,
the id as a product's name).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from reelsim.storage.shards import existing_shard, open_shard
from reelsim.storage.thumbnails import read_thumbnails


@dataclass(frozen=True)
class ItemCard:
    """One item as shown to people.

    id, kind : the item id and ``video`` | ``product``.
    title : the catalog title ("" when the manifest gave none).
    name : what to call it: the title, else the video's or image's file name, else the id.
    shot_times : (start_s, end_s) of each shot, seconds (videos; empty for products).
    detector : the shot detector's name (videos), e.g. ``reelsim``.
    transitions : how each shot was entered (``start``, ``cut``, ``dissolve``,
        ``fade``), shot order (videos; empty for shards that predate it).
    keyframes : JPEG bytes of each shot's keyframe, shot order (empty when not stored).
    image : JPEG bytes of the product image, or None.
    """

    id: str
    kind: str
    title: str
    name: str
    shot_times: list[tuple[float, float]] = field(default_factory=list)
    detector: str | None = None
    transitions: list[str] = field(default_factory=list)
    keyframes: list[bytes] = field(default_factory=list)
    image: bytes | None = None


def display_name(item_id: str, title: str, source_path: str) -> str:
    """The title, else the file name of ``source_path``, else the id.

    Examples
    --------
    >>> display_name("v1", "", "/media/trailer.mp4"), display_name("v1", "Trailer", "/m/t.mp4")
    ('trailer.mp4', 'Trailer')
    """
    return title.strip() or os.path.basename(source_path) or item_id


def _text(attrs, key: str) -> str:
    v = attrs.get(key, "")
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def read_card(store: Path, item_id: str, *, pictures: bool = True) -> ItemCard:
    """The :class:`ItemCard` of ``item_id`` (``pictures=False`` skips reading the JPEGs).

    Raises
    ------
    UnknownItemError
        No shard for ``item_id`` in ``store``.
    DamagedStoreError
        Its shard cannot be read (:func:`reelsim.storage.shards.open_shard`).
    """
    with open_shard(existing_shard(store, item_id), item_id) as f:
        title = _text(f.attrs, "title")
        video = f["video"] if "video" in f else None
        source = _text(video.attrs, "source_path") if video is not None else _text(f.attrs, "image_path")
        images = read_thumbnails(f, "image") if pictures else []
        return ItemCard(
            id=item_id,
            kind=_text(f.attrs, "kind"),
            title=title,
            name=display_name(item_id, title, source),
            shot_times=[(float(a), float(b)) for a, b in video["shot_times"][()]] if video is not None else [],
            detector=_text(video.attrs, "shots_detector") or None if video is not None else None,
            transitions=[t.decode() for t in video["transitions"][()]]
            if video is not None and "transitions" in video else [],
            keyframes=read_thumbnails(f, "keyframes") if pictures else [],
            image=images[0] if images else None,
        )
