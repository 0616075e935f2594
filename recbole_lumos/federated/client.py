"""The client side of a round: local training of a cohort of clients at once.

Every client starts from the shared parameters the server sent and its own private parameters, trains
``local_epochs`` full-batch steps on its own data, and returns the update of the SHARED parameters only; its
private parameters stay on the client (``private_out`` goes back to the client's own store, not the server).
A cohort is simulated exactly and in parallel with ``torch.func.vmap`` over stacked copies of the parameters:
the same result as looping over clients one by one, without copying the model per client.
"""
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from recbole_lumos.errors import LumosError


@dataclass
class ClientUpdate:
    """What leaves the clients of a cohort for the server: shared-parameter deltas and sample counts."""

    deltas: dict  # {shared name: tensor [C, ...]}
    num_samples: torch.Tensor  # [C]


class _ClientLoss(nn.Module):
    """functional_call calls forward: route it to the model's per-client loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.client_loss(batch)


class CohortTrainer:
    def __init__(self, model, local_epochs, learner, learning_rate):
        if learner not in ("sgd", "adam"):
            raise LumosError(f"local_learner must be 'sgd' or 'adam', got {learner!r}")
        self.wrapper = _ClientLoss(model)
        self.buffers = {f"model.{k}": v for k, v in model.named_buffers()}
        self.local_epochs, self.learner, self.lr = local_epochs, learner, learning_rate

        def loss(shared, private, batch):
            params = {**shared, **private, **self.buffers}
            total, rec, tri = functional_call(self.wrapper, (params,), (batch,))
            return total, torch.stack([rec, tri])

        # Step 1 starts every client from the same shared parameters: keep them unbatched (in_dims None), so
        # the forward pass runs as one batch; per-client gradients still come out per client.
        self.first_grad = vmap(grad(loss, argnums=(0, 1), has_aux=True), in_dims=(None, 0, 0), randomness="different")
        self.next_grad = vmap(grad(loss, argnums=(0, 1), has_aux=True), in_dims=(0, 0, 0), randomness="different")

    def local_update(self, shared, private, batch, num_samples):
        """shared {name: tensor} (sent by the server); private {name: [C, ...]}; batch {key: [C, ...]}.

        Returns (ClientUpdate, new private parameters [C, ...], mean losses [rec, tri]).
        """
        start = {f"model.{k}": v for k, v in shared.items()}
        params = [start, {f"model.{k}": v for k, v in private.items()}]
        moments = None
        for step in range(1, self.local_epochs + 1):
            grad_fn = self.first_grad if step == 1 else self.next_grad
            (shared_grads, private_grads), losses = grad_fn(params[0], params[1], batch)
            if step == 1:  # from here on each client's copy differs
                params[0] = {k: v.expand(num_samples.numel(), *v.shape) for k, v in start.items()}
            if moments is None and self.learner == "adam":
                moments = [{k: (torch.zeros_like(g), torch.zeros_like(g)) for k, g in group.items()} for group in (shared_grads, private_grads)]
            params = [self._step(group, grads, moments and moments[i], step) for i, (group, grads) in enumerate(zip(params, (shared_grads, private_grads)))]
        deltas = {k: params[0][f"model.{k}"] - v for k, v in shared.items()}
        new_private = {k: params[1][f"model.{k}"].detach() for k in private}
        return ClientUpdate(deltas, num_samples), new_private, losses.mean(0)

    def _step(self, params, grads, moments, step, beta1=0.9, beta2=0.999, eps=1e-8):
        if moments is None:
            return {k: p - self.lr * grads[k] for k, p in params.items()}
        updated = {}
        for k, p in params.items():
            m, v = moments[k]
            m.mul_(beta1).add_(grads[k], alpha=1 - beta1)
            v.mul_(beta2).addcmul_(grads[k], grads[k], value=1 - beta2)
            m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
            updated[k] = p - self.lr * m_hat / (v_hat.sqrt() + eps)
        return updated
