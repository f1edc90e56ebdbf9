"""Feature extractors: registry, weights as data, inflation, shapes, determinism.

Offline and on CPU.  Media are made here: seeded random frames and simple
drawn pictures.  Models are loaded once through ``registry.load`` and shared.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from reelsim.errors import ReelsimError, UsageError, WeightsNotFoundError
from reelsim.extractors import image, registry, video
from reelsim.extractors.device import resolve_device
from reelsim.storage.hashing import sha256_file

torch = pytest.importorskip("torch")

OURS = [(m, n) for m in ("visual", "audio", "image", "text") for n in sorted(registry.REGISTRIES[m])]


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def inflated():
    return registry.load("visual", "effnet-lite0-inflated", device="cpu")


@pytest.fixture(scope="module")
def image_model():
    return registry.load("image", "effnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def text_model():
    return registry.load("text", "minilm-l6-v2", device="cpu")


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------ registry


@pytest.mark.parametrize("modality,name", OURS, ids=[f"{m}/{n}" for m, n in OURS])
def test_each_registered_model_loads_or_says_how_to_get_its_weights(modality, name):
    """A usable model loads and records its name, dim and weights hash; an unusable one names the flag and URL."""
    cls = registry.get_class(modality, name)
    ok, why = cls.usable()
    if not ok:
        spec = cls.weights_spec()
        assert spec.url in why and spec.flag in why
        with pytest.raises(WeightsNotFoundError, match=spec.flag):
            registry.load(modality, name, device="cpu")
        return
    model = registry.load(modality, name, device="cpu")
    prov = model.provenance()
    assert (prov["model"], prov["dim"], model.modality) == (name, cls.dim, modality)
    assert prov["weights_sha256"] == (sha256_file(model.weights_file) if model.weights_file else "")


def test_models_command_lists_every_registered_model():
    import contextlib
    import io

    from reelsim.jobs.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["models"]) == 0
    listed = {tuple(line.split()[:2]) for line in out.getvalue().splitlines()[1:]}
    for modality, table in registry.REGISTRIES.items():
        for name in table:
            assert (modality, name) in listed
            assert registry.get_class(modality, name) is table[name]


def test_registry_load_is_cached(inflated):
    assert registry.load("visual", "effnet-lite0-inflated", device="cpu") is inflated


def test_unknown_model_is_usage_error():
    with pytest.raises(UsageError, match="effnet-lite0-inflated"):
        registry.get_class("visual", "no-such-model")


# ------------------------------------------------------------------ device


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_usage_error():
    with pytest.raises(UsageError, match="no CUDA"):
        resolve_device("cuda")


# ------------------------------------------------------------------ inflation


def test_sample_frames_loops_short_and_spreads_long():
    assert video.sample_frames(1, 4).tolist() == [0, 0, 0, 0]
    assert video.sample_frames(3, 8).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert video.sample_frames(8, 8).tolist() == list(range(8))
    assert video.sample_frames(29, 8)[[0, -1]].tolist() == [0, 28]


def test_inflate_small_net_static_clip_equals_2d():
    nn = torch.nn
    torch.manual_seed(0)
    net2d = nn.Sequential(
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.AvgPool2d(2),
    ).eval()
    net2d[2].running_mean.normal_()
    net2d[2].running_var.uniform_(0.5, 2.0)
    net3d = video.inflate(net2d, time_kernel=video.depthwise_time_kernel).eval()
    assert type(net2d[1]) is nn.Conv2d  # the input network is left alone
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        y2 = net2d(x)
        y3 = net3d(x[:, :, None].expand(-1, -1, 5, -1, -1))
    assert y3.shape == (2, 8, 5, *y2.shape[-2:])
    torch.testing.assert_close(y3, y2[:, :, None].expand_as(y3), rtol=1e-5, atol=1e-5)


def test_inflate_refuses_conv_subclass():
    class PadsInForward(torch.nn.Conv2d):
        pass

    with pytest.raises(ValueError, match="PadsInForward"):
        video.inflate(torch.nn.Sequential(PadsInForward(3, 4, 3)), time_kernel=1)


def test_inflated_static_clip_equals_2d_network(inflated, rng):
    frame = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    clip = np.repeat(frame[None, None], inflated.clip_len, axis=1)
    f3d = inflated.extract(clip)[0]

    net2d = image.build_effnet_lite0(weights_file=inflated.weights_file, image_size=inflated.input_size)
    x = video.clip_to_input(
        torch.from_numpy(frame[None, None]), short_side=inflated.input_size, crop=inflated.input_size,
        mean=inflated.mean, std=inflated.std,
    )[:, :, 0]
    with torch.inference_mode():
        f2d = net2d(x).mean(dim=(2, 3))[0].numpy()
    assert cosine(f3d, f2d) >= 0.9999


def test_inflated_provenance(inflated):
    prov = inflated.provenance()
    assert prov["weights"] == "imagenet-inflated"
    assert prov["weights_sha256"] == sha256_file(image.shipped_effnet_lite0_file())
    assert (prov["dim"], prov["clip_len"], prov["input_size"]) == (1280, 8, 160)
    assert {"model", "mean", "std"} <= set(prov)


# ------------------------------------------------------------------ clips


@pytest.mark.parametrize("num_frames", [1, 3], ids=["1-frame", "3-frame"])
def test_short_clips_give_finite_features(inflated, rng, num_frames):
    clips = rng.integers(0, 256, (1, num_frames, 90, 160, 3), dtype=np.uint8)
    feats = inflated.extract(clips)
    assert feats.shape == (1, 1280) and feats.dtype == np.float32
    assert np.isfinite(feats).all()


def test_cpu_features_are_repeatable(inflated, rng):
    clips = rng.integers(0, 256, (3, 10, 64, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(inflated.extract(clips), inflated.extract(clips))


def test_bad_clips_are_rejected(inflated):
    with pytest.raises(ReelsimError, match="uint8"):
        inflated.extract(np.zeros((1, 8, 32, 32, 3), np.float32))
    with pytest.raises(ReelsimError, match="shape"):
        inflated.extract(np.zeros((1, 0, 32, 32, 3), np.uint8))


# ------------------------------------------------------------------ mixed precision


def test_amp_check_on_cpu_reports_the_measured_cosine(inflated, rng):
    from reelsim.extractors.device import check_amp

    clips = rng.integers(0, 256, (1, 8, 96, 128, 3), dtype=np.uint8)
    check = check_amp(inflated, clips, precision="bf16")
    assert inflated.precision == "auto" and inflated.provenance()["precision"] == "fp32"  # restored
    np.testing.assert_array_equal(check.fp32, inflated.extract(clips))  # the reference is plain fp32
    assert check.precision == "bf16" and check.device == "cpu"
    assert check.min_cosine == pytest.approx(cosine(check.fp32[0], check.amp[0]), abs=1e-6)  # measured
    assert check.passed == (check.min_cosine >= 0.999)  # never a forced pass
    assert 0.99 < check.min_cosine <= 1.0 + 1e-6
    assert not np.array_equal(check.fp32, check.amp)  # bf16 autocast really ran
    assert f"{check.min_cosine:.5f}" in check.describe()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda_matches_fp32(rng):
    from reelsim.extractors.device import check_amp

    model = video.EfficientNetLite0Inflated(device="cuda", batch_size=4)
    check = check_amp(model, rng.integers(0, 256, (4, 8, 120, 160, 3), dtype=np.uint8))
    assert check.passed, check.describe()
    assert model.provenance()["precision"] in ("bf16", "fp16")


def test_unknown_precision_is_usage_error():
    with pytest.raises(UsageError, match="precision"):
        video.EfficientNetLite0Inflated(precision="fp8")


# ------------------------------------------------------------------ weights


def test_weights_path_loads_and_sha_in_provenance(tmp_path, rng):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "r3d_18-random.pth"
    torch.save(torchvision.models.video.r3d_18(weights=None).state_dict(), path)
    model = video.R3D18(weights_path=str(path), batch_size=1)
    prov = model.provenance()
    assert prov["weights"] == path.name
    assert prov["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    transform = torchvision.models.video.R3D_18_Weights.KINETICS400_V1.transforms()
    assert prov["input_size"] == transform.crop_size[0]
    assert prov["mean"] == pytest.approx(transform.mean)
    feats = model.extract(rng.integers(0, 256, (1, 3, 72, 96, 3), dtype=np.uint8))
    assert feats.shape == (1, 512) and np.isfinite(feats).all()


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache
    spec = video.R3D18.weights_spec()
    with pytest.raises(WeightsNotFoundError) as err:
        video.R3D18()
    message = str(err.value)
    assert spec.url in message and "--video-weights PATH" in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / spec.filename) in message

    missing = tmp_path / "nowhere" / "r3d_18.pth"
    with pytest.raises(WeightsNotFoundError, match=str(missing)):
        video.R3D18(weights_path=str(missing))

    ok, why = video.R3D18.usable()
    assert not ok and spec.filename in why and "--video-weights" in why


# ------------------------------------------------------------------ image and text


def _picture(h: int = 240, w: int = 320) -> np.ndarray:
    # A red disc on a sky-blue gradient.
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = 60 + 100 * yy // h
    img[..., 1] = 120 + 80 * yy // h
    img[..., 2] = 230
    disc = (yy - h * 0.55) ** 2 + (xx - w * 0.4) ** 2 < (h * 0.25) ** 2
    img[disc] = (210, 30, 30)
    return img


def test_image_model_flipped_rescaled_is_closer_than_unrelated(image_model):
    original = _picture()
    variant = original[::2, ::-2]  # half size, mirrored
    yy, xx = np.mgrid[0:300, 0:300]
    unrelated = np.where(((yy // 30 + xx // 30) % 2 == 0)[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
    f = image_model.extract([original, variant, unrelated])
    assert f.shape == (3, 1280) and f.dtype == np.float32
    assert cosine(f[0], f[1]) > cosine(f[0], f[2])


def test_text_model_ranks_bananas_together(text_model):
    f = text_model.extract(
        ["ripe yellow bananas", "fresh organic bananas", "wireless noise cancelling headphones", ""]
    )
    assert f.shape == (4, 384) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert f[0] @ f[1] > f[0] @ f[2]
    assert len(text_model.provenance()["weights_sha256"]) == 64
