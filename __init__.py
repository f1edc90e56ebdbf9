"""reelsim: multimodal video and product similarity.

The repository root is the ``reelsim`` package. Its layers, each importing
only from those before it (docs/architecture.md)::

    errors, config  ->  storage  ->  extractors  ->  pipeline  ->  similarity  ->  jobs

``storage`` (the store's layout, HDF5 shards, manifests, list files,
exports), ``extractors`` (registered feature models and shot detectors),
``pipeline`` (decode once, shots, clips, one item), ``similarity`` (fusion,
FAISS, neighbour lists) and ``jobs`` (the Dask runner, the CLI, this API).

The Python API (the CLI is a thin layer over it)::

    import reelsim
    report = reelsim.run(["catalog.jsonl"], "out/")        # reelsim run
    store = reelsim.open_store("out/")
    store.similar("trailer-042", k=5)                      # reelsim similar
    store.shots("trailer-042"), store.lists(), store.features("trailer-042")

Importing ``reelsim`` is cheap: heavy dependencies (torch, faiss, librosa,
dask, h5py) are imported inside the functions that use them.
"""

from reelsim._version import __version__ as __version__
from reelsim.config import Config as Config
from reelsim.errors import ParameterError as ParameterError
from reelsim.errors import ReelsimError as ReelsimError
from reelsim.errors import StoreError as StoreError
from reelsim.errors import UnknownItemError as UnknownItemError
from reelsim.errors import UsageError as UsageError
from reelsim.reporting import Progress as Progress
from reelsim.reporting import Report as Report

#: The rest of the public API, loaded on first use (PEP 562): importing a low module such as
#: ``reelsim.storage.layout`` runs this file, and must not load the runner, Dask's glue or the CLI.
LAZY = {
    "Store": "reelsim.jobs.api",
    "add": "reelsim.jobs.api",
    "open_store": "reelsim.jobs.api",
    "run": "reelsim.jobs.api",
    "RunReport": "reelsim.jobs.runner",
    "Neighbor": "reelsim.storage.lists",
}

__all__ = [
    "Config",
    "Neighbor",
    "ParameterError",
    "Progress",
    "ReelsimError",
    "Report",
    "RunReport",
    "Store",
    "StoreError",
    "UnknownItemError",
    "UsageError",
    "__version__",
    "add",
    "open_store",
    "run",
]


def __getattr__(name: str):
    """``reelsim.run``, ``reelsim.open_store`` ...: imported from their module when first asked for."""
    module = LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reelsim' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY))
