"""Federate any RecBole sequential model: ``federate(GRU4Rec)`` registers ``FedGRU4Rec``.

    from recbole.model.sequential_recommender import GRU4Rec
    from recbole_lumos.registry import federate
    federate(GRU4Rec)                 # or federate(GRU4Rec, name="MyFedGRU")

The federated class is the model itself plus the client interface the plugin's federated side calls: a client
trains the MODEL'S OWN ``calculate_loss`` on its own data, each of its windows turned into (prefix, next item)
rows. It trains with the plugin's federated trainer and the settings of FedSASRec (``LUMOS.yaml`` and
``FedSASRec.yaml``: federation, aggregator, server and local learners), over which the model's own RecBole yaml
sets its backbone keys; every parameter is shared (no private head, no views).

Local training: the default (one local SGD step, FedAvg, ``sum_cohort_updates``) sums a cohort's updates in one
backward pass (``CohortTrainer.summed_update``). Every other setting needs each client's own update, which
``torch.func.vmap`` cannot batch here (a client's row count depends on its data, and layers such as ``nn.GRU``
have no vmap rule): those clients are trained one after another (``vmap_clients = False``), the same numbers.
Exact for models whose ``calculate_loss`` is a mean over rows (CE) and reads only the item sequence, its length
and the next item (GRU4Rec, SASRec, NARM, STAMP, Caser, NextItNet, ...); not for models that need item features
or augmented sequences in the batch.
"""
import torch
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_lumos.errors import LumosError
from recbole_lumos.registry import import_user_modules, register_model

_CLASSES = {}  # name -> federated class; module attributes, so that a pickled config (checkpoint) finds its class


class FederatedSequential:
    """Mixin before a RecBole sequential model: what ``federated/client.py`` and ``trainer.py`` read."""

    federated_from = None  # the RecBole model class
    uses_views = False
    tri_weight = 0.0
    future_weight = 0.0
    vmap_clients = False  # CohortTrainer: train the clients of a cohort in a loop

    def __init__(self, config, dataset):
        if config["loss_type"] != "CE":  # BPR needs negative items, which the client side does not sample
            raise LumosError(f"{type(self).__name__} trains with loss_type CE only, got {config['loss_type']}: "
                             "set --loss_type=CE")
        super().__init__(config, dataset)
        config["tri_head"] = "identity"  # no tri-view head: every parameter is shared (private_prefixes)
        if not hasattr(self, "projection"):
            self.projection = nn.Identity()  # the client side reads the head's (absent) parameters

    def prefix_rows(self, windows):
        """One row per target of windows [W, T+1] (right-padded, 0 = padding): (item_seq [N, max_seq_length], the
        window's items before the target, right-padded; item_seq_len [N]; pos_item [N], the target)."""
        inputs, targets = windows[:, :-1], windows[:, 1:]
        T = inputs.size(1)
        positions = torch.arange(T, device=windows.device)
        keep = positions.view(1, T) <= positions.view(T, 1)  # [target t, column j]: row t reads items 0..t
        seqs = inputs.unsqueeze(1) * keep  # [W, T, T]
        valid = targets > 0
        item_seq = nn.functional.pad(seqs[valid], (0, self.max_seq_length - T))
        return item_seq, (positions + 1).expand_as(targets)[valid], targets[valid]

    def next_item_loss(self, windows, reduction="mean"):
        """The model's own ``calculate_loss`` on the rows of ``windows``: its mean over rows, or (``sum``) the sum."""
        item_seq, item_seq_len, pos_item = self.prefix_rows(windows)
        rows = Interaction({self.ITEM_SEQ: item_seq, self.ITEM_SEQ_LEN: item_seq_len, self.POS_ITEM_ID: pos_item})
        try:
            loss = self.calculate_loss(rows)
        except KeyError as e:
            raise LumosError(f"{type(self).__name__}: {self.federated_from.__name__}.calculate_loss reads {e}, which "
                             f"a client's rows lack (they hold {self.ITEM_SEQ}, {self.ITEM_SEQ_LEN}, "
                             f"{self.POS_ITEM_ID} only)") from None
        loss = sum(loss) if isinstance(loss, tuple) else loss  # RecBole's trainer sums a tuple's parts too
        return loss * len(pos_item) if reduction == "sum" else loss

    def client_loss(self, batch):
        """(total, rec, tri) of one client's windows, as LUMOS.client_loss without views."""
        rec = self.next_item_loss(batch["windows"])
        return rec, rec.detach(), torch.zeros_like(rec)

    def last_states(self, item_seq):
        """The sequence representation of right-padded sequences [B, L] (model poisoning reads it)."""
        return self.forward(item_seq, (item_seq > 0).sum(-1).clamp(min=1))


def federate(model_class, name=None):
    """Register and return a federated version of ``model_class`` (a RecBole SequentialRecommender trained with
    the CE loss) called ``name`` (default ``Fed<ModelName>``); the same class again for the same arguments."""
    if not (isinstance(model_class, type) and issubclass(model_class, SequentialRecommender)):
        raise LumosError(f"federate() takes a RecBole sequential model class (a SequentialRecommender subclass), "
                         f"got {model_class!r}")
    name = name or f"Fed{model_class.__name__}"
    if getattr(_CLASSES.get(name), "federated_from", None) is model_class:
        return _CLASSES[name]
    doc = f"Federated {model_class.__name__}: its own loss trained by the clients (recbole_lumos.model.federate)."
    cls = type(name, (FederatedSequential, model_class),
               {"__module__": __name__, "__qualname__": name, "__doc__": doc, "federated_from": model_class})
    register_model(cls)  # first: a name taken by another model is refused before anything is kept
    _CLASSES[name] = cls
    return cls


def __getattr__(name):
    """``recbole_lumos.model.federate.FedGRU4Rec``: how pickle finds a federated class (a checkpoint's config holds
    its model class); in a fresh process the modules ``LUMOS_MODULES`` names create it."""
    if name not in _CLASSES and not name.startswith("__"):
        import_user_modules()
    if name in _CLASSES:
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
