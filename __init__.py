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

__version__ = "0.1.0"

# The public API: explicit re-exports (``X as X``). Defined after __version__,
# which the modules below read.
from reelsim.config import Config as Config  # noqa: E402
from reelsim.errors import ReelsimError as ReelsimError  # noqa: E402
from reelsim.errors import StoreError as StoreError  # noqa: E402
from reelsim.errors import UnknownItemError as UnknownItemError  # noqa: E402
from reelsim.errors import UsageError as UsageError  # noqa: E402
from reelsim.jobs.api import Store as Store  # noqa: E402
from reelsim.jobs.api import add as add  # noqa: E402
from reelsim.jobs.api import open_store as open_store  # noqa: E402
from reelsim.jobs.api import run as run  # noqa: E402
from reelsim.jobs.runner import RunReport as RunReport  # noqa: E402
from reelsim.storage.lists import Neighbor as Neighbor  # noqa: E402
