"""reelsim.similarity: fused multimodal neighbour lists.

Each file has one job, in the order data flows through them:

- ``catalog``: :class:`CatalogEmbeddings`, per-modality vectors of N items (+ file I/O);
- ``fusion``: :func:`normalise`, :func:`fuse` and :func:`shared_score`, the one score rule;
- ``index_choice`` and ``grouped``: which FAISS index, and one per modality signature;
- ``search``: candidates from the indexes, re-scored exactly (:func:`search`);
- ``knn``: the kNN-graph job over every item, with a checkpoint (:func:`knn_graph`);
- ``hygiene``: near-duplicate collapse, MMR, blocklist;
- ``rebuild``, ``incremental``, ``lookup``: the same over a store (``run``/``lists``, ``add``, ``similar``).

Small catalogs::

    cat_norm = normalise(cat)                    # centre each modality, L2 rows (optional PCA)
    index = build_index(fuse(cat_norm, weights)) # exact FAISS inner product
    results = search.search(cat_norm, index, weights, rows=None, k=10)   # reelsim.similarity.search

At catalog scale::

    index = GroupedIndex.build(cat_norm, weights)  # one FAISS index per modality signature, chosen by size
    lists = knn_graph(cat_norm, index, weights, k=10, checkpoint=Checkpoint(folder, fingerprint))
    write_lists(cat_norm.ids, lists, "lists/", ["parquet"])   # reelsim.storage.lists

Scores are weighted means of per-modality cosines over the modalities both
items have (docs/similarity.md). Importing this package loads numpy only;
faiss, pyarrow and h5py are imported by the functions that use them.
"""

from reelsim.config import check_weights as check_weights
from reelsim.similarity.catalog import CatalogEmbeddings as CatalogEmbeddings
from reelsim.similarity.catalog import EmbeddingError as EmbeddingError
from reelsim.similarity.catalog import load_catalog as load_catalog
from reelsim.similarity.catalog import save_catalog as save_catalog
from reelsim.similarity.fusion import fuse as fuse
from reelsim.similarity.fusion import normalise as normalise
from reelsim.similarity.fusion import normalise_queries as normalise_queries
from reelsim.similarity.fusion import shared_score as shared_score
from reelsim.similarity.grouped import GroupedIndex as GroupedIndex
from reelsim.similarity.grouped import load_index as load_index
from reelsim.similarity.grouped import save_index as save_index
from reelsim.similarity.hygiene import Hygiene as Hygiene
from reelsim.similarity.index_choice import IndexPlan as IndexPlan
from reelsim.similarity.index_choice import build_index as build_index
from reelsim.similarity.index_choice import choose_index as choose_index
from reelsim.similarity.knn import Checkpoint as Checkpoint
from reelsim.similarity.knn import knn_graph as knn_graph
from reelsim.similarity.search import rows_of as rows_of
from reelsim.similarity.search import search_vectors as search_vectors
