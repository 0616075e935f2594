"""Views from the item embedding space alone (no generation), and the view assembly the LLM builder shares.

F = history + the m items nearest to the recency-weighted history centroid; P = the history with a share of its
items swapped for their nearest neighbours; N = the items farthest from the centroid. Item text gives a
sentence-embedding space; without text, co-occurrence factors of the training histories given to build().
"""
import hashlib
import time

import numpy as np

from recbole_lumos.augment.base import ClientViews, ViewBuilder
from recbole_lumos.augment.catalogue import catalogue_from_dataset
from recbole_lumos.augment.item_space import ItemSpace, LazyEncoder
from recbole_lumos.augment.settings import setting, view_seed


def client_seed(seed, client):
    """A stable per-client seed: a client's views do not depend on batching, order or resumption."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{client}".encode()).digest()[:4], "little")


def assemble_views(space, history, rng, future_items, swap_ratio, negative_items, recency_decay=0.9,
                   negative_max_similarity=0.4, suggested=None):
    """ClientViews of one history, taking items from `suggested` ({view: [(item, similarity)]}, e.g. grounded
    LLM output) first and filling the rest from the space. Returns the views and their item counts."""
    suggested = suggested or {}
    counts = {"grounded": 0, "filled": 0, "similarity_sum": 0.0}
    seen = set(history)
    centroid = space.centroid(history, recency_decay)
    closeness = space.similarity(centroid)

    def take(view, n, allowed=lambda item: True):
        """Up to n distinct suggested items of `view` not in the history: {item: similarity}, in order."""
        chosen = {}
        for item, sim in suggested.get(view, []):
            if len(chosen) < n and item not in seen and item not in chosen and allowed(item):
                chosen[item] = sim
        return chosen

    def credit(similarities):
        counts["grounded"] += len(similarities)
        counts["similarity_sum"] += sum(similarities)

    future = take("future", future_items)
    credit(list(future.values()))
    future = list(future) + space.ranked(centroid, seen | set(future), future_items - len(future))
    negatives = take("counterfactual", negative_items, lambda item: closeness[item] < negative_max_similarity)
    credit(list(negatives.values()))
    negatives = list(negatives) + space.ranked(centroid, seen | set(negatives), negative_items - len(negatives),
                                               farthest=True)
    counts["filled"] += len(future) + len(negatives) - counts["grounded"]

    rephrase, used = list(history), set()
    pool = take("rephrase", len(history))  # LLM-named equivalents, each given to the history item closest to it
    n_swaps = int(round(swap_ratio * len(history)))
    for position in sorted(rng.choice(len(history), n_swaps, replace=False)):
        original = space.vectors[history[position]]
        if pool:
            candidates = list(pool)
            item = candidates[int(np.argmax(space.vectors[candidates] @ original))]
            credit([pool.pop(item)])
        else:
            nearest = space.ranked(original, seen | used, 1)
            if not nearest:
                continue
            item = nearest[0]
            counts["filled"] += 1
        rephrase[position] = item
        used.add(item)
    return ClientViews(list(history) + future, rephrase, negatives), counts


class EmbeddingViewBuilder(ViewBuilder):
    name = "embedding"

    def __init__(self, catalogue, encoder=None, future_items=5, swap_ratio=0.3, negative_items=10,
                 recency_decay=0.9, negative_max_similarity=0.4, seed=0):
        self.catalogue, self.encoder, self.seed = catalogue, encoder, seed
        self.options = dict(future_items=future_items, swap_ratio=swap_ratio, negative_items=negative_items,
                            recency_decay=recency_decay, negative_max_similarity=negative_max_similarity)
        self.has_text = any(catalogue.texts or [])
        self._space, self._stats = None, {}

    def space(self, histories):
        if not self.has_text:  # depends on the histories given, so rebuilt each call
            num_items = len(self.catalogue.texts or []) or 1 + max(max(h, default=0) for h in histories.values())
            return ItemSpace.from_cooccurrence(histories, num_items, seed=self.seed)
        if self._space is None:
            self._space = ItemSpace.from_texts(self.catalogue.texts, self.encoder or LazyEncoder())
        return self._space

    def build(self, histories):
        start = time.perf_counter()
        space = self.space(histories)
        views = {}
        for client, history in histories.items():
            rng = np.random.default_rng(client_seed(self.seed, client))
            views[client], _ = assemble_views(space, list(history), rng, **self.options)
        seconds = time.perf_counter() - start
        self._stats = {"space": "text" if self.has_text else "co-occurrence", "clients": len(views),
                       "seconds": seconds, "clients_per_s": len(views) / max(seconds, 1e-9)}
        return views

    def stats(self):
        return dict(self._stats)


def view_options(config):
    """The view-shape settings both builders share, from the config (defaults: properties/augment.yaml)."""
    keys = dict(future_items="view_future_items", swap_ratio="view_swap_ratio", negative_items="view_negative_items",
                recency_decay="view_recency_decay", negative_max_similarity="view_negative_max_similarity")
    return {name: setting(config, key) for name, key in keys.items()}


def build_embedding_views(config, dataset):
    catalogue = catalogue_from_dataset(dataset)
    encoder = None
    if any(catalogue.texts):
        encoder = LazyEncoder(setting(config, "embedding_model"), setting(config, "llm_device"))
    return EmbeddingViewBuilder(catalogue, encoder, seed=view_seed(config), **view_options(config))
