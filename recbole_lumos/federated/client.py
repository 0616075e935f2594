"""The client side of a round: local training of a cohort of clients at once.

Every client starts from the shared parameters the server sent and its own private parameters, trains
``local_epochs`` full-batch steps on its own data, and hands over the update of the SHARED parameters only;
its private parameters go back to its own store (the trainer's ``private_bank``), never to the server.

Two exact ways to simulate a cohort:
  * ``local_update``: every client's own delta, from per-client parameters under ``torch.func.vmap``; any
    number of local steps, SGD or Adam, any aggregation rule. Costs one gradient copy per client.
  * ``summed_update``: with ONE local SGD step and a linear rule (FedAvg), the server only ever needs
    sum_c w_c * delta_c = -lr * grad of sum_c w_c * L_c, which one ordinary backward pass over the flattened
    cohort gives; each private head appears in its own client's loss only, so its gradient still comes out
    per client. The same numbers (tests check), at the cost of a centralised step on the same data.
"""
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from recbole_lumos.errors import LumosError


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


class CohortTrainer:
    def __init__(self, model, local_epochs, learner, learning_rate):
        if learner not in ("sgd", "adam"):
            raise LumosError(f"local_learner must be 'sgd' or 'adam', got {learner!r}")
        if local_epochs < 1 or learning_rate <= 0:
            raise LumosError(f"local_epochs must be >= 1 and local_learning_rate > 0, got {local_epochs}, {learning_rate}")
        self.wrapper = _ClientLoss(model)
        self.buffers = {f"model.{k}": v for k, v in model.named_buffers()}
        self.local_epochs, self.learner, self.lr = local_epochs, learner, learning_rate

        def loss(shared, private, batch):
            total, rec, tri = functional_call(self.wrapper, ({**shared, **private, **self.buffers},), (batch,))
            return total, torch.stack([rec, tri])

        # Step 1 starts every client from the same shared parameters: keep them unbatched (in_dims None), so the
        # forward pass runs as one batch; the gradients still come out per client.
        self.first_grad = vmap(grad(loss, argnums=(0, 1), has_aux=True), in_dims=(None, 0, 0), randomness="different")
        self.next_grad = vmap(grad(loss, argnums=(0, 1), has_aux=True), in_dims=(0, 0, 0), randomness="different")

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

        batch is the cohort flattened (``ClientData.batch_of_users``, with ``owner``: each anchor's client);
        no per-client copy of anything shared is made: it costs what a centralised step on the same data costs.
        """
        model = self.wrapper.model
        shared = {n: p for n, p in model.named_parameters() if not model.is_private(n)}
        heads = {n: v.detach().clone().requires_grad_() for n, v in private.items()}  # [C, ...] per client
        anchor_heads = {n.split(".", 1)[1]: v[batch["owner"]] for n, v in heads.items()}
        objective, rec, tri = model.cohort_objective(batch, anchor_heads, num_samples)
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
