"""Small JPEG thumbnails stored in each shard, for people to look at.

Layout inside a shard (readable with plain h5py; see ``docs/inspect.md``)::

    /thumbnails                group; attr format="jpeg" (size and quality: ThumbnailConfig)
    /thumbnails/keyframes      vlen uint8 (S,): JPEG bytes of shot i's keyframe (videos)
    /thumbnails/image          vlen uint8 (1,): JPEG bytes of the product image (items with an image)

Read one back with ``bytes(f["thumbnails/keyframes"][i])`` (or
``f["thumbnails/keyframes"][i].tobytes()``); it is a complete JPEG file.
Shards written before thumbnails existed have no ``/thumbnails`` group, and
readers here treat that as "no pictures".
"""

from __future__ import annotations

import io

import numpy as np

from reelsim.errors import ParameterError

GROUP = "thumbnails"


def jpeg_thumbnail(rgb: np.ndarray, *, max_side: int, quality: int) -> bytes:
    """JPEG bytes of ``rgb`` uint8 (H, W, 3), shrunk so its longer side is at most ``max_side`` px.

    The aspect ratio is kept and the picture is never enlarged.

    Examples
    --------
    >>> import numpy as np
    >>> data = jpeg_thumbnail(np.zeros((90, 320, 3), np.uint8), max_side=160, quality=80)
    >>> data[:2] == b"\\xff\\xd8", jpeg_size(data)
    (True, (160, 45))
    """
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ParameterError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if max_side < 1 or not 1 <= quality <= 95:
        raise ParameterError(f"max_side must be >= 1 and quality in 1..95, got {max_side}, {quality}")
    im = Image.fromarray(rgb)
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)  # in place, keeps aspect, never enlarges
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels of a JPEG, from its header."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def write_thumbnails(f, thumbs: dict[str, list[bytes]]) -> None:
    """Write ``thumbs`` (name -> list of JPEG bytes) under ``/thumbnails`` of the open h5py File ``f``.

    Names with an empty list are skipped; nothing is written when all are empty.
    """
    import h5py

    thumbs = {name: pics for name, pics in thumbs.items() if pics}
    if not thumbs:
        return
    g = f.create_group(GROUP)
    g.attrs["format"] = "jpeg"
    vlen = h5py.vlen_dtype(np.uint8)
    for name, pics in thumbs.items():
        ds = g.create_dataset(name, shape=(len(pics),), dtype=vlen)
        for i, data in enumerate(pics):
            ds[i] = np.frombuffer(data, dtype=np.uint8)


def read_thumbnails(f, name: str) -> list[bytes]:
    """The JPEGs stored as ``/thumbnails/<name>`` in the open h5py File ``f`` ([] when absent)."""
    if GROUP not in f or name not in f[GROUP]:
        return []
    return [np.asarray(row, dtype=np.uint8).tobytes() for row in f[GROUP][name][()]]
