"""LUMOS as a RecBole model: calculate_loss is the whole objective, so RecBole's own Trainer trains it."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.trainer import Trainer

from recbole_lumos.augment.random_views import RandomViewBuilder
from recbole_lumos.augment.settings import view_seed
from recbole_lumos.model.lumos import LUMOS
from tests.test_federated import setup_model


def projected(model, seqs):
    """h = normalize(projection(SASRec's last-position output)): computed through SASRec.forward, not LUMOS."""
    seqs = torch.as_tensor(seqs)
    return F.normalize(model.projection(SASRec.forward(model, seqs, (seqs > 0).sum(-1))), dim=-1)


def pad(items, width):
    items = list(items)[-width:]
    return items + [0] * (width - len(items))


def test_calculate_loss_is_next_item_loss_plus_weighted_tri_view_loss(tiny_data, in_tmp):
    config, train, _, _, model, _ = setup_model(tiny_data, tri_weight=0.5, tri_extra_negatives=0,
                                                hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    interaction = next(iter(train))
    rec, weighted_tri = model.calculate_loss(interaction)
    assert torch.allclose(rec, SASRec.calculate_loss(model, interaction))  # L_rec is SASRec's loss

    # L_tri by hand: anchor = the user's training history, views from the same seeded random builder,
    # s = cos / tau, the counterfactual view the only negative (tri_extra_negatives 0)
    histories = train._dataset.client_histories()
    views = RandomViewBuilder(model.n_items, seed=view_seed(config)).build(histories)
    L, tau = config["MAX_ITEM_LIST_LENGTH"], config["tri_temperature"]
    per_row = []
    for user in interaction["user_id"].tolist():
        v = views[user]
        h = projected(model, [pad(s, L) for s in (histories[user], v.future, v.rephrase, v.counterfactual)])
        s = (h[0] * h[1:]).sum(-1) / tau
        per_row.append(sum(-torch.log(torch.exp(s[i]) / (torch.exp(s[i]) + torch.exp(s[2]))) for i in (0, 1)))
    expected_tri = torch.stack(per_row).mean()
    assert torch.allclose(weighted_tri, 0.5 * expected_tri, atol=1e-5)
    assert weighted_tri > 0  # so the total differs from SASRec's


def test_views_off_is_exactly_sasrec(tiny_data, in_tmp):
    _, train, _, _, model, _ = setup_model(tiny_data, model="FedSASRec", hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    interaction = next(iter(train))
    assert torch.equal(model.calculate_loss(interaction), SASRec.calculate_loss(model, interaction))


def test_recbole_stock_trainer_trains_the_tri_view_loss(tiny_data, in_tmp):
    """Only the tri-view loss reaches the projection head: RecBole's own Trainer moves it for LUMOS (so it trains
    the whole objective), and leaves it alone for FedSASRec (next-item loss only)."""
    for model_name, moves in (("LUMOS", True), ("FedSASRec", False)):
        config, train, _, _, model, _ = setup_model(tiny_data, model=model_name, epochs=1)
        before = model.projection.weight.detach().clone()
        Trainer(config, model).fit(train, saved=False)
        assert (not torch.equal(before, model.projection.weight.detach())) == moves, model_name


@pytest.mark.parametrize("views_used", [["future", "rephrase", "counterfactual"], ["rephrase", "counterfactual"],
                                        ["future", "counterfactual"], ["future", "rephrase"]])
def test_tri_view_loss_is_the_design_formula_for_every_ablation(views_used):
    """DESIGN.md: L_tri = - sum_{v in F, P} log(e^s(h,h_v) / (e^s(h,h_v) + e^s(h,h_N) + sum_j e^s(h,h_j))), with
    N in the denominator only when the counterfactual view is used; hand-computed on unit vectors in the plane."""
    tau, angles = 0.5, [0.0, 0.3, 0.8, 2.0, 1.2, 2.8]  # h, h_F, h_P, h_N, then two extra negatives h_j
    states = torch.tensor([[math.cos(a), math.sin(a)] for a in angles])
    model = SimpleNamespace(temperature=tau, views_used=views_used, anchor_gradient=True, view_gradient=True)
    loss = LUMOS.tri_view_loss_of_states(model, states, torch.tensor([[4, 7]]), num_negatives=2)

    def s(i):
        return math.cos(angles[0] - angles[i]) / tau

    negatives = [s(4), s(5)] + ([s(3)] if "counterfactual" in views_used else [])
    expected = sum(-math.log(math.exp(s(i)) / (math.exp(s(i)) + sum(math.exp(n) for n in negatives)))
                   for i, name in ((1, "future"), (2, "rephrase")) if name in views_used)
    assert loss.shape == (1,) and abs(loss.item() - expected) < 1e-5


def test_future_loss_is_the_next_item_loss_of_the_appended_items(tiny_data, in_tmp):
    """L_future by hand: each item F appends is predicted from SASRec's output on the prefix before it; nothing
    before the continuation is a target, a user whose F appends nothing adds 0, and a long history's F (cut to
    its last L items) keeps its continuation at the end."""
    config, _, _, _, model, _ = setup_model(tiny_data, views="embedding", future_weight=0.5,
                                            hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    L = config["MAX_ITEM_LIST_LENGTH"]
    rows = [([3, 7, 5, 9], [11, 2, 4]), ([6, 8], [12]), ([6, 8, 1], []), (list(range(1, 10)), [13, 14, 15])]
    future = torch.tensor([pad(history + appended, L) for history, appended in rows])
    counts = torch.tensor([len(appended) for _, appended in rows])
    model.eval()
    got = model.future_item_losses(model.encode(future), future, counts)
    for row, (_, appended) in enumerate(rows):
        window = (rows[row][0] + appended)[-L:]
        expected = torch.tensor(0.0)
        for j in range(len(window) - len(appended), len(window)):  # the appended items' positions
            prefix = torch.tensor([pad(window[:j], L)])
            logits = SASRec.forward(model, prefix, torch.tensor([j])) @ model.item_embedding.weight.t()
            expected = expected + F.cross_entropy(logits, torch.tensor([window[j]]))
        assert torch.allclose(got[row], expected, atol=1e-5), row
    assert got[2] == 0 and (got[[0, 1, 3]] > 0).all()


def test_the_generated_continuation_reaches_the_loss_end_to_end(tiny_data, in_tmp):
    """Embedding views through the federated client side: every user's F appends view_future_items items, the
    client tables hold them after the user's own history, and L_future adds its weighted mean to the objective."""
    config, train, _, _, model, trainer = setup_model(tiny_data, views="embedding", future_weight=0.5, tri_weight=0.0,
                                                      hidden_dropout_prob=0.0, attn_dropout_prob=0.0,
                                                      MAX_ITEM_LIST_LENGTH=50)  # no F is cut: it starts with the anchor
    trainer.setup(train._dataset)
    data = trainer.clients.data
    for user, row in data.user_row.items():  # F appends 3 items the user has not seen (user 0 has seen all but 2)
        unseen = model.n_items - 1 - len(set(data.histories[user].tolist()))
        assert data.future_count[row] == min(config["view_future_items"], unseen)
    batch = trainer.clients.with_negatives(data.batch_of_users([1, 2, 3]), torch.Generator().manual_seed(0))
    anchor, future = batch["anchor"], batch["views"][:, 0]
    for row in range(len(anchor)):
        n = int((anchor[row] > 0).sum())
        assert torch.equal(future[row, :n], anchor[row, :n]) and (future[row, n : n + 3] > 0).all()
    model.eval()
    with_future = model.client_loss(batch)[0]
    model.future_weight = 0.0
    without = model.client_loss(batch)[0]
    model.future_weight = 0.5
    _, future_states = model.encode_views(anchor, batch["views"], batch["negatives"])
    mean_future = model.future_item_losses(future_states, future, batch["future_count"]).sum() / (3 * len(anchor))
    assert torch.allclose(with_future - without, 0.5 * mean_future, atol=1e-5) and mean_future > 0


def test_central_training_adds_the_future_loss_as_a_third_part(tiny_data, in_tmp):
    """calculate_loss (RecBole's trainer, federated off) holds L_future as its own logged part: the batch users'
    appended items, weighted."""
    _, train, _, _, model, _ = setup_model(tiny_data, views="embedding", future_weight=0.5, federated=False,
                                           hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    interaction = next(iter(train))
    parts = model.calculate_loss(interaction)
    assert len(parts) == 3 and parts[2] > 0
    users = interaction["user_id"]
    assert (model.future_count[users] > 0).all()  # every batch user's F continues its history


@pytest.mark.parametrize("change, message", [
    ({"tri_views": ["future", "rephrase"], "tri_extra_negatives": 0}, "the tri-view loss has no negative"),
    ({"tri_views": ["counterfactual"]}, "has no positive view"),
])
def test_a_model_built_outside_the_command_line_refuses_a_constant_tri_view_loss(tiny_data, in_tmp, change, message):
    """The CLI's config check is not the only guard: LUMOS itself refuses a tri-view loss that could not train."""
    from recbole_lumos.errors import LumosError

    config, train, *_ = setup_model(tiny_data, tri_weight=0.5)
    for key, value in change.items():
        config[key] = value  # after the CLI's checks, as a script building its own Config would
    with pytest.raises(LumosError, match=message):
        LUMOS(config, train._dataset)
