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
    model = SimpleNamespace(temperature=tau, views_used=views_used)
    loss = LUMOS.tri_view_loss_of_states(model, states, torch.tensor([[4, 7]]), num_negatives=2)

    def s(i):
        return math.cos(angles[0] - angles[i]) / tau

    negatives = [s(4), s(5)] + ([s(3)] if "counterfactual" in views_used else [])
    expected = sum(-math.log(math.exp(s(i)) / (math.exp(s(i)) + sum(math.exp(n) for n in negatives)))
                   for i, name in ((1, "future"), (2, "rephrase")) if name in views_used)
    assert loss.shape == (1,) and abs(loss.item() - expected) < 1e-5
