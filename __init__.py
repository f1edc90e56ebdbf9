"""reelsim: multimodal video and product similarity.

The repository root is the ``reelsim`` package; its stages live in
``pipeline`` (decode once, shots, clips), ``extractors`` (registered feature
models), ``storage`` (HDF5 shards, manifests, exports), ``similarity`` (fusion,
FAISS, neighbour lists) and ``jobs`` (Dask runner and CLI).

Importing ``reelsim`` is cheap: heavy dependencies (torch, faiss, librosa,
dask) are imported inside the functions that use them.
"""

__version__ = "0.1.0"
