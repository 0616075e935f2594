"""Generated views moved onto a random prefix of the history each round (``tri_anchor: aligned_prefix``).

A view built on the whole training history is that history with a few items changed, and the anchor is the
history itself: the very sequence the model reads to predict the validation item. The tri-view loss then trains
that one sequence (and near-copies of it), which validation rewards and test does not
(docs/benchmarks/head-to-head-fair/ml-100k.md). Here each round every user's history is cut at a random point of
its second half, and the items the generator chose (F's continuation, P's equivalents, N's contrary items) are
placed on that prefix exactly as ``place_views`` placed them on the whole history: the anchor and its views are
read at the same position and differ only where the generator changed them (the method's rule), and no anchor or view is
the validation query. Seeded by (seed, round, user), so a resumed run redraws the same prefixes.
"""
import numpy as np

from recbole_lumos.augment.base import ClientViews, ViewBuilder, appended_items, place_views


def generated_items(history, views):
    """(future, similar, unlike): the items the generator put into a user's views, read off the views themselves:
    F's appended items, P's substituted items (oldest first) and the items that replace N's ending."""
    history = np.asarray(history)
    future = appended_items(history, views.future)
    rephrase, counterfactual = np.asarray(views.rephrase), np.asarray(views.counterfactual)
    similar = rephrase[rephrase != history].tolist() if len(rephrase) == len(history) else []
    changed = np.flatnonzero(counterfactual != history) if len(counterfactual) == len(history) else []
    unlike = counterfactual[changed[0]:].tolist() if len(changed) else []
    return future, similar, unlike


class AlignedPrefixViews(ViewBuilder):
    """Views built once by another generator (``generated``: {user: ClientViews}), placed afresh each round on a
    random prefix of each history; the ClientViews it returns carry that prefix as their anchor."""

    redraws = True

    def __init__(self, generated, histories, base_name, base_stats, window, seed=0, max_len=None, base=None):
        self.items = {user: generated_items(histories[user], views) for user, views in generated.items()}
        self.window, self.seed, self.max_len = window, seed, max_len
        self.base = base  # the generator whose views these are (a run records its view set through it)
        self.name, self._stats = f"{base_name}+aligned-prefix", base_stats

    def build(self, histories, round=0):
        out = {}
        for user, history in histories.items():
            rng = np.random.default_rng([self.seed, round, int(user)])
            n = len(history)
            prefix = list(history[: rng.integers((n + 1) // 2, n) if n >= 2 else n])  # [ceil(n/2), n-1] items
            views = place_views(prefix, *self.items[user], self.window, rng, self.max_len)
            out[user] = ClientViews(views.future, views.rephrase, views.counterfactual, anchor=prefix)
        return out

    def stats(self):
        return self._stats
