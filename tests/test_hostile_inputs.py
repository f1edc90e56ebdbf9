"""Hostile inputs: damaged media, broken manifests and files that are not files, in one real run.

Each case was found by trying to break reelsim (see the issue "Hostile input
and broken stores"). One run over all of them on the session's Dask cluster
must complete with exit code 3, every other item processed; then one
parametrised test checks, case by case, the reason or warning that
report.json and the console give. The rules behind them are unit-tested
below: manifest decoding, image conversion, timestamp checks.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from catalogue import AT_LINE, Case, check_case, run_catalogue
from conftest import reelsim
from PIL import Image

from reelsim.config import Config, LimitConfig
from reelsim.errors import MediaError, UsageError
from reelsim.jobs.runner import local_cluster_options
from reelsim.pipeline import synth
from reelsim.pipeline.images import load_image, to_rgb8
from reelsim.pipeline.timeline import checked_times
from reelsim.storage.layout import StoreLayout
from reelsim.storage.manifest import read_inputs
from reelsim.storage.shards import read_shots

SIZE = (160, 120)
CONTROL_ID = "\x1b]0;pwned\x07\x1b[31mred\u202e"


def video(d, name, **kw) -> str:
    synth.make_pattern_video(d / name, size=SIZE, frames=kw.pop("frames", 50), **kw)
    return name


def write(d, name, data: bytes) -> str:
    (d / name).write_bytes(data)
    return name


# ----------------------------------------------------------------- media builders
def corrupt_middle(d):
    """2,000 random bytes in the middle of an mp4 (ffmpeg still decodes 149 of its 150 frames)."""
    synth.make_pattern_video(d / "mid.mp4", size=SIZE, frames=150, audio=True)
    synth.overwrite_bytes(d / "mid.mp4", (d / "mid.mp4").stat().st_size // 2, 2000)
    return [{"id": "corrupt-middle", "video": "mid.mp4"}]


def corrupt_start(d):
    """Garbage over the first keyframe of an mp4 with a keyframe every second."""
    synth.make_pattern_video(d / "start.mp4", size=SIZE, frames=150, audio=True, gop=25)
    synth.overwrite_bytes(d / "start.mp4", 100, 2000)
    return [{"id": "corrupt-start", "video": "start.mp4"}]


def ac3_bad_frame(d):
    """An AVI whose AC-3 track has one damaged frame (as OpenCV's sample Megamind.avi)."""
    synth.make_pattern_video(d / "ac3.avi", size=SIZE, frames=100, audio=True, audio_codec="ac3")
    synth.damage_packets(d / "ac3.avi", "audio", [2])
    return [{"id": "ac3-bad-frame", "video": "ac3.avi"}]


def many_bad_packets(d):
    """More corrupt packets than ``limits.max_decode_errors`` (100): the item fails."""
    synth.make_pattern_video(d / "wreck.mp4", size=SIZE, frames=150, gop=1)
    synth.damage_packets(d / "wreck.mp4", "video", list(range(10, 130)))
    return [{"id": "many-bad-packets", "video": "wreck.mp4"}]


def cover_art(d):
    synth.make_image(d / "cover.png", "testsrc2", size=(64, 64))
    synth.make_cover_art_only(d / "cover.mp4", d / "cover.png")
    return [{"id": "cover-art-only", "video": "cover.mp4"}]


def grey16(d):
    """The same picture as a 16-bit and as an 8-bit greyscale PNG."""
    synth.make_image(d / "rgb.png", "testsrc2")
    grey = np.asarray(Image.open(d / "rgb.png").convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(d / "grey16.png")
    Image.fromarray(grey).save(d / "grey8.png")
    assert Image.open(d / "grey16.png").mode == "I;16"
    return [{"id": "grey8", "image": "grey8.png"}, {"id": "grey16", "image": "grey16.png"}]


def fifo(d):
    os.mkfifo(d / "pipe.mp4")
    return [{"id": "fifo", "video": "pipe.mp4"}]


def linked_folder(d):
    """A folder input whose media names are symlinks to a device, a folder and nothing, and a folder."""
    links = d / "links"
    links.mkdir()
    video(links, "linked-ok.mp4", frames=20)
    (links / "to-device.mp4").symlink_to("/dev/zero")
    (links / "to-folder.mp4").symlink_to(d)
    (links / "to-nothing.mp4").symlink_to(d / "nothing-here.mp4")
    (links / "folder.mp4").mkdir()
    (links / "notes.txt").write_text("not media: ignored")
    os.link(links / "linked-ok.mp4", os.fsencode(links) + b"/caf\xe9.mp4")  # a file name that is not UTF-8
    return []


def in_links(name):
    return lambda d: str(d / "links" / name)


def _csv(name: str, data: bytes):
    def inputs(d):
        (d / name).write_bytes(data)
        return [d / name]
    return inputs


# ----------------------------------------------------------------- checks
def _decoded(min_frames: int, errors: int | None = None):
    def check(store, row, media):
        rec = read_shots(store, row["item"])
        assert rec["n_frames"] >= min_frames, rec["n_frames"]
        assert row["decode_errors"] >= 1 if errors is None else row["decode_errors"] == errors, row
    return check


def _audio_whole(store, row, media):
    _decoded(100, errors=1)(store, row, media)
    with h5py.File(StoreLayout(store).shard(row["item"]), "r") as f:
        assert "audio" in f["features"]
    assert not any("truncated" in w for w in row["warnings"]), row["warnings"]


def _times(start: float, end: float):
    def check(store, row, media):
        rec = read_shots(store, row["item"])
        assert rec["shots"][0]["start_s"] == pytest.approx(start, abs=1e-6)
        assert rec["shots"][-1]["end_s"] == pytest.approx(end, abs=0.1)
        with h5py.File(StoreLayout(store).shard(row["item"]), "r") as f:
            assert f["video"].attrs["duration_s"] == pytest.approx(end, abs=0.1)
        assert not any("truncated" in w for w in row["warnings"]), row["warnings"]
    return check


def _fast(store, row, media):
    assert row["seconds"] < 5, row  # refused, not read until the item timeout


def _same_picture(store, row, media):
    with h5py.File(StoreLayout(store).shard("grey16"), "r") as a, \
            h5py.File(StoreLayout(store).shard("grey8"), "r") as b:
        x, y = a["features/image/item"][()], b["features/image/item"][()]
    assert float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) > 0.995


CASES = [
    # manifests: no row can abort the batch
    Case("surrogate-id", lambda d: ['{"id": "bad\\ud800id", "title": "a lone surrogate"}'], "failed",
         "field 'id' is not valid Unicode (lone surrogate U+D800 at character 4)", item=AT_LINE),
    Case("surrogate-title", lambda d: ['{"id": "st", "title": "bad \\udc80 title"}'], "failed",
         "field 'title' is not valid Unicode", item=AT_LINE),
    Case("latin1-jsonl-row", lambda d: ['{"id": "caf\xe9", "title": "Latin-1"}'.encode("latin-1")], "failed",
         "not UTF-8 (byte 0xe9 at column 12)", item=AT_LINE),
    Case("nul-id", lambda d: [{"id": "a\x00b", "title": "t"}], "failed", "field 'id' contains NUL", item=AT_LINE),
    Case("nul-path", lambda d: [{"id": "nul-path", "video": "a\x00b.mp4"}], "failed", "field 'video' contains NUL",
         item=AT_LINE),
    Case("control-id", lambda d: [{"id": CONTROL_ID, "video": "gone.mp4"}], "failed", "video file not found"),
    Case("bom-csv", lambda d: [], "ok", item="bom-row",
         inputs=_csv("bom.csv", "\ufeffid,title\nbom-row,Spreadsheet export\n".encode("utf-8"))),
    Case("latin1-csv-ok-row", lambda d: [], "ok", item="csv-ok",
         inputs=_csv("latin1.csv", "id,title\ncsv-ok,fine\ncsv-bad,caf\xe9\n".encode("latin-1"))),
    Case("latin1-csv-bad-row", lambda d: [], "failed", "latin1.csv:3: not UTF-8", item="latin1.csv:3"),
    Case("semicolon-csv", lambda d: [], "failed", "separated by semicolons", item="semi.csv:1",
         inputs=_csv("semi.csv", b"id;title\nsemi;x\n")),
    Case("csv-line-numbers", lambda d: [], "failed", "lines.csv:5: more columns than the header",
         item="lines.csv:5", inputs=_csv("lines.csv", b'id,title,description\nml,hello,"multi\nline\ntext"\n'
                                         b"extra,a,b,c\n")),
    # damaged media: skip what is corrupt, count it, fail past a limit
    Case("corrupt-middle", corrupt_middle, "ok", "corrupt packet", check=_decoded(145)),
    Case("corrupt-start", corrupt_start, "ok", "corrupt packet", check=_decoded(100)),
    Case("ac3-bad-frame", ac3_bad_frame, "ok", "audio: 1 corrupt packet", check=_audio_whole),
    Case("many-bad-packets", many_bad_packets, "failed", "corrupt packets (limits.max_decode_errors = 100)"),
    Case("cover-art-only", cover_art, "failed", "the only picture is cover art"),
    Case("pts-jump", lambda d: [{"id": "pts-jump", "video": synth.make_ts_with_jump(d / "jump.ts", jump_s=3600).name}],
         "ok", "timestamps jump by +3598.0 s", check=_times(0.0, 4.0)),
    Case("pts-wrap", lambda d: [{"id": "pts-wrap", "video": video(d, "wrap.ts", frames=100, audio=True,
                                                                 extra=("-output_ts_offset", "95441.7"))}],
         "ok", None, check=_times(0.0, 4.0)),
    # images: a pixel budget, every mode to 8-bit RGB
    Case("grey16-png", grey16, "ok", None, check=_same_picture),
    Case("huge-png", lambda d: [{"id": "huge-png", "image": synth.write_blank_png(d / "huge.png", 13000, 13000).name}],
         "failed", "13000x13000 = 169 megapixels, over the budget of 50 (limits.max_image_pixels)"),
    Case("bomb-png", lambda d: [{"id": "bomb-png", "image": synth.write_blank_png(d / "bomb.png", 30000, 30000).name}],
         "failed", "30000x30000 = 900 megapixels, over the budget of 50 (limits.max_image_pixels)"),
    # inputs that are not regular files: refused before anything reads them
    Case("dev-zero", lambda d: [{"id": "dev-zero", "video": "/dev/zero"}], "failed",
         "video path is a character device, not a regular file: /dev/zero", check=_fast),
    Case("dev-urandom", lambda d: [{"id": "dev-urandom", "image": "/dev/urandom"}], "failed",
         "image path is a character device", check=_fast),
    Case("fifo", fifo, "failed", "video path is a named pipe (FIFO), not a regular file", check=_fast),
    Case("folder-ok", linked_folder, "ok", "no audio track", item="linked-ok"),
    Case("folder-link-to-device", lambda d: [], "failed", "video path is a character device",
         item="to-device"),
    Case("folder-link-to-folder", lambda d: [], "failed", "video path is a folder", item="to-folder"),
    Case("folder-dangling-link", lambda d: [], "failed", "broken symbolic link", item="to-nothing"),
    Case("folder-folder", lambda d: [], "failed", "video path is a folder", item="folder"),
    Case("folder-non-utf8-name", lambda d: [], "failed", "file name is not valid UTF-8",
         item=in_links("caf\\xe9.mp4"), inputs=lambda d: [d / "links"]),
]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, dask_client):
    store = tmp_path_factory.mktemp("hostile-store") / "store"
    return run_catalogue(CASES, tmp_path_factory.mktemp("hostile-media"), store, dask_client)


def test_hostile_inputs_together_complete_with_exit_3(hostile_run):
    rows, proc = hostile_run.rows, hostile_run.proc
    assert proc.returncode == 3, proc.stdout
    expected = {hostile_run.row_of[c.name]: c.status for c in CASES}
    assert {i: rows[i]["status"] for i in expected} == expected  # every other item completed
    others = {i: r["status"] for i, r in rows.items() if i not in expected}
    assert set(others.values()) == {"ok"}, others  # the cases' helper items (grey8.png ...)
    assert all(r["reason"] and "\n" not in r["reason"] for r in rows.values() if r["status"] == "failed")
    assert all(isinstance(r["decode_errors"], int) for r in rows.values() if r["kind"] == "video"
               and r["status"] == "ok")
    assert (hostile_run.store / "lists" / "neighbors.parquet").is_file()


def test_console_summary_is_terminal_safe(hostile_run):
    out = hostile_run.proc.stdout
    assert not {"\x1b", "\x07", "\u202e"} & set(out)
    assert CONTROL_ID in hostile_run.rows  # the id itself is data, kept as given in report.json


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_reported(hostile_run, case):
    check_case(hostile_run, case)


# ----------------------------------------------------------------- the rules, unit by unit
def test_manifest_rules(tmp_path):
    (tmp_path / "m.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "first", "title": "after a BOM"}\n'
                                       b'{"id": "x\\u0000", "title": "t"}\n\n{"id": "ok", "title": "t"}\n')
    items, problems = read_inputs([str(tmp_path / "m.jsonl")])
    assert [i.id for i in items] == ["first", "ok"]
    assert [p.id for p in problems] == ["m.jsonl:2"]
    (tmp_path / "tab.csv").write_bytes(b"id\ttitle\nx\ty\n")
    _, problems = read_inputs([str(tmp_path / "tab.csv")])
    assert "separated by tabs" in problems[0].reason and problems[0].id == "tab.csv:1"
    (tmp_path / "extra.csv").write_bytes(b"id,title,price\nx,y,3\n")
    _, problems = read_inputs([str(tmp_path / "extra.csv")])
    assert [p.id for p in problems] == ["extra.csv:1"] and "unknown column(s) 'price'" in problems[0].reason


def _save(tmp_path, name, im: Image.Image, **kw) -> str:
    im.save(tmp_path / name, **kw)
    return str(tmp_path / name)


def test_every_image_mode_becomes_8bit_rgb(tmp_path):
    ramp = np.tile(np.arange(256, dtype=np.uint8), (16, 1))  # (16, 256) grey ramp
    expect = np.repeat(ramp[:, :, None], 3, axis=2)
    cases = {
        "I;16": Image.fromarray(ramp.astype(np.uint16) * 257),
        "I": Image.fromarray(ramp.astype(np.int32) * 257),
        "F": Image.fromarray(ramp.astype(np.float32) / 255),
        "L": Image.fromarray(ramp),
        "P": Image.fromarray(ramp).convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
    }
    for mode, im in cases.items():
        got = to_rgb8(im)
        assert got.dtype == np.uint8 and got.shape == (16, 256, 3), mode
        assert np.abs(got.astype(int) - expect).max() <= 2, mode
    # alpha: transparent pixels become white (product shots on a white page), opaque ones keep their colour
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[:2, :, 3], rgba[2:, :, 3] = 200, 255, 0
    palette = Image.fromarray(np.repeat([[0], [1]], 2, axis=0).repeat(4, axis=1).astype(np.uint8), "P")
    palette.putpalette([200, 0, 0, 0, 0, 0])
    palette.save(tmp_path / "p.png", transparency=1)  # index 1 (the lower rows) is transparent
    for im in (Image.fromarray(rgba), Image.fromarray(rgba).convert("LA"), Image.open(tmp_path / "p.png")):
        got = to_rgb8(im)
        assert (got[2:] == 255).all(), im.mode
        assert (got[:2] == np.asarray(im.convert("RGB"))[:2]).all(), im.mode
    # CMYK: pure cyan is (0, 255, 255)
    cyan = Image.new("CMYK", (2, 2), (255, 0, 0, 0))
    assert to_rgb8(cyan)[0, 0].tolist() == [0, 255, 255]


def test_exif_orientation_and_pixel_budget(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path, "rot.jpg", Image.fromarray(wide), exif=exif, quality=95)
    got = load_image(path, max_pixels=10**6)
    assert got.shape == (40, 20, 3)  # upright: turned
    assert got[:20].mean() > 200 and got[20:].mean() < 50  # the white half is now on top
    with pytest.raises(MediaError, match=r"40x20 = 0.0008 megapixels, over the budget of 0.0005 "):
        load_image(path, max_pixels=500)
    assert load_image(path, max_pixels=800).shape == (40, 20, 3)


def test_timestamps_are_checked_and_rebased():
    fps = 25.0
    t = np.arange(100) / fps + 1.4
    t[50:] += 3600  # a PTS discontinuity
    times, jumps = checked_times(t, fps, max_gap_s=10.0)
    assert times[0] == 0.0 and np.allclose(np.diff(times), 1 / fps)
    assert [(j.frame, round(j.step_s, 2), round(j.removed_s, 2)) for j in jumps] == [(50, 3600.04, 3600.0)]
    wrapped = np.arange(100) / fps + 95442.0
    wrapped[60:] -= 2**33 / 90000  # a 33-bit MPEG-TS wraparound that the demuxer did not correct
    times, jumps = checked_times(wrapped, fps, max_gap_s=10.0)
    assert np.allclose(times, np.arange(100) / fps) and jumps[0].frame == 60 and jumps[0].step_s < 0
    avi = np.arange(12) / fps
    avi[[4, 5]], avi[[7, 8]] = avi[[5, 4]], avi[[8, 7]]  # B-frames out of timestamp order (an AVI): no jump
    times, jumps = checked_times(avi, fps, max_gap_s=10.0)
    assert not jumps and np.allclose(times, np.arange(12) / fps)
    vfr = np.concatenate([np.arange(25) / 25, 1 + np.arange(20) / 10])  # real rate changes are no jump
    times, jumps = checked_times(vfr, fps, max_gap_s=10.0)
    assert not jumps and np.allclose(times, vfr)
    times, jumps = checked_times(np.full(5, np.nan), fps, max_gap_s=10.0)  # no timestamps: nominal rate
    assert np.allclose(times, np.arange(5) / fps) and not jumps


def test_limits_are_validated():
    with pytest.raises(UsageError, match="limits.max_image_pixels"):
        LimitConfig(max_image_pixels=0)
    assert Config().with_settings(["limits.max_decode_errors=5"]).limits.max_decode_errors == 5
    assert Config().feature_hash() == Config().with_settings(["limits.max_image_pixels=1000"]).feature_hash()


@pytest.mark.parametrize("flag", [["--set", "fusion.dedup=5"], ["--index", "IVF12,Bogus"]], ids=["dedup", "index"])
def test_bad_settings_are_refused_before_any_work(tmp_path, flag):
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "t", "title": "text"}) + "\n")
    proc = reelsim("run", tmp_path / "m.jsonl", "--store", tmp_path / "store", *flag, subprocess_=False)
    assert proc.returncode == 2 and not (tmp_path / "store").exists(), proc.stderr


def test_local_dashboard_binds_to_loopback(tmp_path):
    assert local_cluster_options(Config(), tmp_path, workers=1)["dashboard_address"] == "127.0.0.1:0"
    opened = Config().with_settings(["jobs.dashboard_address=:8787"])
    assert local_cluster_options(opened, tmp_path, workers=1)["dashboard_address"] == ":8787"


@pytest.mark.slow
def test_local_dashboard_listens_on_loopback_only(tmp_path):
    import psutil
    from distributed import LocalCluster

    with LocalCluster(**local_cluster_options(Config(), tmp_path, workers=0)) as cluster:
        port = int(cluster.dashboard_link.split(":")[2].split("/")[0])
        listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert listening == {"127.0.0.1"}
