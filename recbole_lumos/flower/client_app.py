"""The client side of a Flower round: one client's local update, by the plugin's own client code
(``federated/client.py``: its data, views, negatives and local training).

A SuperNode holds one client (its ``partition-id``). Its private parameters (the projection head under
``tri_head: private``) live in the ClientApp's ``Context.state``, which stays on the SuperNode: they are read
before and written back after each local update and go into no message. What the client sends is what an
in-process client hands the server: the deltas of the shared parameters and its sample count (``strategy.py``).

``client_app(load)`` builds the ClientApp; ``load(context)`` returns the ``LocalClient`` that serves this
SuperNode (the simulation's loader is in ``engine.py``; a device writes its own, docs/flower.md).
"""
from logging import getLogger

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from recbole_lumos.federated.client import Clients
from recbole_lumos.flower.strategy import ARRAYS, CONFIG, METRICS, to_tensors

HEAD = "private-head"  # the Context.state record of the client's private parameters


class LocalClient:
    """A model and the client side (``Clients``) of the clients this process serves: the shared parameters
    arrive with every round, each client's private ones come from its own Context.state."""

    def __init__(self, config, model, dataset):
        self.config, self.model = config, model
        self.clients = Clients(config, model, dataset, getLogger())

    def train(self, client, shared, round_idx, summable, head=None):
        """One local update of ``client`` from the ``shared`` parameters the server sent, starting from its private
        ``head`` (None: the initial one). Returns (ClientUpdate of one row, the trained head, [rec, tri] losses)."""
        bank = self.clients.private_bank
        with torch.no_grad():  # the live model holds what the server sent (the summed path reads it from there)
            for name, param in self.model.named_parameters():
                if name in shared:
                    param.copy_(shared[name])
            for name, value in (head or {}).items():
                bank[name][client] = value
        # the client's own randomness (dropout, negatives), from (seed, round, client): whichever process runs it
        seed = ((self.config["seed"] * 1_000_003 + round_idx) * 1_000_003 + client) % 2**63
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        shared = {name: value.to(self.config["device"]) for name, value in shared.items()}
        self.model.train()
        [update] = self.clients.fit([client], shared, generator, round_idx, summable)
        return update, {name: rows[client].clone() for name, rows in bank.items()}, self.clients.losses


def client_of(context):
    return int(context.node_config["partition-id"])


def client_app(load):
    """The ClientApp: ``query.client`` answers which client this SuperNode holds; ``train`` runs its local update."""
    app = ClientApp()

    @app.query("client")
    def which_client(message, context):
        load(context)  # the client side is built before the first round, not inside it
        return Message(RecordDict({CONFIG: ConfigRecord({"client": client_of(context)})}), reply_to=message)

    @app.train()
    def train(message, context):
        local, config = load(context), message.content[CONFIG]
        head = to_tensors(context.state[HEAD]) if HEAD in context.state else None
        update, head, losses = local.train(client_of(context), to_tensors(message.content[ARRAYS]),
                                           int(config["round"]), bool(config["summable"]), head)
        if head:
            context.state[HEAD] = ArrayRecord(head)  # stays on this SuperNode
        deltas = ArrayRecord({name: rows[0] for name, rows in update.deltas.items()})
        metrics = MetricRecord({"num-examples": float(update.num_samples.sum()), "rec": float(losses[0]),
                                "tri": float(losses[1])})
        return Message(RecordDict({ARRAYS: deltas, METRICS: metrics}), reply_to=message)

    return app
