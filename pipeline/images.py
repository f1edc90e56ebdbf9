"""Product images in: opened within a pixel budget, turned upright, every mode made 8-bit RGB.

Where image input enters reelsim, three rules hold:

- **a pixel budget**: the header is read first and an image of more than
  ``limits.max_image_pixels`` is refused before it is decoded (a 20 KB PNG
  can hold 13000 x 13000 pixels, gigabytes once decoded);
- **upright**: the EXIF orientation is applied, as every viewer does;
- **8-bit RGB, correctly**: 16-bit and 32-bit greyscale are scaled (Pillow's
  own ``convert("RGB")`` clips them, so a 16-bit PNG turns near-white),
  transparency (``RGBA``, ``LA``, palettes with a transparent colour) is laid
  over white, as a product shot on a page, and CMYK goes through its ICC
  profile when it has one.

Examples
--------
>>> rgb = load_image("shoe.png", max_pixels=50_000_000)     # doctest: +SKIP
>>> rgb.dtype, rgb.shape                                    # doctest: +SKIP
(dtype('uint8'), (800, 600, 3))
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

from reelsim.errors import MediaError

#: Pillow modes holding one channel of more than 8 bits: 16-bit unsigned, 32-bit int (16-bit range), float.
WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
#: Modes (besides palettes and images with a transparent colour) that carry alpha.
ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def _megapixels(n: float) -> str:
    return f"{n / 1e6:.4g}"


def check_pixels(size: tuple[int, int], max_pixels: int, path: str) -> None:
    """Raise :class:`MediaError` when ``size`` (width, height) holds more than ``max_pixels`` pixels."""
    w, h = size
    if w * h > max_pixels:
        raise MediaError(f"image is {w}x{h} = {_megapixels(w * h)} megapixels, over the budget of "
                         f"{_megapixels(max_pixels)} (limits.max_image_pixels): {path}")


def header_size(path: str, refused: list[str] | None = None) -> tuple[int, int] | None:
    """(width, height) from the file's header through Pillow's format plugins, without its own size check.

    Used when Pillow itself refuses to open an image as a decompression bomb,
    so that the reason can still give the size. None when no plugin reads it;
    each plugin that tried and failed is added to ``refused`` (``"PNG: SyntaxError: ..."``).
    """
    from PIL import Image

    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept and not accept(prefix):
                continue
            try:
                fp.seek(0)
                return tuple(factory(fp, path).size)
            except Exception as e:  # noqa: BLE001  (not this format: try the next, as Image.open does)
                if refused is not None:
                    refused.append(f"{fmt}: {e.__class__.__name__}: {e}".splitlines()[0][:120])
    return None


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): uint8 (H, W, 4) ``rgba`` laid over a white background."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.rint(out).astype(np.uint8)


def _wide_grey(im) -> np.ndarray:
    """uint8 (H, W) of a greyscale image of more than 8 bits.

    Integer modes hold 0..65535 (16-bit sources) and are divided by 257, so
    65535 becomes 255; float images holding 0..1 are scaled by 255, others
    are read as 0..255.
    """
    a = np.asarray(im)
    if im.mode == "F":
        a = np.nan_to_num(a.astype(np.float64))
        g = a * 255.0 if a.size and a.max() <= 1.0 else a
    else:
        g = np.clip(a.astype(np.float64), 0, 65535) / 257.0
    return np.rint(np.clip(g, 0, 255)).astype(np.uint8)


def _cmyk(im) -> np.ndarray:
    """uint8 (H, W, 3) of a CMYK image: through its ICC profile to sRGB when it has one."""
    icc = im.info.get("icc_profile")
    if icc:
        from PIL import ImageCms

        try:
            return np.asarray(ImageCms.profileToProfile(im, io.BytesIO(icc), ImageCms.createProfile("sRGB"),
                                                        outputMode="RGB"))
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the plain conversion below
    return np.asarray(im.convert("RGB"))


def to_rgb8(im) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a Pillow image of any mode (rules in the module docstring).

    Raises
    ------
    MediaError
        A mode that cannot be turned into RGB.
    """
    if im.mode in WIDE_GREY:
        return np.repeat(_wide_grey(im)[:, :, None], 3, axis=2)
    if im.mode in ALPHA or "transparency" in im.info:
        return _over_white(np.asarray(im.convert("RGBA")))
    if im.mode == "CMYK":
        return _cmyk(im)
    try:
        return np.asarray(im.convert("RGB"))
    except ValueError as e:
        raise MediaError(f"image mode {im.mode} cannot be converted to RGB ({e})") from None


def load_image(path: str, *, max_pixels: int) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file, upright, within the pixel budget.

    Parameters
    ----------
    path : the image file (the first frame of an animation or a multi-page file).
    max_pixels : the pixel budget (``limits.max_image_pixels``).

    Raises
    ------
    MediaError
        Missing or unreadable file, or more pixels than ``max_pixels``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.isfile(path):
        raise MediaError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own budget decides
            with Image.open(path) as im:
                check_pixels(im.size, max_pixels, path)
                return to_rgb8(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError:
        refused: list[str] = []
        size = header_size(path, refused)
        if size is None:
            why = f"; its header read by no format plugin ({'; '.join(refused[:3])})" if refused else ""
            raise MediaError(f"image is over Pillow's decompression-bomb limit and the budget of "
                             f"{_megapixels(max_pixels)} megapixels (limits.max_image_pixels){why}: {path}") from None
        check_pixels(size, max_pixels, path)
        raise MediaError(f"image is {size[0]}x{size[1]}, over Pillow's decompression-bomb limit: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"unreadable image ({e.__class__.__name__}): {path}") from None
