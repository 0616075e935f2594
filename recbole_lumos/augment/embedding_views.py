"""Views from the item text's sentence-embedding space alone (no LLM): the baseline the LLM views must beat.

F = history + the m items nearest to the recency-weighted centroid of the history; P = the history with some of its
recent items swapped for the next-nearest items; N = the history ending in the items farthest from the centroid.
The space is built from public item text only, so a client's views depend on its own history alone.
"""
import hashlib
import time

import numpy as np

from recbole_lumos.augment.base import ViewBuilder, ViewShape, place_views
from recbole_lumos.augment.catalogue import catalogue_from_dataset
from recbole_lumos.augment.item_space import ItemSpace, LazyEncoder
from recbole_lumos.augment.settings import setting, view_seed
from recbole_lumos.errors import LumosError


def client_seed(seed, client):
    """A stable per-client seed: a client's views do not depend on batching, order or resumption."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{client}".encode()).digest()[:4], "little")


def require_text(catalogue, views, dataset_name):
    if not any(catalogue.texts or []):  # item statistics over all users would be other clients' data
        raise LumosError(f"views={views} needs item text, and dataset {dataset_name} has none: set "
                         "item_title_field, or use views=random")


class EmbeddingViewBuilder(ViewBuilder):
    name = "embedding"

    def __init__(self, catalogue, encoder=None, shape=None, recency_decay=0.9, seed=0, dataset_name=""):
        require_text(catalogue, "embedding", dataset_name)
        self.catalogue, self.encoder, self.seed = catalogue, encoder, seed
        self.shape, self.recency_decay = shape or ViewShape(), recency_decay
        self._space, self._stats = None, {}

    def space(self):
        if self._space is None:
            self._space = ItemSpace.from_texts(self.catalogue.texts, self.encoder or LazyEncoder())
        return self._space

    def views_of(self, client, history):
        space, history = self.space(), list(history)
        n_future, n_similar, n_negative = self.shape.counts(len(history))
        centroid = space.centroid(history, self.recency_decay)
        near = space.ranked(centroid, set(history), n_future + n_similar)
        unlike = space.ranked(centroid, set(history) | set(near), n_negative, farthest=True)
        rng = np.random.default_rng(client_seed(self.seed, client))
        return place_views(history, near[:n_future], near[n_future:], unlike, self.shape.window, rng,
                           self.shape.max_len)

    def build(self, histories):
        start = time.perf_counter()
        views = {client: self.views_of(client, history) for client, history in histories.items()}
        seconds = time.perf_counter() - start
        self._stats = {"clients": len(views), "seconds": round(seconds, 2),
                       "clients_per_s": round(len(views) / max(seconds, 1e-9), 1)}
        return views

    def stats(self):
        return dict(self._stats)


def view_shape(config):
    """The view shape both builders share, from the config (defaults: properties/augment.yaml). The window never
    reaches past what the model reads (MAX_ITEM_LIST_LENGTH), so every substitution reaches the model, and the views
    are placed on the anchor the model reads (its last MAX_ITEM_LIST_LENGTH items: ``place_views``)."""
    window = setting(config, "view_window_items")
    max_len = config["MAX_ITEM_LIST_LENGTH"] if config is not None and "MAX_ITEM_LIST_LENGTH" in config else None
    return ViewShape(future_items=setting(config, "view_future_items"), swap_ratio=setting(config, "view_swap_ratio"),
                     negative_items=min(setting(config, "view_negative_items"), max_len or window),
                     window=min(window, max_len or window), max_len=max_len)


def build_embedding_views(config, dataset):
    catalogue = catalogue_from_dataset(dataset)  # the builder refuses a catalogue without text
    encoder = LazyEncoder(setting(config, "embedding_model"), setting(config, "llm_device"))
    return EmbeddingViewBuilder(catalogue, encoder, view_shape(config), setting(config, "view_recency_decay"),
                                seed=view_seed(config), dataset_name=config["dataset"])
