"""The public Python API (what the CLI is a thin layer over), and configuration checked before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import VIDEOS
from conftest import reelsim as cli

import reelsim


def test_store_answers_like_the_cli(run_store):
    store_dir, _ = run_store
    store = reelsim.open_store(store_dir)
    nbs = store.similar("fractal", k=3)
    as_cli = json.loads(cli("similar", "fractal", "--store", store_dir, "-k", 3, "--json", check=0).stdout)
    assert [(n.item, n.score) for n in nbs] == [(n["item"], n["score"]) for n in as_cli["neighbors"]]
    assert store.shots("fractal") == json.loads(cli("shots", "fractal", "--store", store_dir, "--json",
                                                    check=0).stdout)
    table = store.lists()
    assert table.num_rows == 5 * len(store.ids()) and set(table.column("item").to_pylist()) == set(store.ids())
    assert store.run_report()["summary"]["failed"] == 4


def test_features_at_item_and_shot_level(run_store):
    store = reelsim.open_store(run_store[0])
    item = store.features("fractal")
    assert {m: v.shape for m, v in item.items()} == {"visual": (1280,), "audio": (128,), "image": (1280,)}
    shots = store.features("fractal", level="shot")
    n_shots = len(VIDEOS["fractal"])
    assert shots["visual"].shape == (n_shots, 1280) and shots["image"].shape == (n_shots, 1280)
    assert np.isfinite(shots["visual"]).all()
    assert set(store.features("banana")) == {"image", "text"}
    with pytest.raises(reelsim.UnknownItemError):
        store.features("no-such-item")


def test_reweighted_query_changes_the_ranking_basis(run_store):
    store = reelsim.open_store(run_store[0])
    text_only = store.similar("banana", k=3, weights="visual=0,audio=0,image=0,text=1")
    assert all(set(n.modalities) == {"text"} for n in text_only)
    assert all(n.score == pytest.approx(n.modalities["text"], abs=1e-6) for n in text_only)


def test_open_store_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(reelsim.StoreError, match="not a folder"):
        reelsim.open_store(tmp_path / "missing")
    with pytest.raises(reelsim.StoreError, match="not a reelsim store"):
        reelsim.open_store(tmp_path)


@pytest.mark.parametrize("setting,says", [("fusion.dedup=5", "fusion.dedup must be in [-1, 1]"),
                                          ("clips.hop_s=0", "clips.hop_s must be >= 0.001"),
                                          ("models.batch_size=0", "models.batch_size must be >= 1"),
                                          ("fusion.weights=visual=0,audio=0,image=0,text=0", "positive weight")])
def test_bad_settings_fail_before_any_work(media, tmp_path, setting, says):
    """A bad value is refused when the configuration is built: exit 2, nothing extracted, no store written."""
    store = tmp_path / "store"
    proc = cli("run", media / "carpet.mp4", "--store", store, "--set", setting, subprocess_=False)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert not store.exists()
    with pytest.raises(reelsim.UsageError, match=says.split(" must")[0]):
        reelsim.Config().with_settings([setting])


def test_cli_choices_are_the_registries():
    """--shot-detector, --video-model and --audio-model accept exactly what the registries hold."""
    from reelsim.extractors import detectors, registry
    from reelsim.jobs.cli import build_parser

    actions = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions}
    assert list(actions["shot_detector"].choices) == detectors.names() and "reelsim" in detectors.names()
    assert list(actions["video_model"].choices) == registry.names("visual")
    assert list(actions["audio_model"].choices) == registry.names("audio")
    proc = cli("run", "x.mp4", "--store", "s", "--shot-detector", "no-such-detector", subprocess_=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
