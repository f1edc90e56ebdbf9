"""One config table drives the CLI: flags, defaults, help and choices from config.py; --config FILE; reelsim config;
a store's recorded models are the defaults of a command on it."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import reelsim

from reelsim.config import Config, config_flags, section_class
from reelsim.errors import UsageError
from reelsim.jobs.cli import build_parser
from reelsim.storage.provenance import recorded_models

#: Every flag each command had before the table (a contract: scripts use them); the table may only add.
CONTRACT = {
    "run": "--audio-model --audio-weights --batch-size --blocklist --blocklist-threshold --cut-min --cut-ratio "
           "--dashboard-address --dedup --device --gradual-min --index --item-timeout --knn-batch --lists-format "
           "--memory-budget --min-shot-frames --mmr --no-blocklist --no-progress --pca --precision --re-extract "
           "--scene-audio-db --scene-similarity --scene-window --scheduler --set --shot-detector --shot-threshold "
           "--store --thumbnail-size --video-model --video-weights --weights --whiten --workers -k",
    "lists": "--blocklist --blocklist-threshold --dedup --device --index --knn-batch --lists-format --memory-budget "
             "--mmr --no-blocklist --no-progress --scheduler --space --store --weights --workers -k",
    "models": "--check-amp --device",
    "train": "--interactions --json --set --store",
}
CONTRACT["add"] = CONTRACT["run"] + " --space"
CONTRACT["demo"] = CONTRACT["run"]


def subparsers():
    return build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("command", sorted(CONTRACT))
def test_every_flag_is_kept_and_config_flags_come_from_the_table(command):
    parser = subparsers()[command]
    actions = {o: a for a in parser._actions for o in a.option_strings}
    assert set(CONTRACT[command].split()) <= set(actions), set(CONTRACT[command].split()) - set(actions)
    seen = set()
    for section, name, fl in config_flags(command):
        if fl.option in seen:  # run's --device sets models.device and fusion.device: the first field's help
            continue
        seen.add(fl.option)
        action = actions[fl.option]
        cls = section_class(section)
        default = getattr(Config(), section).__getattribute__(name)
        assert action.default is None  # a flag overrides only when given
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else None
        if isinstance(default, (int, float, str)) and not isinstance(default, bool) and section != "fusion" \
                or name == "k":
            assert f"(default: {default})" in action.help, (fl.option, action.help)
        if shown:
            assert f"(default: {shown})" in action.help, (fl.option, action.help)
        assert field_words(cls, name) in " ".join(action.help.split()), fl.option
    choices = {o: list(a.choices) for o, a in actions.items() if a.choices}
    if command in ("run", "add", "demo"):
        assert choices["--precision"] == ["auto", "fp32", "bf16", "fp16"]
        assert "reelsim" in choices["--shot-detector"] and "effnet-lite0-inflated" in choices["--video-model"]


def field_words(cls, name: str) -> str:
    """The first words of a field's description in its section's docstring."""
    for line in cls.__doc__.splitlines():
        head, sep, rest = line.strip().partition(" : ")
        if sep and name in (n.strip() for n in head.split("/")):
            return " ".join(rest.replace("``", "").split()[:3])
    raise AssertionError(name)


@pytest.mark.parametrize("command", ["run", "lists", "models"])
def test_device_takes_cuda_n_as_the_config_does(command):
    args = ["--store", "s"] if command == "lists" else (["x.mp4", "--store", "s"] if command == "run" else [])
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert build_parser().parse_args([command, *args, "--device", device]).device == device
    proc = reelsim(command, *args, "--device", "gpu", subprocess_=False)
    assert proc.returncode == 2 and "invalid device 'gpu'" in proc.stderr


def test_config_file_then_flags_then_set(tmp_path):
    from reelsim.jobs.cli import config_from_args

    path = tmp_path / "reelsim.toml"
    path.write_text('[models]\ndevice = "cuda:1"\nbatch_size = 32\n\n[fusion]\nk = 20\nweights = { audio = 0 }\n'
                    'lists_formats = ["parquet", "hdf5"]\n\n[clips]\nhop_s = 1\n', encoding="utf-8")
    args = build_parser().parse_args(["run", "x.mp4", "--store", str(tmp_path / "s"), "--config", str(path),
                                      "--batch-size", "4", "--set", "fusion.k=7"])
    cfg = config_from_args(args)
    assert cfg.models.device == "cuda:1" and cfg.models.batch_size == 4 and cfg.fusion.k == 7
    assert cfg.fusion.weights == {"visual": 1.0, "audio": 0.0, "image": 1.0, "text": 1.0}
    assert cfg.fusion.lists_formats == ("parquet", "hdf5") and cfg.clips.hop_s == 1.0


@pytest.mark.parametrize("text, says", [
    ("[models]\nbatch_size = 0\n", "models.batch_size must be >= 1"),
    ("[models]\nbatch_size = 2.5\n", "batch_size must be an integer"),
    ("[modles]\nbatch_size = 2\n", "unknown section [modles]"),
    ("[models]\nbatchsize = 2\n", "[models] has no setting 'batchsize'"),
    ("[models\n", "not valid TOML"),
    ("[decode]\nskip_loop_filter = 1\n", "skip_loop_filter must be true or false"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    proc = reelsim("run", "x.mp4", "--store", tmp_path / "s", "--config", path, subprocess_=False)
    assert proc.returncode == 2 and says in proc.stderr and str(path) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_reelsim_config_prints_a_file_that_reads_back(tmp_path):
    defaults = reelsim("config", "--defaults", subprocess_=False)
    assert defaults.returncode == 0 and "[models]" in defaults.stdout
    path = tmp_path / "defaults.toml"
    path.write_text(defaults.stdout, encoding="utf-8")
    assert Config().with_file(path) == Config()
    changed = Config().with_settings(["fusion.k=20", "learn.tower_input_dim=none", "clips.clip_len=4",
                                      "fusion.blocklist=spam,lottery tickets", "models.device=cuda:1"])
    path.write_text(changed.to_toml(), encoding="utf-8")
    assert Config().with_file(path) == changed
    assert changed.fusion.blocklist == ("spam", "lottery tickets")
    effective = json.loads(reelsim("config", "--config", path, "--set", "fusion.k=3", "--json",
                                   subprocess_=False).stdout)
    assert effective["fusion"]["k"] == 3 and effective["models"]["device"] == "cuda:1"
    assert effective == json.loads(json.dumps(dataclasses.asdict(changed.with_settings(["fusion.k=3"]))))


def test_store_models_are_the_defaults_on_that_store(run_store):
    from reelsim.jobs.cli import base_config

    store, _ = run_store
    stamps = recorded_models(store)
    assert set(stamps) == {"visual", "audio", "image", "text"}
    assert {m: s.model for m, s in stamps.items()} == {m: getattr(Config().models, m) for m in stamps}
    args = build_parser().parse_args(["lists", "--store", str(store)])
    assert base_config(args).models == Config().models
    assert recorded_models(store.parent / "no-such-store") == {}


def test_with_settings_and_files_refuse_what_does_not_fit():
    with pytest.raises(UsageError, match="must be an integer"):
        Config().with_mapping({"fusion": {"k": 2.5}})
    with pytest.raises(UsageError, match="weights must be a table"):
        Config().with_mapping({"fusion": {"weights": [1, 2]}})
