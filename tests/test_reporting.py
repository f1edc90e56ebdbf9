"""Libraries report, never print: one progress callback type, ParameterError, nothing swallowed unrecorded."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from test_similarity import W, make_catalog

from reelsim.errors import ParameterError, ReelsimError
from reelsim.extractors.audio import LogMelStats, log_mel_frames
from reelsim.jobs.console import TerminalProgress, log_warnings_to_stderr, progress_for
from reelsim.jobs.tasks import failure_reason
from reelsim.pipeline.images import header_size
from reelsim.pipeline.item import extract_each
from reelsim.reporting import LOG, Counter, Report, report, to_log, warn
from reelsim.similarity import build_index, fuse, knn_graph, normalise
from reelsim.similarity.knn import Checkpoint
from reelsim.storage.thumbnails import jpeg_thumbnail


def test_bad_input_to_the_maths_is_a_parameter_error_reported_by_its_message():
    with pytest.raises(ParameterError, match="uint8"):
        jpeg_thumbnail(np.zeros((4, 4), np.float32), max_side=8, quality=80)
    with pytest.raises(ValueError):  # still a ValueError for code that catches those
        log_mel_frames(y=np.zeros((2, 2), np.float32), sr=16000)
    with pytest.raises(ParameterError) as short:  # the real audio model on a clip shorter than one 25 ms frame
        LogMelStats(device="cpu").extract([np.zeros(10, np.float32)])
    reason = failure_reason(short.value)
    assert isinstance(short.value, ReelsimError) and "internal error" not in reason and "25 ms" in reason
    assert failure_reason(KeyError("x")).startswith("internal error KeyError")  # a bug still says so


def test_counter_and_terminal_reporter():
    seen: list[Report] = []
    tick = Counter(seen.append, "kNN lists", total=5, unit="item")
    tick(2)
    tick(3, "halfway message")
    assert [(r.done, r.total) for r in seen] == [(0, 5), (2, 5), (5, 5)] and seen[-1].message == "halfway message"

    out = io.StringIO()
    bars = TerminalProgress(bars=True, stream=out)
    t = Counter(bars, "items", total=3)
    t(1, "failed: a: bad\x1b[2J media")
    warn(bars, "stale lock taken over")
    t(2)
    text = out.getvalue()
    assert "items" in text and "3/3" in text  # a tqdm bar, finished
    assert "failed: a: bad\ufffd[2J media" in text  # lines are terminal-safe
    assert "reelsim: warning: stale lock taken over" in text

    quiet = io.StringIO()
    no_bars = TerminalProgress(bars=False, stream=quiet)
    Counter(no_bars, "items", total=2)(2, "failed: b")
    warn(no_bars, "still shown")
    assert quiet.getvalue() == "reelsim: warning: still shown\n"  # --no-progress: warnings only

    assert progress_for(False) is to_log and isinstance(progress_for(True), TerminalProgress)
    assert progress_for(seen.append) == seen.append


class Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_default_reporter_logs_warnings_and_the_cli_shows_them(capsys):
    handlers, propagate = list(LOG.handlers), LOG.propagate
    LOG.handlers[:] = []  # as in a fresh process (tests before may have run the CLI's main here)
    kept = Kept()
    LOG.addHandler(kept)
    try:
        warn(None, "a warning with no reporter")
        report(None, "a line nobody asked to see")  # INFO: not a warning
    finally:
        LOG.removeHandler(kept)
    assert kept.messages == ["a warning with no reporter"]
    try:
        log_warnings_to_stderr()
        log_warnings_to_stderr()  # once only
        warn(None, "shown by the CLI")
        assert capsys.readouterr().err == "reelsim: warning: shown by the CLI\n"
    finally:
        LOG.handlers[:] = handlers
        LOG.propagate = propagate


class PickyModel:
    """Stands in for a model whose batched call fails while each input alone works (e.g. out of memory)."""

    name = "picky"

    def extract(self, inputs):
        if len(inputs) > 1:
            raise RuntimeError("CUDA out of memory\nsecond line")
        if inputs[0] == "bad":
            raise ParameterError("bad input")
        return np.ones((1, 2), np.float32)


def test_a_failed_batch_is_recorded_not_swallowed():
    warnings: list[str] = []
    out = extract_each(PickyModel(), ["a", "bad", "c"], warnings)
    assert isinstance(out[1], ParameterError) and out[0].shape == out[2].shape == (2,)
    assert warnings == [("picky: a batch of 3 inputs failed (RuntimeError: CUDA out of memory); they were embedded "
                         "one at a time")]


def test_unreadable_checkpoint_batch_is_recomputed_and_reported(tmp_path):
    cat = normalise(make_catalog(n=300, seed=3)[0])
    index = build_index(fuse(cat, W))
    ckpt = Checkpoint(tmp_path / "ck", {"job": 1})
    clean = knn_graph(cat, index, W, 5, batch_size=100, checkpoint=ckpt)
    ckpt.path(1).write_bytes(b"not an npz")
    seen: list[Report] = []
    again = knn_graph(cat, index, W, 5, batch_size=100, checkpoint=Checkpoint(tmp_path / "ck", {"job": 1}),
                      progress=seen.append)
    assert np.array_equal(again.I, clean.I)
    warned = [r.message for r in seen if r.warning]
    assert len(warned) == 1 and "checkpoint batch 1 could not be read" in warned[0], warned
    assert [r.done for r in seen if r.done is not None] == [0, 100, 200, 300]


def test_header_reader_records_what_each_format_said(tmp_path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\x00" * 64)
    refused: list[str] = []
    assert header_size(str(junk), refused) is None
    assert refused and all(": " in r for r in refused)
