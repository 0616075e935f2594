"""The fast cohort encoding (LUMOS.fast_views: each anchor encoded once, its windows and views read off it) against the
plain one (every sequence encoded whole): the same losses, gradients and federated updates, dropout off."""
import pytest
import torch

from recbole_lumos.federated.client import cohort_objective
from recbole_lumos.model.sequences import random_negatives, shared_prefix
from tests.test_federated import setup_model

L = 11  # MAX_ITEM_LIST_LENGTH: the tiny users' training histories hold 6 to 38 items, so some are shorter than a
# window, some as long and some longer (several windows, an anchor of its last L items)


def clients_of(data_path, **overrides):
    settings = dict(views="embedding", hidden_dropout_prob=0.0, attn_dropout_prob=0.0, MAX_ITEM_LIST_LENGTH=L,
                    tri_extra_negatives=3)
    config, train, valid, _, model, trainer = setup_model(data_path, **{**settings, **overrides})
    trainer.setup(train._dataset)
    return config, train, valid, model, trainer


def objective_and_gradients(model, batch, heads, weights, fast):
    """cohort_objective's (objective, rec, tri) and the gradient of objective / total weight (a mean loss, as
    summed_update scales it) with respect to every parameter and every head row."""
    model.fast_views = fast
    leaves = [p for _, p in model.named_parameters()] + list(heads.values())
    objective, rec, tri = cohort_objective(model, batch, heads, weights)
    grads = torch.autograd.grad(objective / weights.sum(), leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
    return (objective / weights.sum(), rec, tri), grads


@pytest.mark.parametrize("head,anchoring,future_weight,pooled", [
    ("private", "history", 0.0, True),
    ("private", "history", 0.5, False),
    ("shared", "history", 0.0, True),
    ("identity", "prefix", 0.5, True),
])
def test_fast_encoding_gives_the_plain_losses_and_gradients(tiny_data, in_tmp, one_thread, head, anchoring,
                                                            future_weight, pooled):
    _, _, _, model, trainer = clients_of(tiny_data, tri_head=head, tri_anchor=anchoring, future_weight=future_weight)
    clients = trainer.clients
    ids = list(range(clients.num_clients))
    batch = clients.with_negatives(clients.data.batch_of_users(ids), torch.Generator().manual_seed(0), shared=True)
    if not pooled:  # each anchor its own negatives: encoded one by one
        del batch["negative_pool"]
        batch["negatives"] = random_negatives(batch["anchor"], 3, model.n_items, torch.Generator().manual_seed(1))
    anchor, views = batch["anchor"], batch["views"]
    lengths = torch.tensor([len(clients.data.histories[u]) for c in ids for u in clients.data.clients[c]])
    assert (lengths < L).any() and (lengths == L).any() and (lengths > L).any()
    for index in range(3):  # F, P and N each share a prefix with some anchors (read off the cache), not with others
        shared = shared_prefix(views[:, index], anchor)
        assert (shared > 0).any(), index
    weights = clients.data.num_samples[ids]
    torch.manual_seed(0)
    heads = {n.split(".", 1)[1]: (bank[ids] + 0.1 * torch.randn_like(bank[ids]))[batch["owner"]].requires_grad_()
             for n, bank in clients.private_bank.items()}  # a head of its own per client
    assert bool(heads) == (head == "private")
    model.eval()
    encoded = []
    encode = model.encode
    model.encode = lambda seqs: (encoded.append(len(seqs)), encode(seqs))[1]
    plain, plain_grads = objective_and_gradients(model, batch, heads, weights, fast=False)
    encoded.clear()
    fast, fast_grads = objective_and_gradients(model, batch, heads, weights, fast=True)
    windows_encoded = sum(encoded) - (3 if pooled else 3 * len(anchor))  # the negatives: the rest encoded whole
    if anchoring == "history":  # only the windows of histories longer than a window are encoded again
        assert windows_encoded == sum(len(clients.data.client_windows[c]) for c in ids if lengths[c] > L)
    for a, b in zip(plain, fast):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a, b)
    names = [n for n, _ in model.named_parameters()] + [f"head {n}" for n in heads]
    for name, a, b in zip(names, plain_grads, fast_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (name, (a - b).abs().max())
    if heads:  # each client's head gets its own gradient
        assert all(g.abs().sum() > 0 for g in fast_grads[-len(heads):])


def one_round(data_path, fast):
    """Round 0 of a federated run, seeded as FederatedTrainer.fit seeds it: (updates the server received, the
    private bank after it, the round's mean losses)."""
    config, train, _, model, trainer = clients_of(data_path, client_fraction=1.0)
    model.fast_views = fast
    received, receive = [], trainer.server.receive
    trainer.server.receive = lambda update: (received.append(update), receive(update))
    seed = config["seed"] * 1_000_003
    torch.manual_seed(seed)
    model.train()
    losses = trainer.train_round(0, torch.Generator().manual_seed(seed))
    return received, trainer.clients.private_bank, losses


def test_one_federated_round_sends_the_same_update(tiny_data, in_tmp, one_thread):
    plain, fast = one_round(tiny_data, fast=False), one_round(tiny_data, fast=True)
    assert len(plain[0]) == len(fast[0]) > 1  # several cohorts (cohort_size 8)
    for a, b in zip(plain[0], fast[0]):
        assert torch.equal(a.num_samples, b.num_samples)
        for name in a.deltas:
            assert torch.allclose(a.deltas[name], b.deltas[name], atol=1e-7, rtol=1e-4), name
    for name in plain[1]:
        assert torch.allclose(plain[1][name], fast[1][name], atol=1e-6), name
    assert plain[2] == pytest.approx(fast[2], rel=1e-5)
