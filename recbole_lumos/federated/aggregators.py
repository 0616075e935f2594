"""Aggregation rules: how the server turns the clients' shared-parameter updates into one update.

Updates arrive cohort by cohort (stacked, one row per client); a rule may keep running sums (FedAvg) or
collect everything it needs (a robust median would). Add a rule to AGGREGATORS to make it configurable.
"""
import torch

from recbole_lumos.errors import LumosError


class Aggregator:
    linear = False  # True: the result is a weighted mean, so a cohort may hand over its own weighted mean

    def start(self):
        """A new round begins."""

    def add(self, deltas, weights):
        """deltas {name: tensor [C, ...]} of C clients, weights [C] (their sample counts)."""
        raise NotImplementedError

    def result(self):
        """{name: tensor} the aggregated update of the round."""
        raise NotImplementedError


class FedAvg(Aggregator):
    """Mean of the updates weighted by sample count (McMahan et al., 2017)."""

    linear = True

    def start(self):
        self.sums, self.total = {}, 0.0

    def add(self, deltas, weights):
        for name, delta in deltas.items():
            weighted = torch.tensordot(weights.to(delta.dtype), delta, dims=1)  # one pass, no [C, ...] temporary
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
        self.total += float(weights.sum())

    def result(self):
        return {name: value / self.total for name, value in self.sums.items()}


AGGREGATORS = {"fedavg": FedAvg}


def create_aggregator(name):
    if name not in AGGREGATORS:
        raise LumosError(f"Unknown aggregator '{name}': choose one of {', '.join(AGGREGATORS)}")
    return AGGREGATORS[name]()
