"""Aggregation rules: how the server turns the clients' shared-parameter updates into one update.

Updates arrive cohort by cohort (stacked, one row per client); a rule may keep running sums (FedAvg) or
collect everything it needs (the median does). Add a rule to AGGREGATORS to make it configurable.

Only FedAvg is ``linear``: every other rule needs each client's own update, so the client side hands them over
one row per client (the per-client path) whatever ``sum_cohort_updates`` says. What each costs per round:
  * fedavg, norm_clip, dp_fedavg: running sums, memory of one cohort's deltas;
  * median, trimmed_mean, krum: ALL the round's per-client deltas held at once (clients x shared parameters),
    plus a selection over the clients (median, trimmed mean) or a clients x clients distance matrix (Krum).
The robust rules weigh every client equally (one client, one vote: sample counts are the client's own claim).
"""
import math
from logging import getLogger

import torch

from recbole_lumos.errors import LumosError
from recbole_lumos.federated import privacy


class Aggregator:
    linear = False  # True: the result is a weighted mean, so a cohort may hand over its own weighted mean
    poisson_sampling = False  # True: the server samples each client independently (what DP accounting assumes)

    def setup(self, num_clients, client_fraction, per_round, params):
        """Once the client population is known (params: the shared parameters); raise LumosError for a setting
        this round size cannot meet."""

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


def update_norms(deltas):
    """Each client's update norm over all shared parameters together [C]."""
    return torch.sqrt(sum(d.reshape(d.size(0), -1).pow(2).sum(1) for d in deltas.values()))


def clip_updates(deltas, clip_norm):
    """Each client's update scaled down to norm <= clip_norm (a shorter one is kept as it is)."""
    scale = (clip_norm / update_norms(deltas).clamp(min=1e-12)).clamp(max=1.0)
    return {n: d * scale.view(-1, *[1] * (d.dim() - 1)).to(d.dtype) for n, d in deltas.items()}


class NormClip(FedAvg):
    """FedAvg of the updates, each first clipped to norm ``clip_norm`` (Sun et al., 2019): an outlier moves the
    result by at most clip_norm * its weight share. Running sums: memory of one cohort."""

    linear = False  # clipping needs each client's own update

    def __init__(self, clip_norm):
        self.clip_norm = clip_norm

    def add(self, deltas, weights):
        super().add(clip_updates(deltas, self.clip_norm), weights)


class _Collecting(Aggregator):
    """Keeps every client's update of the round: memory = clients per round x shared parameters."""

    def start(self):
        self.rows = {}

    def add(self, deltas, weights):
        for name, delta in deltas.items():
            self.rows.setdefault(name, []).append(delta)

    def stacked(self):
        return {name: torch.cat(parts) for name, parts in self.rows.items()}


def _clients_needed(rule, needed, per_round, what):
    if per_round < needed:
        raise LumosError(f"aggregator {rule} with {what} needs at least {needed} clients per round, got {per_round}: "
                         "raise client_fraction (or num_clients) or lower the setting")


class Median(_Collecting):
    """Coordinate-wise median of the updates (Yin et al., 2018); mean of the two middle values for an even count.
    torch.median selects without sorting (3x faster than a sort over the clients: docs/robustness/amazon-office.md)."""

    def result(self):
        out = {}
        for name, rows in self.stacked().items():
            middle = rows.median(0).values  # for an even count, torch's median is the lower middle value
            if rows.size(0) % 2 == 0:
                middle = (middle - rows.neg().median(0).values) / 2  # ... and minus that of -rows the upper one
            out[name] = middle
        return out


class TrimmedMean(_Collecting):
    """Coordinate-wise mean after dropping the floor(trim_ratio * n) largest and smallest values (Yin et al., 2018)."""

    def __init__(self, trim_ratio):
        self.trim_ratio = trim_ratio

    def setup(self, num_clients, client_fraction, per_round, params):
        # trim_ratio < 0.5 always leaves a value; but a round too small to trim any is no defence: say so
        if math.floor(self.trim_ratio * per_round) == 0:
            getLogger().warning(f"trimmed_mean with trim_ratio {self.trim_ratio} trims nothing from {per_round} "
                                "clients per round (a plain mean): raise trim_ratio or client_fraction")

    def result(self):
        out = {}
        for name, rows in self.stacked().items():
            n, k = rows.size(0), math.floor(self.trim_ratio * rows.size(0))
            if k:  # zero the k largest and the k smallest of each coordinate: two partial selections, no full sort
                kept, largest = rows.clone(), rows.topk(k, 0).indices
                kept.scatter_(0, largest, float("inf"))  # so that, on ties, the smallest k are other clients
                rows = kept.scatter_(0, kept.topk(k, 0, largest=False).indices, 0).scatter_(0, largest, 0)
            out[name] = rows.sum(0) / (n - 2 * k)
        return out


class Krum(_Collecting):
    """(Multi-)Krum (Blanchard et al., 2017): score each update by the summed squared distance to its n - f - 2
    nearest others; the mean of the ``selected`` best-scored updates (1: Krum itself). Needs n >= 2f + 3."""

    def __init__(self, byzantine, selected):
        self.f, self.m = byzantine, selected

    def setup(self, num_clients, client_fraction, per_round, params):
        _clients_needed("krum", max(2 * self.f + 3, self.m), per_round,
                        f"krum_byzantine {self.f}, krum_selected {self.m}")

    def result(self):
        rows = self.stacked()
        flat = [r.reshape(r.size(0), -1) for r in rows.values()]
        gram = sum(x @ x.t() for x in flat)  # pairwise distances from the Gram matrix: no [n, n, D] temporary
        sq = gram.diagonal()
        dist = (sq.view(-1, 1) + sq.view(1, -1) - 2 * gram).clamp(min=0)
        n = dist.size(0)
        nearest = dist.sort(1).values[:, 1 : n - self.f - 1]  # column 0 is the distance to itself
        chosen = nearest.sum(1).argsort()[: self.m]
        self.chosen = chosen.tolist()
        return {name: r[chosen].mean(0) for name, r in rows.items()}


class DPFedAvg(Aggregator):
    """Client-level DP-FedAvg (McMahan et al., 2018) with a trusted server: each client's update clipped to norm
    C = ``clip_norm``, Gaussian noise of std z * C (z = ``dp_noise_multiplier``) added to the SUM of the clipped
    updates, divided by the EXPECTED number of clients q * N. Every client weighs 1, so one client changes the
    sum by at most C: that bounded sensitivity is what the accountant (``privacy.py``) assumes, with clients
    sampled independently with probability q = client_fraction (Poisson) each round. Memory: one cohort."""

    poisson_sampling = True

    def __init__(self, clip_norm, noise_multiplier, delta, target_epsilon=None, rounds=None):
        self.clip_norm, self.noise_multiplier, self.delta = clip_norm, noise_multiplier, delta
        self.target_epsilon, self.rounds = target_epsilon, rounds

    def setup(self, num_clients, client_fraction, per_round, params):
        self.sample_rate, self.expected = client_fraction, client_fraction * num_clients
        self.delta = 1.0 / num_clients if self.delta is None else self.delta
        if self.target_epsilon is not None:  # dp_epsilon: the noise with which the round budget spends it
            self.noise_multiplier = privacy.noise_multiplier(self.target_epsilon, self.sample_rate, self.rounds,
                                                             self.delta)
        self.params = params

    def start(self):
        # zeros to start from: under Poisson sampling a round may have no client, and still releases noise
        self.sums = {n: torch.zeros_like(p, requires_grad=False) for n, p in self.params.items()}

    def add(self, deltas, weights):
        for name, delta in clip_updates(deltas, self.clip_norm).items():
            self.sums[name] += delta.sum(0)

    def noisy_sum(self):
        """The sum of the clipped updates plus N(0, (z C)^2) on every coordinate."""
        std = self.noise_multiplier * self.clip_norm
        return {n: s + torch.randn_like(s) * std for n, s in self.sums.items()}

    def result(self):
        return {n: s / self.expected for n, s in self.noisy_sum().items()}

    def privacy(self, rounds):
        """What ``rounds`` rounds spent, by the accountant of a maintained library."""
        epsilon = privacy.epsilon(self.noise_multiplier, self.sample_rate, rounds, self.delta)
        return {"epsilon": epsilon, "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "clip_norm": self.clip_norm, "sample_rate": self.sample_rate, "rounds": rounds,
                "accountant": privacy.ACCOUNTANT}


AGGREGATORS = {
    "fedavg": lambda config: FedAvg(),
    "median": lambda config: Median(),
    "trimmed_mean": lambda config: TrimmedMean(config["trim_ratio"]),
    "krum": lambda config: Krum(config["krum_byzantine"], config["krum_selected"]),
    "norm_clip": lambda config: NormClip(config["clip_norm"]),
    "dp_fedavg": lambda config: DPFedAvg(config["clip_norm"], config["dp_noise_multiplier"], config["dp_delta"],
                                         config["dp_epsilon"], config["epochs"]),
}


def create_aggregator(config):
    name = config["aggregator"]
    if name not in AGGREGATORS:
        raise LumosError(f"Unknown aggregator '{name}': choose one of {', '.join(AGGREGATORS)}")
    return AGGREGATORS[name](config)
