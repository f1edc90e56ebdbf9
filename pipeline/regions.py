"""Regions of a shot's keyframe that a copy may show: the picture area, halves, quadrants, insets.

A copy need not fill the frame: a picture-in-picture shows its source in a
corner, a split-screen in one half, a letterboxed or vertically re-framed
copy shows part of the frame or all of it inside bars. Besides the whole
frame, each shot is therefore described by a few of its regions, and a copy
is found when a region of one item matches a region (usually the whole
picture) of another (:mod:`reelsim.similarity.copies`).

:func:`region_boxes` chooses the regions of one frame and :func:`region_crops`
cuts and scales them; both paths of a run (the per-item path in
:mod:`reelsim.pipeline.item` and the GPU path in :mod:`reelsim.pipeline.batcher`)
call :func:`shot_regions`, so both store the same regions.

The regions, in this order (boxes are fractions of the frame, ``x0, y0, x1, y1``):

- ``picture``: the active picture, inside letterbox or pillarbox bars (uniform
  rows or columns at the frame's edges);
- ``centre``: the centre square of the picture;
- ``portrait``: the centre 9:16 strip of a landscape picture (what a vertical
  re-frame keeps), or the centre 16:9 band of a portrait one;
- ``left``, ``right``: the picture's halves (split-screen);
- ``tl``, ``tr``, ``bl``, ``br``: its quadrants (a 2x2 grid: half-size insets, four-way splits);
- ``inset``: up to two rectangles found in the frame: a straight horizontal
  and a straight vertical edge that meet and run to the frame's edges
  (a picture-in-picture in a corner), see :func:`find_insets`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from reelsim.storage.schema import RegionFeatures

#: region kinds, in storage order; their index is the ``kind`` code stored in a shard
REGION_KINDS = ("picture", "centre", "portrait", "left", "right", "tl", "tr", "bl", "br", "inset")
#: kinds that show (nearly) the whole picture: a match between two of them is a full-frame copy
FULL_KINDS = ("picture", "centre", "portrait")


class Region(NamedTuple):
    """One region of a frame: ``kind`` (index into :data:`REGION_KINDS`) and ``box`` (x0, y0, x1, y1) in [0, 1]."""

    kind: int
    box: tuple[float, float, float, float]


def picture_area(rgb: np.ndarray, *, max_std: float = 4.0, max_bar: float = 0.35) -> tuple[int, int, int, int]:
    """The active picture inside uniform bars: (x0, y0, x1, y1) in pixels, end exclusive.

    A bar is a run of rows (or columns) from a frame edge whose pixels are
    nearly one colour (standard deviation along the row below ``max_std``
    grey levels, mean within ``max_std * 2`` of the edge row's) ; at most
    ``max_bar`` of the frame on each side.

    Parameters
    ----------
    rgb : uint8 (H, W, 3)

    Examples
    --------
    >>> f = np.zeros((90, 160, 3), np.uint8)  # a textured picture between black bars 10 rows high
    >>> f[10:80] = np.random.default_rng(0).integers(0, 256, (70, 160, 1), dtype=np.uint8)
    >>> picture_area(f)
    (0, 10, 160, 80)
    """
    g = rgb.astype(np.float32).mean(axis=2)
    h, w = g.shape

    def run(lines: np.ndarray, limit: int) -> int:
        std, mean = lines.std(axis=1), lines.mean(axis=1)
        n = 0
        while n < limit and std[n] < max_std and abs(mean[n] - mean[0]) < 2 * max_std:
            n += 1
        return n

    top, bottom = run(g, int(h * max_bar)), run(g[::-1], int(h * max_bar))
    left, right = run(g.T, int(w * max_bar)), run(g.T[::-1], int(w * max_bar))
    if top + bottom >= h - 4 or left + right >= w - 4:  # a uniform frame: no bars to speak of
        return 0, 0, w, h
    return left, top, w - right, h - bottom


def _edge_support(g: np.ndarray, axis: int, *, min_step: float, ratio: float, gap: int = 3) -> np.ndarray:
    """bool, same shape as ``g``: pixels on a step edge across ``axis`` (0: a horizontal edge between rows).

    A pixel supports an edge when the grey step across it is at least
    ``min_step`` and ``ratio`` times the steps ``gap`` pixels away on both
    sides (so texture, which steps everywhere, does not).
    """
    d = np.abs(np.diff(g, axis=axis, prepend=np.take(g, [0], axis=axis)))
    pad = [(0, 0), (0, 0)]
    pad[axis] = (gap, gap)
    p = np.pad(d, pad, mode="edge")
    n = g.shape[axis]
    before = np.take(p, np.arange(0, n), axis=axis)
    after = np.take(p, np.arange(2 * gap, n + 2 * gap), axis=axis)
    on = (d >= min_step) & (d >= ratio * np.maximum(before, after))
    # a scaled picture's edge may fall between two pixel rows: a pixel also supports the line next to it
    q = np.pad(on, pad, mode="constant")
    return on | np.take(q, np.arange(gap - 1, n + gap - 1), axis=axis) | np.take(q, np.arange(gap + 1, n + gap + 1),
                                                                                    axis=axis)


def find_insets(rgb: np.ndarray, *, min_side: float = 0.15, max_side: float = 0.62, min_support: float = 0.62,
                limit: int = 2) -> list[tuple[float, float, float, float]]:
    """Rectangles in the corners of a frame whose inner edges are straight lines: picture-in-picture insets.

    :func:`inset_candidates` scoring at least ``min_support``, best first, at most ``limit``.

    Returns
    -------
    list of (x0, y0, x1, y1) boxes in [0, 1].
    """
    return _strong(inset_candidates(rgb, min_side=min_side, max_side=max_side), min_support, limit)


def _strong(candidates, min_support: float = 0.62, limit: int = 2) -> list[tuple[float, float, float, float]]:
    """The boxes of :func:`inset_candidates` scoring at least ``min_support``, at most ``limit`` (find_insets')."""
    return [b for score, b in candidates if score >= min_support][:limit]


def inset_candidates(rgb: np.ndarray, *, min_side: float = 0.15, max_side: float = 0.62,
                     floor: float = 0.4) -> list[tuple[float, tuple[float, float, float, float]]]:
    """Rectangles in the corners of a frame whose inner edges are straight lines: picture-in-picture insets.

    For each corner, every pair (inner horizontal edge row, inner vertical
    edge column) is scored by the fraction of pixels supporting an edge along
    each line, from where they meet to the frame's edge; the pair's score is
    the smaller of the two. The best pair of each corner whose sides are
    ``min_side`` to ``max_side`` of the frame is a candidate when its score
    is at least ``floor``; its outer edges are then moved in to a parallel
    edge near the border when there is one (an inset with a margin).

    Parameters
    ----------
    rgb : uint8 (H, W, 3) frame (analysis size).

    Returns
    -------
    list of (score, (x0, y0, x1, y1)) with boxes in [0, 1], best first.
    """
    import cv2

    g = cv2.GaussianBlur(rgb.astype(np.float32).mean(axis=2), (3, 3), 0.7)
    h, w = g.shape
    sh = _edge_support(g, 0, min_step=5.0, ratio=1.5).astype(np.float32)  # horizontal lines (between rows)
    sv = _edge_support(g, 1, min_step=5.0, ratio=1.5).astype(np.float32)  # vertical lines
    found = []
    for corner in ("tl", "tr", "bl", "br"):
        # flip so the corner is bottom-right: inner lines run from (y, x) to the right and bottom edges
        a_h, a_v = sh, sv
        if corner[1] == "l":
            a_h, a_v = a_h[:, ::-1], np.roll(a_v[:, ::-1], 1, axis=1)
        if corner[0] == "t":
            a_h, a_v = np.roll(a_h[::-1], 1, axis=0), a_v[::-1]
        # mean support of row y from column x to the right edge, and of column x from row y to the bottom
        run_h = np.cumsum(a_h[:, ::-1], axis=1)[:, ::-1] / np.arange(w, 0, -1)[None, :]
        run_v = np.cumsum(a_v[::-1], axis=0)[::-1] / np.arange(h, 0, -1)[:, None]
        score = np.minimum(run_h, run_v)
        y_lo, y_hi = int(h * (1 - max_side)), int(h * (1 - min_side))
        x_lo, x_hi = int(w * (1 - max_side)), int(w * (1 - min_side))
        window = score[y_lo:y_hi, x_lo:x_hi]
        if not window.size:
            continue
        y, x = np.unravel_index(int(np.argmax(window)), window.shape)
        best = float(window[y, x])
        if best < floor:
            continue
        y, x = y + y_lo, x + x_lo
        # outer edges: a parallel line within the last 10 % (a margin), else the frame's edge
        y1, x1 = h, w
        rows = range(h - 1, max(y + 1, h - int(0.1 * h) - 1), -1)
        cols = range(w - 1, max(x + 1, w - int(0.1 * w) - 1), -1)
        for r in rows:
            if a_h[r, x:].mean() >= max(floor, 0.6):
                y1 = r
                break
        for c in cols:
            if a_v[y:, c].mean() >= max(floor, 0.6):
                x1 = c
                break
        box = (x / w, y / h, x1 / w, y1 / h)  # in the flipped frame
        if corner[1] == "l":
            box = (1 - box[2], box[1], 1 - box[0], box[3])
        if corner[0] == "t":
            box = (box[0], 1 - box[3], box[2], 1 - box[1])
        found.append((best, box))
    found.sort(key=lambda t: -t[0])
    return found


def box_iou(a, b) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def frame_insets(rgb: np.ndarray, *, floor: float = 0.4):
    """A frame's :func:`picture_area` and the :func:`inset_candidates` (down to ``floor``) of that area.

    The candidates' boxes are fractions of the picture area; none when the area is 8 pixels or less across.
    """
    x0, y0, x1, y1 = area = picture_area(rgb)
    if x1 - x0 <= 8 or y1 - y0 <= 8:
        return area, []
    return area, inset_candidates(rgb[y0:y1, x0:x1], floor=floor)


def persistent_insets(frames: list[np.ndarray], *, floor: float = 0.4, share: float = 0.3,
                      min_frames: int = 2, found: list | None = None) -> list[tuple[float, float, float, float]]:
    """Insets found at the same place in many of a video's keyframes: a picture-in-picture that stays.

    A picture-in-picture keeps its place while shots change behind and
    inside it, but in one keyframe its edge may vanish where both pictures
    have the same colour. Candidates of every keyframe (:func:`inset_candidates`
    down to ``floor``, boxes in frame fractions) that overlap (IoU >= 0.7)
    in at least ``share`` of the keyframes, and in ``min_frames``, are
    returned (their median box), most frequent first, at most two.
    ``found``: :func:`frame_insets` of each frame at this ``floor``, when already computed.
    """
    if found is None:
        found = [frame_insets(rgb, floor=floor) for rgb in frames]
    seen: list[list] = []  # [boxes] per place
    for rgb, ((x0, y0, x1, y1), candidates) in zip(frames, found):
        h, w = rgb.shape[:2]
        for _, b in candidates:
            pw, ph = (x1 - x0) / w, (y1 - y0) / h
            box = (x0 / w + b[0] * pw, y0 / h + b[1] * ph, x0 / w + b[2] * pw, y0 / h + b[3] * ph)
            for place in seen:
                if box_iou(place[0], box) >= 0.7:
                    place.append(box)
                    break
            else:
                seen.append([box])
    need = max(min_frames, int(np.ceil(share * len(frames))))
    places = sorted((p for p in seen if len(p) >= need), key=len, reverse=True)[:2]
    return [tuple(float(v) for v in np.median(np.array(p), axis=0)) for p in places]


def region_boxes(rgb: np.ndarray, extra_insets: list[tuple[float, float, float, float]] = (), *,
                 found: tuple | None = None) -> list[Region]:
    """The regions of one frame (see the module's docstring), in :data:`REGION_KINDS` order.

    Parameters
    ----------
    rgb : uint8 (H, W, 3), the full analysis frame (not a centre crop).
    extra_insets : insets found elsewhere in the video (:func:`persistent_insets`), frame fractions;
        they come first, then the frame's own (:func:`find_insets`) that do not overlap them, two in all.
    found : :func:`frame_insets` of ``rgb`` (default floor), when already computed.

    Returns
    -------
    list of Region: 9 fixed regions of the picture area, then 0 to 2 insets.
    """
    h, w = rgb.shape[:2]
    if found is None:
        found = frame_insets(rgb)
    (x0, y0, x1, y1), candidates = found
    pw, ph = x1 - x0, y1 - y0

    def rel(a, b, c, d):  # a box inside the picture area, given in picture fractions -> frame fractions
        return ((x0 + a * pw) / w, (y0 + b * ph) / h, (x0 + c * pw) / w, (y0 + d * ph) / h)

    side = min(pw, ph)
    sq_w, sq_h = side / pw, side / ph
    centre = rel((1 - sq_w) / 2, (1 - sq_h) / 2, (1 + sq_w) / 2, (1 + sq_h) / 2)
    if pw >= ph:  # landscape: the 9:16 strip a vertical re-frame keeps
        f = min(1.0, ph * 9 / 16 / pw)
        portrait = rel((1 - f) / 2, 0, (1 + f) / 2, 1)
    else:  # portrait: the 16:9 band of a landscape copy
        f = min(1.0, pw * 9 / 16 / ph)
        portrait = rel(0, (1 - f) / 2, 1, (1 + f) / 2)
    boxes = [rel(0, 0, 1, 1), centre, portrait, rel(0, 0, 0.5, 1), rel(0.5, 0, 1, 1),
             rel(0, 0, 0.5, 0.5), rel(0.5, 0, 1, 0.5), rel(0, 0.5, 0.5, 1), rel(0.5, 0.5, 1, 1)]
    out = [Region(i, b) for i, b in enumerate(boxes)]
    inset = REGION_KINDS.index("inset")
    insets = [tuple(b) for b in extra_insets]
    own = [rel(*b) for b in _strong(candidates)]  # what find_insets gives on the picture area
    insets += [b for b in own if all(box_iou(b, e) < 0.7 for e in insets)]
    return out + [Region(inset, b) for b in insets[:2]]


def region_crops(rgb: np.ndarray, regions: list[Region], size: int) -> np.ndarray:
    """uint8 (R, size, size, 3): each region cut from ``rgb`` and scaled to a square (aspect not kept).

    Area interpolation when shrinking, bilinear when enlarging, so a region
    gives the same crop whatever the frame's size up to resampling.
    """
    import cv2

    h, w = rgb.shape[:2]
    out = np.empty((len(regions), size, size, 3), np.uint8)
    for i, r in enumerate(regions):
        x0, y0, x1, y1 = r.box
        a, b = int(round(x0 * w)), int(round(y0 * h))
        c, d = max(a + 1, int(round(x1 * w))), max(b + 1, int(round(y1 * h)))
        crop = rgb[b:d, a:c]
        interp = cv2.INTER_AREA if crop.shape[0] * crop.shape[1] > size * size else cv2.INTER_LINEAR
        out[i] = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interp)
    return out


def thumbnails(crops: np.ndarray, side: int) -> np.ndarray:
    """Colour thumbnails of region crops as unit vectors: float32 (N, side * side * 3).

    Each crop is low-passed, shrunk to ``side`` x ``side`` by area averaging,
    each colour channel centred on its mean, and the whole flattened to unit
    length. What survives is the picture's coarse layout of light and colour,
    which a copy keeps however small it is shown (an inset a fifth of the
    frame still has it) and whatever grade or grain it got; a region without
    contrast gives a short vector before normalising, which stays small noise.
    Rows are laid out (y, x, channel), so a mirrored picture's thumbnail is
    the same array with its x axis reversed (:func:`mirrored`).

    Parameters
    ----------
    crops : uint8 (N, S, S, 3)
    side : thumbnail side in pixels.
    """
    import cv2

    out = np.empty((len(crops), side * side * 3), np.float32)
    sigma = crops.shape[1] / side / 2
    for i, c in enumerate(crops):
        t = cv2.resize(cv2.GaussianBlur(c, (0, 0), sigma), (side, side), interpolation=cv2.INTER_AREA)
        t = t.astype(np.float32)
        t -= t.mean(axis=(0, 1), keepdims=True)
        out[i] = t.ravel() / max(float(np.linalg.norm(t)), 8.0)  # a flat region stays short: no amplified noise
    return out


def mirrored(vectors: np.ndarray, side: int) -> np.ndarray:
    """``vectors`` made by :func:`copy_vectors` with their thumbnail part mirrored left-right.

    The CNN part, pooled over the whole region, is left as it is (ImageNet
    features are nearly mirror-invariant); only the thumbnail's columns are
    reversed.
    """
    v = np.array(vectors, dtype=np.float32, copy=True)
    n = side * side * 3
    t = v[:, -n:].reshape(len(v), side, side, 3)
    v[:, -n:] = t[:, :, ::-1].reshape(len(v), n)
    return v


#: share of the CNN features in a region vector's cosine (the thumbnail has the rest)
CNN_SHARE = 0.5


def copy_vectors(cnn: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """Region vectors: L2-normalised CNN features and thumbnail side by side, float16 (N, C + T).

    The cosine of two such vectors is ``CNN_SHARE`` times the cosine of
    their CNN parts plus the rest times the inner product of their
    thumbnails: one number, one FAISS index.

    Parameters
    ----------
    cnn : float32 (N, C) region features from the image model.
    thumbs : float32 (N, T) from :func:`thumbnails`.
    """
    cnn = np.asarray(cnn, np.float32)
    cnn = cnn / np.maximum(np.linalg.norm(cnn, axis=1, keepdims=True), 1e-12)
    return np.hstack([np.sqrt(CNN_SHARE) * cnn, np.sqrt(1 - CNN_SHARE) * thumbs]).astype(np.float16)


class ShotRegions(NamedTuple):
    """The regions of every shot of a video, ready for the image model.

    crops : uint8 (N, size, size, 3), N = regions of all shots, shot by shot.
    shot : int32 (N,) the shot of each crop.
    kind : int8 (N,) index into :data:`REGION_KINDS`.
    boxes : float32 (N, 4) x0, y0, x1, y1 in fractions of the frame.
    thumbs : float32 (N, T) :func:`thumbnails` of the crops.
    """

    crops: np.ndarray
    shot: np.ndarray
    kind: np.ndarray
    boxes: np.ndarray
    thumbs: np.ndarray


def shot_regions(frames: list[np.ndarray], size: int, thumb: int) -> ShotRegions:
    """The regions of each shot's keyframe: what both paths of a run embed (one function, one result).

    Parameters
    ----------
    frames : one uint8 (H, W, 3) full analysis frame per shot, in shot order.
    size : side of each crop in pixels (the image model's region input).
    thumb : side of each region's colour thumbnail.
    """
    crops, shot, kind, boxes = [], [], [], []
    found = [frame_insets(rgb) for rgb in frames]  # each frame's candidates, for both uses
    steady = persistent_insets(frames, found=found)
    for s, (rgb, f) in enumerate(zip(frames, found)):
        regions = region_boxes(rgb, steady, found=f)
        crops.append(region_crops(rgb, regions, size))
        shot += [s] * len(regions)
        kind += [r.kind for r in regions]
        boxes += [r.box for r in regions]
    crops = np.concatenate(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return ShotRegions(crops, np.asarray(shot, np.int32), np.asarray(kind, np.int8),
                       np.asarray(boxes, np.float32).reshape(-1, 4), thumbnails(crops, thumb))


def region_features(regions: ShotRegions, cnn: np.ndarray, provenance: dict, size: int, thumb: int):
    """The :class:`~reelsim.storage.schema.RegionFeatures` a shard stores, from the regions and their CNN rows."""
    return RegionFeatures(
        vectors=copy_vectors(cnn, regions.thumbs), shot=regions.shot, kind=regions.kind, boxes=regions.boxes,
        provenance={"model": provenance.get("model", ""), "network": provenance.get("network", ""),
                    "weights_sha256": provenance.get("weights_sha256", ""), "crop_size": size,
                    "thumb_side": thumb, "cnn_share": CNN_SHARE, "kinds": list(REGION_KINDS),
                    "layer": "last MBConv block, averaged (320 channels)"})
