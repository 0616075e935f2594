"""The client side of a round: each client's data and views, its private parameters, its negatives, its local
training. Nothing here chooses clients or combines updates (``server.py`` does).

Every client starts from the shared parameters the server sent and its own private parameters, trains
``local_epochs`` full-batch steps of the model's ``client_loss`` on its own data, and hands over the update of
the SHARED parameters only; its private parameters (``PRIVATE_PREFIXES``: the projection head) go back to its
own row of the private bank, never to the server.

Two exact ways to simulate a cohort of clients (``CohortTrainer``):
  * ``local_update``: every client's own delta, from per-client parameters under ``torch.func.vmap``; any
    number of local steps, SGD or Adam, any aggregation rule. Costs one gradient copy per client.
  * ``summed_update``: with ONE local SGD step and a linear rule (FedAvg), the server only ever needs
    sum_c w_c * delta_c = -lr * grad of sum_c w_c * L_c, which one ordinary backward pass over the flattened
    cohort gives; each private head appears in its own client's loss only, so its gradient still comes out
    per client. The same numbers (tests check), at the cost of a centralised step on the same data.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from recbole.utils import set_color
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_leaves, tree_map

from recbole_lumos.augment import create_view_builder
from recbole_lumos.augment.prefix_views import AlignedPrefixViews
from recbole_lumos.augment.random_views import PerturbedViews
from recbole_lumos.augment.settings import setting, view_seed
from recbole_lumos.data.partition import dominant_labels, partition_clients
from recbole_lumos.errors import LumosError
from recbole_lumos.federated import attacks
from recbole_lumos.federated.client_data import ClientData
from recbole_lumos.model.sequences import random_negatives, shared_negatives

PRIVATE_PREFIXES = ("projection.",)  # kept on each client, never sent to the server


def private_prefixes(config):
    """What each client keeps: the projection head under ``tri_head: private``; nothing when the head is shared
    (a parameter like the backbone's) or the identity (no parameter)."""
    return PRIVATE_PREFIXES if config["tri_head"] in (None, "private") else ()


def is_private(name, prefixes=PRIVATE_PREFIXES):
    return name.startswith(prefixes)


def shared_parameters(model, prefixes=PRIVATE_PREFIXES):
    return {n: p for n, p in model.named_parameters() if not is_private(n, prefixes)}


def chunks(values, size):
    return [values[i : i + size] for i in range(0, len(values), size)]


@dataclass
class ClientUpdate:
    """What leaves a cohort for the server: shared-parameter deltas and sample counts, one row per client
    (or, from ``summed_update``, one row holding the cohort's sample-weighted mean and its total count)."""

    deltas: dict  # {shared name: tensor [C, ...]}
    num_samples: torch.Tensor  # [C]


class _ClientLoss(nn.Module):
    """functional_call calls forward: route it to the model's per-client loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.client_loss(batch)


def _strip(params):
    return {k[len("model.") :]: v for k, v in params.items()}


def cohort_objective(model, batch, heads, client_weight):
    """sum_c w_c * L_c over the clients of a flattened cohort batch, each anchor (and its views and negatives)
    projected by its own client's head. heads {name: [U, ...]}: each anchor's client's head parameters. With
    w_c = the client's target count, the w_c-weighted mean next-item losses add up to the plain sum over all
    targets. Returns (objective, mean rec, mean tri)."""
    own = getattr(model, "cohort_objective", None)  # a model with its own (FedCL4SRec: NT-Xent within each client)
    if own is not None:
        return own(batch, heads, client_weight)
    fast = model.uses_views and getattr(model, "fast_views", False)
    if fast:  # each anchor encoded once, its windows and views read off it (exact: LUMOS.cohort_encoding)
        rec_sum, hidden, future_states = model.cohort_encoding(batch)
    else:
        rec_sum = model.next_item_loss(batch["windows"], reduction="sum")
    rec_mean = rec_sum.detach() / (batch["windows"][:, 1:] > 0).sum().clamp(min=1)
    if not model.uses_views:
        return rec_sum, rec_mean, torch.zeros_like(rec_mean)
    anchor, negatives, owner = batch["anchor"], batch["negatives"], batch["owner"]
    U, K = negatives.shape[:2]
    if fast:
        projected = _grouped_by_kind(_project(model, hidden, heads))
    else:
        hidden, future_states = model.encode_views(anchor, batch["views"], negatives)
        rows = torch.cat([torch.arange(U), torch.arange(U).repeat_interleave(3), torch.arange(U).repeat_interleave(K)])
        projected = _project(model, hidden, {name: value[rows.to(value.device)] for name, value in heads.items()})
    tri = model.tri_view_loss_of_states(F.normalize(projected, dim=-1), anchor, K)
    users = torch.bincount(owner, minlength=len(client_weight)).to(client_weight.dtype)
    objective = rec_sum + model.tri_weight * (tri * (client_weight / users)[owner]).sum()
    if model.future_weight:  # each client's L_future is the mean over its own appended items, as in client_loss
        count = batch["future_count"]
        targets = torch.bincount(owner, weights=count.to(client_weight.dtype), minlength=len(client_weight))
        future = model.future_item_losses(future_states, batch["views"][:, 0], count)
        objective = objective + model.future_weight * (future * (client_weight / targets.clamp(min=1))[owner]).sum()
    return objective, rec_mean, tri.detach().mean()


def _project(model, hidden, heads):
    """hidden [N, ...] through the head of each of its N leading rows (heads {name: [N, ...]}: per anchor, each
    anchor's rows together, or one per row), or through the live model's head without private heads."""
    if heads:
        return vmap(lambda params, h: functional_call(model.projection, params, (h,)))(heads, hidden)
    return model.projection(hidden)


def _grouped_by_kind(states):
    """[U, 4 + K, D] (each anchor's anchor, F, P, N, negatives) -> [U * (4 + K), D] in stack_sequences' order."""
    U, R, D = states.shape
    return torch.cat([states[:, 0], states[:, 1:4].reshape(U * 3, D), states[:, 4:].reshape(U * (R - 4), D)])


def looped(fn, in_dims, randomness=None):
    """vmap's contract by a plain loop over the clients (dim 0), for a model whose ``client_loss`` vmap cannot batch
    (``model.vmap_clients`` False: ``model/federate.py``). Exact; one pass per client."""

    def mapped(*args):
        count = next(leaf.size(0) for arg, dim in zip(args, in_dims) if dim == 0 for leaf in tree_leaves(arg))
        outputs = [fn(*(tree_map(lambda x: x[i], arg) if dim == 0 else arg for arg, dim in zip(args, in_dims)))
                   for i in range(count)]
        return tree_map(lambda *values: torch.stack(values), *outputs)

    return mapped


class CohortTrainer:
    """Local training of a cohort of clients at once (the math; ``Clients`` feeds it)."""

    def __init__(self, model, local_epochs, learner, learning_rate, private=PRIVATE_PREFIXES):
        self.model, self.wrapper, self.private = model, _ClientLoss(model), private
        self.buffers = {f"model.{k}": v for k, v in model.named_buffers()}
        self.local_epochs, self.learner, self.lr = local_epochs, learner, learning_rate

        def loss(shared, private, batch):
            total, rec, tri = functional_call(self.wrapper, ({**shared, **private, **self.buffers},), (batch,))
            return total, torch.stack([rec, tri])

        # Step 1 starts every client from the same shared parameters: keep them unbatched (in_dims None), so the
        # forward pass runs as one batch; the gradients still come out per client.
        per_client = vmap if getattr(model, "vmap_clients", True) else looped
        self.first_grad = per_client(grad(loss, argnums=(0, 1), has_aux=True), in_dims=(None, 0, 0),
                                     randomness="different")
        self.next_grad = per_client(grad(loss, argnums=(0, 1), has_aux=True), in_dims=(0, 0, 0), randomness="different")

    @property
    def can_sum(self):
        return self.local_epochs == 1 and self.learner == "sgd"

    def local_update(self, shared, private, batch, num_samples):
        """shared {name: tensor} (sent by the server); private {name: [C, ...]}; batch {key: [C, ...]}.

        Returns (ClientUpdate with one delta per client, new private parameters [C, ...], mean losses).
        The shared parameters are tracked as start + delta: the delta costs no extra pass over memory.
        """
        start = {f"model.{k}": v for k, v in shared.items()}
        own = {f"model.{k}": v for k, v in private.items()}
        delta, moments = None, {}
        for step in range(1, self.local_epochs + 1):
            if delta is None:
                (shared_grads, private_grads), losses = self.first_grad(start, own, batch)
            else:
                current = {k: start[k] + delta[k] for k in start}
                (shared_grads, private_grads), losses = self.next_grad(current, own, batch)
            change = self._change({**shared_grads, **private_grads}, moments, step)
            delta = {k: change[k] if delta is None else delta[k] + change[k] for k in start}
            own = {k: own[k] + change[k] for k in own}
        return ClientUpdate(_strip(delta), num_samples), {k: v.detach() for k, v in _strip(own).items()}, losses.mean(0)

    def summed_update(self, private, batch, num_samples):
        """One local SGD step for a cohort, handed over as the sample-weighted mean of the clients' deltas.

        batch is the cohort flattened (``ClientData.batch_of_users``, with ``owner``: each anchor's client). It
        reads the shared parameters from the live model, which holds exactly what the server sent this round;
        no per-client copy of anything shared is made: it costs what a centralised step on the same data costs.
        """
        shared = shared_parameters(self.model, self.private)
        heads = {n: v.detach().clone().requires_grad_() for n, v in private.items()}  # [C, ...] per client
        anchor_heads = {n.split(".", 1)[1]: v[batch["owner"]] for n, v in heads.items()}
        objective, rec, tri = cohort_objective(self.model, batch, anchor_heads, num_samples)
        leaves = list(shared.values()) + list(heads.values())
        grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        total = num_samples.sum()
        mean_delta = {
            n: (g if g is not None else torch.zeros_like(p)).mul_(-self.lr / total).unsqueeze(0)
            for (n, p), g in zip(shared.items(), grads)
        }
        new_private = {}
        for (n, head), g in zip(heads.items(), grads[len(shared) :]):  # each came scaled by its client's weight
            step = 0 if g is None else self.lr * g / num_samples.view(-1, *[1] * (g.dim() - 1))
            new_private[n] = (head - step).detach()
        return ClientUpdate(mean_delta, total.view(1)), new_private, torch.stack([rec, tri])

    def _change(self, grads, moments, step, beta1=0.9, beta2=0.999, eps=1e-8):
        """One optimizer step's change of every parameter: plain SGD, or Adam with per-client moments."""
        if self.learner == "sgd":
            return {k: g.mul_(-self.lr) for k, g in grads.items()}  # in place: no new [C, ...] tensors
        change = {}
        for k, g in grads.items():
            m, v = moments.setdefault(k, (torch.zeros_like(g), torch.zeros_like(g)))
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            change[k] = -self.lr * (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + eps)
        return change


class Clients:
    """The simulated client population: who holds which users (partition), each client's data and views, the
    private bank (one row of private parameters per client), negatives, and local training."""

    def __init__(self, config, model, train_dataset, logger):
        self.config, self.model, self.device = config, model, config["device"]
        # share_negatives: the anchors of a summed cohort share their tri_extra_negatives random sequences, which the
        # model then encodes once for the cohort (LUMOS.negative_states); False: each anchor draws its own, as the
        # per-client path and central training always do. "is not False": a config saved before the key read None
        self.share_negatives = config["share_negatives"] is not False
        histories = train_dataset.client_histories()
        if config["noise_ratio"] > 0:  # noisy clients: before any view is built from the histories. The noise is
            # the clients' data, drawn once like their views (view_seed): the seeds vary training alone
            histories = attacks.add_noise(histories, config["noise_ratio"], model.n_items, view_seed(config))
        users = np.array(sorted(histories))
        labels = None
        if config["client_partition"] == "dirichlet":
            field = config["dirichlet_field"] or config["item_genre_field"]
            if field not in train_dataset.item_feat.columns:
                raise LumosError(f"dirichlet_field '{field}' is not an item feature: add it to load_col.item")
            labels = dominant_labels(histories, users, train_dataset.item_feat[field].numpy())
        clients = partition_clients(
            users, config["num_clients"], config["client_partition"], config["dirichlet_alpha"], labels, config["seed"]
        )
        histories, clients = self._add_fake_clients(config, train_dataset, histories, clients, logger)
        self.views, views = None, None
        if model.uses_views:
            self.views = create_view_builder(config, train_dataset)
            # random views are redrawn every round (CL4SRec draws them afresh); generated ones are built once
            views = None if self.redraws_views else self.views.build(histories)
            if setting(config, "views_perturb"):  # generated views, perturbed afresh every round
                if views is None:
                    raise LumosError("views_perturb perturbs generated views: use it with views llm or embedding "
                                     "(random views are redrawn every round already)")
                self.views = PerturbedViews(views, self.views.name, self.views.stats(), model.n_items,
                                            view_seed(config))
                views = None
            if config["tri_anchor"] == "aligned_prefix":  # generated views moved onto a fresh prefix every round
                if views is None:
                    raise LumosError("tri_anchor aligned_prefix moves generated views: use it with views llm or "
                                     "embedding and without views_perturb")
                self.views = AlignedPrefixViews(views, histories, self.views.name, self.views.stats(),
                                                setting(config, "view_window_items"), view_seed(config),
                                                config["MAX_ITEM_LIST_LENGTH"], base=self.views)
                views = None
            logger.info(set_color("views", "blue") + f": {self.views.name} {self.views.stats()}")
        logger.info(set_color("clients", "blue") + f": {len(clients)} holding {len(users)} users")
        self.data = ClientData(histories, clients, views, config["MAX_ITEM_LIST_LENGTH"])
        # one row per client of the parameters only the tri-view loss reads: none when the loss is off (FedSASRec),
        # where the bank would cost clients x head size for nothing (100 MB on ml-1m, 1.7 GB for 100k clients)
        self.private = private_prefixes(config)
        self.private_bank = {
            n: p.detach().unsqueeze(0).repeat(self.data.num_clients, *[1] * p.dim())
            for n, p in model.named_parameters()
            if is_private(n, self.private) and model.uses_views
        }
        self.head_init = {n: p.detach().clone() for n, p in model.projection.named_parameters()}
        self.trainer = CohortTrainer(model, config["local_epochs"], config["local_learner"],
                                     config["local_learning_rate"], self.private)
        self.losses = [0.0, 0.0]

    def _add_fake_clients(self, config, dataset, histories, clients, logger):
        """Malicious clients (``attack``) appended after the real ones, one fabricated user each; and the target
        items, whose exposure (ER@K) the evaluation reports."""
        self.fake, self.targets = set(), None
        if config["attack"] != "none" or config["report_exposure"]:
            self.targets = attacks.resolve_targets(config, dataset, histories, self.model.n_items)
        if config["attack"] == "none":
            return histories, clients
        count = round(config["attack_fraction"] * len(clients))
        fakes = attacks.fake_histories(config["attack"], count, self.targets, histories, self.model.n_items,
                                       config["seed"])
        self.fake = set(range(len(clients), len(clients) + count))
        logger.info(set_color("attack", "blue") + f": {count} fake clients ({config['attack']}, "
                    f"{config['attack_mode']} poisoning), target items {self.targets}")
        return {**histories, **fakes}, clients + [np.array([user]) for user in fakes]

    @property
    def num_clients(self):
        return self.data.num_clients

    @property
    def redraws_views(self):
        return self.views is not None and self.views.redraws

    def redraw_views(self, client_ids, round_idx):
        """Fresh random (or perturbed) views for these clients' users, seeded by (view seed, round, user): a
        resumed run redraws exactly the views it would have drawn."""
        if self.redraws_views:
            histories = {u: self.data.histories[u] for c in client_ids for u in self.data.clients[c]}
            self.data.set_views(self.views.build(histories, round=round_idx))

    def with_negatives(self, batch, generator, shared=False):
        """The batch on the device: its anchors as the model trains them (``tri_anchor``), with
        ``tri_extra_negatives`` random-item sequences per anchor. shared: a flat batch's anchors share them (one
        pool, ``shared_negatives``)."""
        if self.model.uses_views:
            batch["anchor"] = self.model.training_anchors(batch["anchor"], generator)
            count, n_items = self.config["tri_extra_negatives"], self.model.n_items
            if shared and batch["anchor"].dim() == 2:
                batch["negative_pool"], batch["negatives"] = shared_negatives(batch["anchor"], count, n_items,
                                                                              generator)
            else:
                batch["negatives"] = random_negatives(batch["anchor"], count, n_items, generator)
        return {k: v.to(self.device) for k, v in batch.items()}

    def fit(self, client_ids, shared, generator, round_idx, summable):
        """Local training of these clients from the shared parameters the server sent; yields each cohort's
        ClientUpdate. summable: the server's rule is linear, so a cohort may hand over its weighted mean.
        ``self.losses`` holds the mean (rec, tri) over the clients afterwards, ``self.update_order`` the client
        behind each update row sent (per-client path only: the simulation's bookkeeping, not sent)."""
        self.redraw_views(client_ids, round_idx)
        summed = summable and self.config["sum_cohort_updates"] and self.trainer.can_sum
        crafting = [c for c in client_ids if c in self.fake] if self.config["attack_mode"] == "model" else []
        client_ids = [c for c in client_ids if c not in crafting]
        self.update_order = list(crafting)
        if crafting:  # before local training: the live model still holds exactly what the server sent
            yield self.crafted_updates(crafting)
        losses = []
        for cohort in self.data.cohorts(client_ids, self.config["cohort_size"], stacked=not summed):
            if not summed:  # a summed cohort sends one row: no client behind it
                self.update_order += cohort
            private = {k: bank[cohort] for k, bank in self.private_bank.items()}
            weights = self.data.num_samples[cohort].to(self.device)
            if summed:
                batch = self.with_negatives(self.data.batch_of_users(cohort), generator, self.share_negatives)
                update, private, loss = self.trainer.summed_update(private, batch, weights)
            else:
                batch = self.with_negatives(self.data.cohort(cohort), generator)
                update, private, loss = self.trainer.local_update(shared, private, batch, weights)
            for k, value in private.items():  # stays on the client side
                self.private_bank[k][cohort] = value
            losses.append(loss * len(cohort))
            yield update
        if losses:  # a Poisson-sampled round may have no client: the losses of the last round stay
            self.losses = (torch.stack(losses).sum(0) / len(client_ids)).tolist()

    def crafted_updates(self, client_ids):
        """Model poisoning: what these fake clients send, one crafted update each, computed from their own
        fabricated histories, with the sample counts they claim."""
        anchors = torch.cat([self.data.anchor[self.data.client_users[c]] for c in client_ids]).to(self.device)
        scale = self.config["attack_boost"] * self.config["local_learning_rate"]
        shared = shared_parameters(self.model, self.private)
        delta = attacks.crafted_update(self.model, shared, anchors, self.targets, scale)
        rows = {n: d.unsqueeze(0).expand(len(client_ids), *d.shape) for n, d in delta.items()}
        return ClientUpdate(rows, self.data.num_samples[client_ids].to(self.device))

    @torch.no_grad()
    def head_diagnostics(self, generator):
        """Whether the projection head learns (docs/head-study.md).
        head_drift: ||W - W_0|| / ||W_0|| of the head's parameters (private: mean over the real clients);
        heads_trained: the share of those heads that moved at all; tri_loss and tri_loss_initial_head: the mean
        tri-view loss of every real client's data under the current backbone (dropout off, fresh negatives from
        ``generator``) through the heads as trained and through the initial head W_0."""
        real = [c for c in range(self.num_clients) if c not in self.fake]
        initial = self.head_init  # {weight, bias}: the projection's own names
        result = {}
        if initial:
            trained = {n.split(".", 1)[1]: v[real] for n, v in self.private_bank.items()} or {
                n: p.detach().unsqueeze(0) for n, p in self.model.projection.named_parameters()}  # shared: one head
            moved = sum(((v - initial[n]) ** 2).flatten(1).sum(1) for n, v in trained.items()).sqrt()
            size = sum((p**2).sum() for p in initial.values()).sqrt()
            result.update(head_drift=float((moved / size).mean()), heads_trained=float((moved > 0).float().mean()))
        was_training = self.model.training
        self.model.eval()
        sums, anchors = {"tri_loss": 0.0, "tri_loss_initial_head": 0.0}, 0
        for cohort in chunks(real, self.config["cohort_size"]):
            batch = self.with_negatives(self.data.batch_of_users(cohort), generator, self.share_negatives)
            owner, weights = batch["owner"].cpu(), self.data.num_samples[cohort].to(self.device)
            own = {n.split(".", 1)[1]: v[cohort][owner].to(self.device) for n, v in self.private_bank.items()}
            first = {n: p.unsqueeze(0).expand(len(owner), *p.shape) for n, p in initial.items()}
            count = int((batch["anchor"] > 0).any(-1).sum())
            for key, heads in (("tri_loss", own), ("tri_loss_initial_head", first)):  # {}: the live model's head
                sums[key] += float(cohort_objective(self.model, batch, heads, weights)[2]) * count
            anchors += count
        self.model.train(was_training)
        return {**result, **{k: v / max(anchors, 1) for k, v in sums.items()}}
