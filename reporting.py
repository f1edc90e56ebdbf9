"""How library code tells its caller what it is doing: one callback type. No layer below ``jobs/`` prints.

A function with something to say (how far it is through many items or
blocks, a line about a step, a warning about something that did not stop
it) takes ``progress: Progress | None`` and hands it :class:`Report` values
through :func:`report`, :func:`warn` or a :class:`Counter`. ``None`` means
:func:`to_log`: the ``reelsim`` logger, so warnings still reach a person
(Python shows them on stderr when logging is not configured) and the rest
is quiet. The CLI passes a terminal reporter (bars and lines on stderr,
``jobs/console.py``); the Python API a reporter of the caller's choice.

Examples
--------
>>> seen = []
>>> tick = Counter(seen.append, "kNN lists", total=3)
>>> tick(2); tick(1)
>>> [(r.stage, r.done, r.total) for r in seen]
[('kNN lists', 0, 3), ('kNN lists', 2, 3), ('kNN lists', 3, 3)]
>>> warn(seen.append, "taking over a stale lock")
>>> seen[-1].warning, seen[-1].message
(True, 'taking over a stale lock')
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

#: The logger :func:`to_log` writes to (the CLI gives it a handler that prints ``reelsim: warning: ...``).
LOG = logging.getLogger("reelsim")


@dataclass(frozen=True)
class Report:
    """One thing a library function tells its caller.

    message : a line for a person (empty for a bare count).
    stage : what is progressing (``items``, ``kNN lists``, ``train``): the counts of one stage go together.
    done, total : units of ``stage`` finished so far, and how many there are (None: not a count).
    unit : what one unit is (``item``, ``block``).
    warning : something the user should know that did not stop the work (a lock taken over, an item
        whose thumbnail could not be made ...).
    """

    message: str = ""
    stage: str = ""
    done: int | None = None
    total: int | None = None
    unit: str = "item"
    warning: bool = False


#: The one callback type of progress, lines and warnings.
Progress = Callable[[Report], None]


def to_log(r: Report) -> None:
    """The default reporter: warnings to the ``reelsim`` logger at WARNING, lines at INFO, counts at DEBUG."""
    if r.warning:
        LOG.warning("%s", r.message)
    elif r.message:
        LOG.info("%s", r.message)
    elif r.done is not None:
        LOG.debug("%s: %s/%s %s", r.stage, r.done, r.total, r.unit)


def silent(r: Report) -> None:
    """A reporter that drops everything (tests, benchmarks)."""


def reporter(progress: Progress | None) -> Progress:
    """``progress``, or :func:`to_log` when None."""
    return to_log if progress is None else progress


def report(progress: Progress | None, message: str, *, stage: str = "") -> None:
    """Say one line (shown where the caller shows progress)."""
    reporter(progress)(Report(message=message, stage=stage))


def warn(progress: Progress | None, message: str, *, stage: str = "") -> None:
    """Report a warning: something that did not stop the work but that a person should see."""
    reporter(progress)(Report(message=message, stage=stage, warning=True))


class Counter:
    """Counts one stage's units for ``progress``: reports ``done`` of ``total`` at the start and at each call.

    Parameters
    ----------
    progress : Progress or None
    stage : the stage's name, e.g. ``kNN lists``.
    total : units in all.
    done : units finished before (a resumed job).
    unit : what one unit is.
    """

    def __init__(self, progress: Progress | None, stage: str, *, total: int, done: int = 0, unit: str = "item"):
        self.progress, self.stage, self.total, self.done, self.unit = reporter(progress), stage, total, done, unit
        self._send()

    def __call__(self, n: int = 1, message: str = "") -> None:
        """``n`` more units are done; ``message``, if any, is said with the count."""
        self.done += n
        self._send(message)

    def say(self, message: str, *, warning: bool = False) -> None:
        """A line about this stage, without a count."""
        self.progress(Report(message=message, stage=self.stage, unit=self.unit, warning=warning))

    def _send(self, message: str = "") -> None:
        self.progress(Report(message=message, stage=self.stage, done=self.done, total=self.total, unit=self.unit))
