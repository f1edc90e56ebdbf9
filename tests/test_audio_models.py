"""Pretrained audio embeddings (PANNs CNN14 16 kHz) loaded by path, and one model per store.

The CNN14 weights here are randomly initialised and saved in the published
checkpoint's layout ({'model': state dict with the front-end keys}): they
test loading, shapes, provenance and pooling, not audio understanding.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from conftest import reelsim, run_items

from reelsim.config import Config
from reelsim.errors import ReelsimError
from reelsim.extractors import panns
from reelsim.pipeline.synth import Segment, make_video

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cnn14_file(tmp_path_factory):
    torch.manual_seed(0)
    state = panns.build_cnn14().state_dict()
    # the published file also holds its STFT/mel front end, which reelsim replaces by librosa
    state["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(257, 1, 512)
    state["spectrogram_extractor.stft.conv_imag.weight"] = torch.zeros(257, 1, 512)
    state["logmel_extractor.melW"] = torch.zeros(257, 64)
    path = tmp_path_factory.mktemp("weights") / "Cnn14_16k-random.pth"
    torch.save({"model": state, "iteration": 0}, path)
    return path


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio-media")
    return make_video(d / "tones.mp4", [Segment("testsrc2", 25, "sine=frequency=300"),
                                        Segment("mandelbrot", 30, "sine=frequency=1200")], size=(160, 120))


@pytest.fixture(scope="module")
def cnn14_store(tmp_path_factory, clip_video, cnn14_file, dask_client):
    store = tmp_path_factory.mktemp("cnn14-store")
    cfg = Config().with_overrides(models={"audio": "cnn14-16k", "audio_weights": str(cnn14_file)})
    assert run_items([clip_video], store, dask_client, cfg).exit_code == 0
    return store


def only_shard(store):
    shards = sorted((store / "shards").glob("*/*.h5"))
    assert len(shards) == 1
    return shards[0]


def test_cnn14_run_stores_2048_d_audio_with_weights_sha(cnn14_store, cnn14_file):
    import h5py

    with h5py.File(only_shard(cnn14_store), "r") as f:
        audio = f["features/audio"]
        assert audio["item"].shape == (2048,) and audio["shot"].shape == (2, 2048)
        assert np.isfinite(audio["shot"][()]).all()
        assert audio.attrs["model"] == "cnn14-16k"
        assert audio.attrs["weights_sha256"] == hashlib.sha256(cnn14_file.read_bytes()).hexdigest()
        assert (audio.attrs["sample_rate"], audio.attrs["n_mels"], audio.attrs["hop"]) == (16000, 64, 160)
        # two different tones: two different shot embeddings
        assert not np.allclose(audio["shot"][0], audio["shot"][1])


def test_missing_audio_weights_exit_2_with_how_to_get_them(clip_video, tmp_path):
    missing = tmp_path / "nowhere" / "Cnn14_16k_mAP=0.438.pth"
    proc = reelsim("run", clip_video, "--store", tmp_path / "s", "--no-progress",
                   "--audio-model", "cnn14-16k", "--audio-weights", missing, subprocess_=False)
    assert proc.returncode == 2, proc.stderr
    assert str(missing) in proc.stderr and panns.CNN14_16K_WEIGHTS.url in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cnn14_cache_miss_names_the_cache_and_the_flag(tmp_path, monkeypatch):
    from reelsim.errors import WeightsNotFoundError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(WeightsNotFoundError) as err:
        panns.Cnn14Audio()
    msg = str(err.value)
    assert "--audio-weights PATH" in msg and panns.CNN14_16K_WEIGHTS.url in msg
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / "Cnn14_16k_mAP=0.438.pth") in msg


def test_checkpoint_keys_are_checked_strictly():
    state = panns.build_cnn14().state_dict()
    state.pop("conv_block3.bn1.running_var")
    with pytest.raises(RuntimeError, match="running_var"):
        panns.build_cnn14().load_state_dict(panns.cnn14_state({"model": state}), strict=True)
    with pytest.raises(ReelsimError, match="state dict"):
        panns.cnn14_state({"model": [1, 2]})


def test_log_mel_matches_panns_front_end_settings():
    sr = 16000
    t = np.arange(sr) / sr
    mel = panns.cnn14_log_mel(y=(0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert mel.shape == (1 + sr // 160, 64)  # centred frames, hop 10 ms
    band = mel[50].argmax()  # a 1 kHz tone peaks in the band whose centre is nearest 1 kHz
    import librosa

    centres = librosa.mel_frequencies(64 + 2, fmin=50, fmax=8000)[1:-1]
    assert abs(centres[band] - 1000) < 100


def test_windows_stream_equals_one_shot():
    sr = 100
    spans = np.array([[0.0, 2.5], [2.5, 2.55], [2.55, 6.0]])
    y = np.arange(600, dtype=np.float32)
    rows = panns.span_windows(spans, sr=sr, window_s=1.0)
    want = [(int(s), y[a:min(b, 550)]) for s, a, b in rows if a < 550]  # none starts after the audio ends
    stream = panns.SpanWindows(spans, sr=sr, window_s=1.0)
    got = []
    for chunk in np.array_split(y[:550], 7):  # audio ends inside the last window
        got += list(stream.push(chunk))
    got += list(stream.finish())
    assert [s for s, _ in got] == [s for s, _ in want]
    for (_, g), (_, w) in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert len(got) == len(rows) - 1 and len(got[-1][1]) == 95


def test_model_change_is_refused_and_re_extract_clears_this_runs_stale_shards(cnn14_store, clip_video, tmp_path):
    from reelsim.config import ModelConfig
    from reelsim.extractors.registry import model_stamps
    from reelsim.storage.provenance import guard_model_change
    from reelsim.storage.shards import read_item_vectors

    store = tmp_path / "store"
    shutil.copytree(cnn14_store, store)
    shard = only_shard(store)
    before = shard.read_bytes()

    proc = reelsim("run", clip_video, "--store", store, "--workers", 1, "--no-progress", "--audio-model",
                   "logmel-stats", subprocess_=False)  # another audio model: refused before any cluster starts
    assert proc.returncode == 2, proc.stderr
    assert "cnn14-16k" in proc.stderr and "logmel-stats" in proc.stderr and "--re-extract" in proc.stderr
    assert shard.read_bytes() == before  # nothing touched

    # without --audio-model, the store's model is the default: its weights are asked for, nothing is mixed
    proc = reelsim("run", clip_video, "--store", store, "--workers", 1, "--no-progress", subprocess_=False)
    assert proc.returncode == 2, proc.stderr
    assert "cnn14-16k is the audio model of the features in" in proc.stderr and "--audio-weights" in proc.stderr
    assert shard.read_bytes() == before
    effective = reelsim("config", "--store", store, "--json", subprocess_=False)
    assert json.loads(effective.stdout)["models"]["audio"] == "cnn14-16k"

    item_id = read_item_vectors(shard)[0]
    assert guard_model_change(store, model_stamps(ModelConfig()), ["another-item"], re_extract=True) == []
    assert shard.is_file()  # shards of items outside this run stay
    assert guard_model_change(store, model_stamps(ModelConfig()), [item_id], re_extract=True) == [item_id]
    assert not shard.exists()  # so the run recomputes it with this run's models


def test_other_weights_for_the_same_model_are_a_conflict(cnn14_store, cnn14_file):
    from reelsim.config import ModelConfig
    from reelsim.extractors.registry import model_stamps
    from reelsim.storage.provenance import ModelStamp, model_conflicts

    models = ModelConfig(audio="cnn14-16k", audio_weights=str(cnn14_file))
    expected = model_stamps(models)
    assert expected["audio"] == ModelStamp("cnn14-16k", hashlib.sha256(cnn14_file.read_bytes()).hexdigest())
    assert model_conflicts(cnn14_store, expected) == {}
    other = {**expected, "audio": ModelStamp("cnn14-16k", "0" * 64)}
    (modality, stamp), = model_conflicts(cnn14_store, other)
    assert modality == "audio" and stamp == expected["audio"]
