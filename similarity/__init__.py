"""reelsim.similarity: fused multimodal neighbour lists.

Pipeline, each step a small function::

    cat_norm = normalise(cat)                    # centre each modality, L2 rows (optional PCA)
    index = build_index(fuse(cat_norm, weights)) # exact FAISS inner product
    results = search(cat_norm, index, weights, rows=None, k=10)
    write_parquet(neighbor_rows(cat_norm.ids, results), "neighbors.parquet")

At catalog scale::

    index = GroupedIndex.build(cat_norm, weights)  # one FAISS index per modality signature, chosen by size
    lists = knn_graph(cat_norm, index, weights, k=10, checkpoint=Checkpoint(folder, fingerprint))
    write_lists(cat_norm.ids, lists, "lists/", ["parquet"])

Scores are weighted means of per-modality cosines over the modalities both
items have (docs/similarity.md). Importing this package loads numpy only;
faiss, pyarrow and h5py are imported by the functions that use them.
"""

from reelsim.similarity.fusion import CatalogEmbeddings as CatalogEmbeddings
from reelsim.similarity.fusion import EmbeddingError as EmbeddingError
from reelsim.similarity.fusion import check_weights as check_weights
from reelsim.similarity.fusion import fuse as fuse
from reelsim.similarity.fusion import normalise as normalise
from reelsim.similarity.fusion import normalise_queries as normalise_queries
from reelsim.similarity.index import build_index as build_index
from reelsim.similarity.index import load_catalog as load_catalog
from reelsim.similarity.index import load_index as load_index
from reelsim.similarity.index import save_catalog as save_catalog
from reelsim.similarity.index import save_index as save_index
from reelsim.similarity.grouped import GroupedIndex as GroupedIndex
from reelsim.similarity.hygiene import Hygiene as Hygiene
from reelsim.similarity.index_choice import IndexPlan as IndexPlan
from reelsim.similarity.index_choice import choose_index as choose_index
from reelsim.similarity.knn import Checkpoint as Checkpoint
from reelsim.similarity.knn import KnnLists as KnnLists
from reelsim.similarity.knn import knn_graph as knn_graph
from reelsim.similarity.lists import COLUMNS as COLUMNS
from reelsim.similarity.lists import LIST_FILES as LIST_FILES
from reelsim.similarity.lists import read_lists as read_lists
from reelsim.similarity.lists import write_lists as write_lists
from reelsim.similarity.lists import lists_table as lists_table
from reelsim.similarity.lists import neighbor_rows as neighbor_rows
from reelsim.similarity.lists import read_jsonl as read_jsonl
from reelsim.similarity.lists import read_parquet as read_parquet
from reelsim.similarity.lists import write_jsonl as write_jsonl
from reelsim.similarity.lists import write_parquet as write_parquet
from reelsim.similarity.neighbors import Neighbor as Neighbor
from reelsim.similarity.neighbors import rows_of as rows_of
from reelsim.similarity.neighbors import search as search
from reelsim.similarity.neighbors import search_vectors as search_vectors
