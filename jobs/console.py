"""What people see of a library's reports (:mod:`reelsim.reporting`): bars, lines and warnings on stderr.

The CLI turns ``--no-progress`` into one of these (:func:`progress_for`):
with bars, every counted stage gets a tqdm bar and every line is shown;
without, only warnings are. The Python API takes ``progress=True`` /
``False`` or any :data:`~reelsim.reporting.Progress` callable.
"""

from __future__ import annotations

import logging
import sys

from reelsim.jobs.tables import terminal_safe
from reelsim.reporting import LOG, Progress, Report, to_log


class TerminalProgress:
    """A :data:`~reelsim.reporting.Progress` that draws on a terminal (stderr by default).

    Parameters
    ----------
    bars : draw a bar per counted stage and show lines; False: warnings only.
    stream : where to write (default: ``sys.stderr`` at each write).
    """

    def __init__(self, bars: bool = True, stream=None):
        self.show, self._stream = bars, stream
        self._bars: dict[str, object] = {}

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    def __call__(self, r: Report) -> None:
        if r.warning:
            self._line(f"reelsim: warning: {terminal_safe(r.message)}", r.stage)
            return
        if not self.show:
            return
        if r.done is not None and r.total is not None:
            self._count(r)
        if r.message:
            self._line(terminal_safe(r.message), r.stage)

    def _count(self, r: Report) -> None:
        from tqdm import tqdm

        bar = self._bars.get(r.stage)
        if bar is None or bar.total != r.total:
            if bar is not None:
                bar.close()
            bar = self._bars[r.stage] = tqdm(total=r.total, desc=r.stage or "progress", unit=r.unit,
                                             file=self.stream, dynamic_ncols=True, initial=r.done)
        elif r.done > bar.n:
            bar.update(r.done - bar.n)
        if r.done >= r.total:
            bar.close()
            del self._bars[r.stage]

    def _line(self, text: str, stage: str) -> None:
        bar = self._bars.get(stage) or next(iter(self._bars.values()), None)
        if bar is not None:
            bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream)

    def close(self) -> None:
        """Close any bar still open (a stage that stopped early)."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def progress_for(progress: bool | Progress | None) -> Progress:
    """The reporter of a public call's ``progress`` argument.

    ``True``: bars and lines on stderr; ``False`` or ``None``: :func:`~reelsim.reporting.to_log`
    (warnings reach the ``reelsim`` logger); a callable is used as it is.
    """
    if progress is True:
        return TerminalProgress(bars=True)
    if progress is False or progress is None:
        return to_log
    return progress


class StderrLines(logging.Handler):
    """A logging handler writing ``reelsim: warning: <message>`` to the ``sys.stderr`` of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"reelsim: {record.levelname.lower()}: {terminal_safe(record.getMessage())}", file=sys.stderr)
        except Exception:  # noqa: BLE001  logging's own rule: a failing handler reports itself, never raises
            self.handleError(record)


def log_warnings_to_stderr() -> None:
    """Show the ``reelsim`` logger's warnings as ``reelsim: warning: ...`` lines on stderr (the CLI's setting).

    Reports made with no reporter (:func:`~reelsim.reporting.to_log`) then read as the CLI's own lines.
    """
    if any(isinstance(h, StderrLines) for h in LOG.handlers):
        return
    LOG.addHandler(StderrLines(level=logging.WARNING))
    LOG.propagate = False
