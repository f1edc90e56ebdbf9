"""One small tree of exceptions, checked where input enters.

Every error that a user can cause derives from :class:`ReelsimError`; the CLI
turns it into a one-line message (and exit code 2 for usage errors), and the
batch runner records its message as the item's failure reason.
"""


class ReelsimError(Exception):
    """Root of all reelsim errors."""


class UsageError(ReelsimError):
    """Bad command-line arguments or configuration (CLI exit code 2)."""


class UnknownItemError(UsageError):
    """An item id that is not in the store."""


class ParameterError(ReelsimError, ValueError):
    """Bad input to a computation: an array of the wrong dtype, shape or length, or an argument out of range.

    Raised where the input enters a function (``raise``, never ``assert``); a
    ``ValueError`` too, so code that catches ``ValueError`` still does. A failed
    item reports its message, not an internal error.

    Examples
    --------
    >>> isinstance(ParameterError("expected uint8 (H, W, 3)"), ValueError)
    True
    """


class ManifestError(ReelsimError):
    """A manifest row that cannot be turned into an item."""


class MediaError(ReelsimError):
    """A media file that is missing, empty, corrupt or has no usable stream."""


class WeightsNotFoundError(ReelsimError):
    """A model needs a weights file that is not on this machine."""


class StoreError(ReelsimError):
    """The feature store is missing, locked or inconsistent."""


class DamagedStoreError(StoreError):
    """A file of the store that cannot be read as what reelsim wrote (truncated, overwritten, incomplete).

    ``path`` names the file, ``what`` says what is wrong with it and ``redo``
    which command rewrites it: ``run`` (shards, the catalog, items.json),
    ``lists`` (indexes, list state, lists), ``lists --space learned`` (a
    learned space's lists) or ``train`` (the trained model). The message says all three.
    """

    REMEDY = {"run": "`reelsim run` over the catalog's inputs rebuilds it", "lists": "`reelsim lists` rebuilds it",
              "train": "`reelsim train --interactions FILE` rewrites it"}

    def __init__(self, path, what: str, redo: str, message: str | None = None):
        remedy = self.REMEDY.get(redo, f"`reelsim {redo}` rebuilds it")
        super().__init__(message or f"damaged store file {path}: {what}; {remedy}")
        self.path, self.what, self.redo = str(path), what, redo

    def __reduce__(self):  # pickled with its fields (e.g. between Dask processes)
        return type(self), (self.path, self.what, self.redo, str(self))


class TrainingError(ReelsimError):
    """Training produced a model that must not replace the stored one (a loss that is NaN, infinite or
    0, no batch trained, embeddings that are not finite or have collapsed to one direction).
    Raised before anything is saved; the message gives the reason in one line (CLI exit code 1)."""


class StoreWriteError(StoreError):
    """The disk refused a write into the store (full, read-only, no permission); nothing was half-written.

    ``path`` is the file that could not be written, ``why`` the reason in words
    (``no space left on device``).
    """

    def __init__(self, path, why: str, message: str | None = None):
        super().__init__(message or f"cannot write {path}: {why} (the store is as it was before this command)")
        self.path, self.why = str(path), why

    def __reduce__(self):
        return type(self), (self.path, self.why, str(self))


class BannedQueryError(ReelsimError):
    """A search query too close to a banned phrase (CLI exit code 4)."""
