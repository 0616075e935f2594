"""The server side of a Flower round, run by the plugin's own ``Server`` (``federated/server.py``).

``LumosStrategy`` is a Flower ``Strategy``: ``configure_train`` asks our Server which clients to sample and sends
them the shared parameters; ``aggregate_train`` hands every reply to our Server's aggregator and applies the result
with our server optimizer. Sampling, aggregation rule and server step are the in-process ones, so FedAdam, median,
trimmed mean, Krum, norm clipping and DP-FedAvg (its Poisson sampling, clipping and noise) behave the same.

The messages of a round:
  * to a client (``train``): ``arrays`` (the shared parameters), ``config`` (``round``, ``summable``: the rule is
    a weighted mean, so the client may take the one-backward-pass path of ``federated/client.py``);
  * from a client: ``arrays`` (the deltas of the shared parameters, nothing else: a reply with any other key is
    refused) and ``metrics`` (``num-examples``, its sample count; ``rec`` and ``tri``, its mean losses).
Before the first round every SuperNode is asked which client it holds (``query.client``, answered with its
``partition-id``). Evaluation stays on the server (``FlowerTrainer``: RecBole's evaluator), so no
``evaluate`` message is sent.
"""
import time
from logging import getLogger

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from recbole_lumos.errors import LumosError
from recbole_lumos.federated.client import ClientUpdate

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"  # Flower's own record names
WHICH_CLIENT = f"{MessageType.QUERY}.client"


def to_tensors(record):
    """{name: tensor} of an ArrayRecord (a copy: the record's buffers stay read-only)."""
    return {name: torch.from_numpy(array.numpy().copy()) for name, array in record.items()}


def find_clients(grid, expected, timeout=None):
    """{client index: node id} once ``expected`` SuperNodes are connected: each says which client it holds."""
    waited = 0
    while len(nodes := list(grid.get_node_ids())) < expected:  # SuperNodes connect after the ServerApp starts
        if waited % 30 == 0:
            getLogger().info(f"waiting for SuperNodes: {len(nodes)} of {expected} connected")
        time.sleep(1)
        waited += 1
    asked = [Message(RecordDict(), node, WHICH_CLIENT) for node in nodes]
    located = {}
    for reply in grid.send_and_receive(asked, timeout=timeout):
        if reply.has_error():
            raise LumosError(f"SuperNode {reply.metadata.src_node_id} did not say which client it holds: "
                             f"{reply.error.reason}")
        located[int(reply.content[CONFIG]["client"])] = reply.metadata.src_node_id
    if sorted(located) != list(range(len(nodes))):
        raise LumosError(f"{len(nodes)} SuperNodes hold clients {sorted(located)}: each client 0..{len(nodes) - 1} "
                         "must be held by exactly one (its partition-id)")
    return located


class LumosStrategy(Strategy):
    """Our Server's round over Flower's Grid. ``run_round`` is one round, as ``Server.run_round`` is in-process."""

    def __init__(self, server, nodes, timeout=None):
        self.server, self.nodes, self.timeout = server, nodes, timeout  # nodes {client index: node id}
        self.client_of = {node: client for client, node in nodes.items()}
        self.generator, self.sampled, self.losses = None, [], [0.0, 0.0]

    def run_round(self, grid, generator, round_idx):
        """Sample, send, let the clients train, aggregate, apply. Returns the sampled clients."""
        self.generator = generator  # the round's: the same draws as in-process
        arrays = ArrayRecord(self.server.broadcast())
        config = ConfigRecord({"round": round_idx, "summable": self.server.aggregator.linear})
        replies = grid.send_and_receive(self.configure_train(round_idx + 1, arrays, config, grid),
                                        timeout=self.timeout)
        self.aggregate_train(round_idx + 1, replies)
        return self.sampled

    def configure_train(self, server_round, arrays, config, grid):
        self.sampled = self.server.sample_clients(self.generator)
        self.server.bytes_down += len(self.sampled) * arrays.count_bytes()
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        return [Message(content, self.nodes[client], MessageType.TRAIN) for client in self.sampled]

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        for reply in replies:
            if reply.has_error():
                raise LumosError(f"client {self.client_of.get(reply.metadata.src_node_id)} failed in round "
                                 f"{server_round}: {reply.error.reason}")
        if len(replies) < len(self.sampled):
            getLogger().warning(f"round {server_round}: {len(self.sampled) - len(replies)} of {len(self.sampled)} "
                                "sampled clients did not reply in time; aggregating the others")
        position = {client: i for i, client in enumerate(self.sampled)}  # the in-process order of the updates
        replies.sort(key=lambda reply: position[self.client_of[reply.metadata.src_node_id]])
        self.server.aggregator.start()
        losses = []
        for reply in replies:
            self.server.receive(self._update(reply))
            self.server.bytes_up += reply.content[ARRAYS].count_bytes()
            losses.append([reply.content[METRICS]["rec"], reply.content[METRICS]["tri"]])
        self.server.apply(self.server.aggregator.result())
        if losses:  # a Poisson-sampled round may have no client: the losses of the last round stay
            self.losses = torch.tensor(losses).mean(0).tolist()
        return ArrayRecord(self.server.broadcast()), MetricRecord({"rec": self.losses[0], "tri": self.losses[1]})

    def _update(self, reply):
        """A reply as the ClientUpdate our aggregators read (one row); anything but shared deltas is refused."""
        deltas = to_tensors(reply.content[ARRAYS])
        if set(deltas) != set(self.server.params):
            raise LumosError(f"client {self.client_of[reply.metadata.src_node_id]} sent {sorted(deltas)}: "
                             "a reply holds the deltas of the shared parameters, nothing else")
        device = next(iter(self.server.params.values())).device
        rows = {name: delta.to(device).unsqueeze(0) for name, delta in deltas.items()}
        return ClientUpdate(rows, torch.tensor([float(reply.content[METRICS]["num-examples"])], device=device))

    # evaluation stays on the server (RecBole's evaluator in FlowerTrainer): no client evaluates
    def configure_evaluate(self, server_round, arrays, config, grid):
        return []

    def aggregate_evaluate(self, server_round, replies):
        return None

    def summary(self):
        getLogger().info(f"LumosStrategy: {len(self.nodes)} clients, {self.server.per_round} a round, "
                         f"aggregator {type(self.server.aggregator).__name__}")
