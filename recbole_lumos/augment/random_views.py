"""Random views, CL4SRec-style: F = a crop of the history, P = the history masked (items replaced by random
ones) or with a stretch reordered, N = random catalogue items. The baseline the LLM views must beat. The
federated trainer draws them afresh for each round's clients (``round``), as CL4SRec draws them per step."""
import numpy as np

from recbole_lumos.augment.base import ClientViews, ViewBuilder


class RandomViewBuilder(ViewBuilder):
    name = "random"

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
        n = len(items)
        crop_len = max(1, int(np.ceil(self.crop_ratio * n)))
        start = rng.integers(0, n - crop_len + 1)
        future = items[start : start + crop_len]
        rephrase = items.copy()
        if rng.random() < 0.5:  # mask
            masked = rng.random(n) < self.mask_ratio
            rephrase[masked] = rng.integers(1, self.num_items, masked.sum())
        else:  # reorder a stretch
            span = max(1, int(self.reorder_ratio * n))
            begin = rng.integers(0, n - span + 1)
            rephrase[begin : begin + span] = rng.permutation(rephrase[begin : begin + span])
        counterfactual = rng.integers(1, self.num_items, n)
        return ClientViews(future.tolist(), rephrase.tolist(), counterfactual.tolist())
