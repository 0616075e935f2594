"""The server side of a round: sample clients, send the shared parameters, aggregate their updates, apply.

The server only ever holds the shared parameters and receives ``ClientUpdate``s (shared-parameter deltas and
sample counts). Applying the aggregated delta goes through an ordinary torch optimizer over the shared
parameters, with the negated delta as the gradient: ``learner: sgd`` with ``learning_rate: 1`` is plain FedAvg,
``learner: adam`` is FedAdam (Reddi et al., 2021), RecBole's own ``learner``/``learning_rate`` keys.
A robust aggregator is a new rule in ``aggregators.py``; a defence that screens updates goes in ``receive``.
DP-FedAvg's clipping and noise are its aggregator's (a trusted server); the server then samples each client
independently with probability ``client_fraction`` (Poisson), the sampling its privacy accounting assumes.
"""
import torch


class Server:
    def __init__(self, shared_params, aggregator, optimizer, num_clients, client_fraction):
        self.params = shared_params  # {name: nn.Parameter} of the global model
        self.aggregator, self.optimizer = aggregator, optimizer
        self.num_clients = num_clients
        self.client_fraction = client_fraction
        self.per_round = max(1, round(client_fraction * num_clients))
        self.bytes_down = self.bytes_up = 0
        aggregator.setup(num_clients, client_fraction, self.per_round, shared_params)

    def sample_clients(self, generator):
        if self.aggregator.poisson_sampling:  # each client independently: the round size varies (may be 0)
            drawn = torch.rand(self.num_clients, generator=generator) < self.client_fraction
            return torch.nonzero(drawn).flatten().tolist()
        return torch.randperm(self.num_clients, generator=generator)[: self.per_round].tolist()

    def broadcast(self):
        """The shared parameters, as sent to every sampled client."""
        return {name: p.detach().clone() for name, p in self.params.items()}

    def payload_bytes(self):
        return sum(p.numel() * p.element_size() for p in self.params.values())

    def receive(self, update):
        self.aggregator.add(update.deltas, update.num_samples)

    def apply(self, delta):
        """One server-optimizer step along the aggregated delta."""
        self.optimizer.zero_grad(set_to_none=True)
        for name, p in self.params.items():
            p.grad = -delta[name]
        self.optimizer.step()

    def run_round(self, clients, generator, round_idx):
        """One round: sample, broadcast, let the clients train, aggregate, apply. Returns the sampled clients."""
        sampled = self.sample_clients(generator)
        sent = self.broadcast()
        self.aggregator.start()
        for update in clients.fit(sampled, sent, generator, round_idx, summable=self.aggregator.linear):
            self.receive(update)
        self.apply(self.aggregator.result())
        self.bytes_down += len(sampled) * self.payload_bytes()
        self.bytes_up += len(sampled) * self.payload_bytes()
        return sampled
