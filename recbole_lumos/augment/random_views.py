"""Random views, CL4SRec-style: F = a crop of the history, P = the history masked (items replaced by random
ones) or with a stretch reordered, N = random catalogue items. The baseline the LLM views must beat. The
federated trainer draws them afresh for each round's clients (``round``), as CL4SRec draws them per step.

``PerturbedViews`` applies the same operations afresh each round to views a generator built once (``views_perturb``):
CL4SRec's per-round variety on top of what the LLM (or the embedding space) chose."""
import numpy as np

from recbole_lumos.augment.base import ClientViews, ViewBuilder


def crop(items, ratio, rng):
    """A contiguous stretch of ceil(ratio * n) items."""
    length = max(1, int(np.ceil(ratio * len(items))))
    start = rng.integers(0, len(items) - length + 1)
    return items[start : start + length]


def mask(items, ratio, num_items, rng):
    """Each item replaced by a random catalogue item with probability ``ratio``."""
    items = items.copy()
    masked = rng.random(len(items)) < ratio
    items[masked] = rng.integers(1, num_items, masked.sum())
    return items


def reorder(items, ratio, rng):
    """A stretch of int(ratio * n) items (at least one) shuffled."""
    items = items.copy()
    span = max(1, int(ratio * len(items)))
    begin = rng.integers(0, len(items) - span + 1)
    items[begin : begin + span] = rng.permutation(items[begin : begin + span])
    return items


class RandomViewBuilder(ViewBuilder):
    name = "random"
    redraws = True

    def __init__(self, num_items, crop_ratio=0.6, mask_ratio=0.3, reorder_ratio=0.3, seed=0):
        self.num_items, self.seed = num_items, seed
        self.crop_ratio, self.mask_ratio, self.reorder_ratio = crop_ratio, mask_ratio, reorder_ratio

    def build(self, histories, round=0):
        """Views seeded by (seed, round, user): redrawn each round, the same again for a resumed run."""
        return {
            user: self._views(np.asarray(items), np.random.default_rng([self.seed, round, int(user)]))
            for user, items in histories.items()
        }

    def _views(self, items, rng):
        future = crop(items, self.crop_ratio, rng)
        if rng.random() < 0.5:
            rephrase = mask(items, self.mask_ratio, self.num_items, rng)
        else:
            rephrase = reorder(items, self.reorder_ratio, rng)
        counterfactual = rng.integers(1, self.num_items, len(items))
        return ClientViews(future.tolist(), rephrase.tolist(), counterfactual.tolist())


class PerturbedViews(RandomViewBuilder):
    """Generated views (``generated``: {user: ClientViews}, built once) with one of CL4SRec's crop, mask or
    reorder drawn afresh each round for each positive view (F, P), as CL4SRec draws one per view; N, the
    generator's hard negative, stays as generated. Seeded by (seed, round, user)."""

    def __init__(self, generated, base_name, base_stats, num_items, seed=0):
        super().__init__(num_items, seed=seed)
        self.generated, self.name, self._stats = generated, f"{base_name}+perturbed", base_stats

    def _operation(self, items, rng):
        if len(items) == 0:
            return items
        kind = rng.integers(3)
        if kind == 0:
            return crop(items, self.crop_ratio, rng)
        if kind == 1:
            return mask(items, self.mask_ratio, self.num_items, rng)
        return reorder(items, self.reorder_ratio, rng)

    def build(self, histories, round=0):
        out = {}
        for user in histories:
            views, rng = self.generated[user], np.random.default_rng([self.seed, round, int(user)])
            future, rephrase = (self._operation(np.asarray(v), rng).tolist() for v in (views.future, views.rephrase))
            out[user] = ClientViews(future, rephrase, list(views.counterfactual))
        return out

    def stats(self):
        return self._stats
