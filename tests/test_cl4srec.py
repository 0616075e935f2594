"""CL4SRec (model/cl4srec.py): NT-Xent against its formula, the paper's three augmentations, a centralised run by
RecBole's own Trainer, and FedCL4SRec, whose contrastive batch is each client's own sequences."""
import logging
import math
import re

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lumos import registry
from recbole_lumos.errors import LumosError
from recbole_lumos.federated.client import cohort_objective
from recbole_lumos.model.cl4srec import CL4SRec, crop, mask, nt_xent, reorder, window_owner
from recbole_lumos.quick_start import build_config, run
from tests.conftest import tiny_settings

pytestmark = pytest.mark.usefixtures("one_thread")
MASK = 99


def rows_of_every_length(width=12):
    """Rows of 1..width distinct items (10, 11, ...), right-padded to width + 2."""
    return torch.tensor([list(range(10, 10 + n)) + [0] * (width + 2 - n) for n in range(1, width + 1)])


def setup_model(data_path, model, **overrides):
    config = build_config(model, "tiny", config_dict=tiny_settings(data_path, **overrides))
    init_seed(config["seed"], True)
    train, *_ = data_preparation(config, create_dataset(config))
    model_obj = registry.get_model(model)(config, train._dataset)
    return config, train, model_obj, registry.get_trainer(config["MODEL_TYPE"], model)(config, model_obj)


@pytest.mark.parametrize("similarity,temperature", [("dot", 1.0), ("cos", 0.5)])
def test_nt_xent_is_its_formula(similarity, temperature):
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    z = torch.cat([z1, z2])

    def sim(a, b):
        return float(a @ b / (a.norm() * b.norm()) if similarity == "cos" else a @ b) / temperature

    N, losses = 4, []
    for i in range(2 * N):
        j = (i + N) % (2 * N)  # the other augmentation of the same sequence
        denominator = sum(math.exp(sim(z[i], z[k])) for k in range(2 * N) if k != i)
        losses.append(-math.log(math.exp(sim(z[i], z[j])) / denominator))
    got = nt_xent(z1[None], z2[None], temperature, similarity)
    assert got.shape == (1,) and got.item() == pytest.approx(np.mean(losses), rel=1e-5)
    # a group reads its own rows only: padding rows (valid False) are neither anchors nor negatives
    padded = [torch.cat([x, torch.randn(3, 5, generator=generator)])[None] for x in (z1, z2)]
    valid = torch.tensor([[True] * 4 + [False] * 3])
    assert nt_xent(*padded, temperature, similarity, valid).item() == pytest.approx(got.item(), rel=1e-5)


def test_crop_keeps_floor_eta_n_consecutive_items():
    rows = rows_of_every_length()
    generator = torch.Generator().manual_seed(1)
    starts = set()
    for _ in range(50):
        out = crop(rows, 0.6, generator)
        for row, got in zip(rows.tolist(), out.tolist()):
            items = [x for x in row if x]
            keep = max(1, math.floor(0.6 * len(items)))
            assert got[keep:] == [0] * (len(got) - keep)  # left-aligned, then padding
            assert got[:keep] == items[got[0] - 10 : got[0] - 10 + keep]  # a contiguous stretch
            starts.add((len(items), got[0]))
    assert {(12, 10 + s) for s in range(12 - 7 + 1)} <= starts  # every start of a 12-item row drawn


def test_mask_replaces_floor_gamma_n_items_by_the_mask_token():
    rows = rows_of_every_length()
    generator = torch.Generator().manual_seed(2)
    masked_positions = set()
    for _ in range(50):
        out = mask(rows, 0.3, MASK, generator)
        for row, got in zip(rows.tolist(), out.tolist()):
            n = sum(x > 0 for x in row)
            assert sum(x == MASK for x in got) == math.floor(0.3 * n)
            assert all(g == r for g, r in zip(got, row) if g != MASK)  # the others (and the padding) untouched
            masked_positions |= {(n, i) for i, g in enumerate(got) if g == MASK}
    assert {(12, i) for i in range(12)} <= masked_positions  # any position may be masked


def test_reorder_shuffles_floor_beta_n_consecutive_items_and_keeps_the_multiset():
    rows = rows_of_every_length()
    generator = torch.Generator().manual_seed(3)
    orders = set()
    for _ in range(50):
        out = reorder(rows, 0.6, generator)
        for row, got in zip(rows.tolist(), out.tolist()):
            n = sum(x > 0 for x in row)
            assert sorted(got) == sorted(row) and got[n:] == row[n:]  # the same items; padding stays
            moved = [i for i in range(n) if got[i] != row[i]]
            assert not moved or moved[-1] - moved[0] < math.floor(0.6 * n)  # within one stretch of that length
            if n == 12:
                orders.add(tuple(got))
    assert len(orders) > 40  # shuffled afresh at each draw


def test_two_augmentations_per_sequence_each_drawn_from_torch_rng(tiny_data, in_tmp):
    _, _, model, _ = setup_model(tiny_data, "CL4SRec")
    rows = rows_of_every_length(width=10)[4:]  # 5..10 items: every operation changes the row or its length
    torch.manual_seed(7)
    first = model.augment(rows)
    torch.manual_seed(7)
    assert all(torch.equal(a, b) for a, b in zip(first, model.augment(rows)))  # seeded by torch's RNG
    kinds = []
    for view in first:
        for row, got in zip(rows.tolist(), view.tolist()):
            n = sum(x > 0 for x in row)
            kinds.append("mask" if model.mask_token in got else "crop" if sum(x > 0 for x in got) < n else "reorder")
    assert model.mask_token == model.n_items and model.item_embedding.num_embeddings == model.n_items + 1
    assert len(set(kinds)) > 1  # drawn per row, not one operation for the batch


def test_cl4srec_trains_with_recboles_own_trainer_and_logs_both_losses(tiny_data, in_tmp, caplog):
    from recbole.data.dataset import SequentialDataset
    from recbole.trainer import Trainer

    config, train, model, trainer = setup_model(tiny_data, "CL4SRec")
    assert isinstance(trainer, Trainer) and type(trainer).__name__ == "Trainer"  # RecBole's (made resumable)
    assert type(train._dataset) is SequentialDataset and "CL4SRec" not in registry.plugin_models()
    rec, cl = model.calculate_loss(next(iter(train)))
    assert rec > 0 and cl > 0 and config["cl_weight"] == 0.1
    caplog.set_level(logging.INFO)
    result = run("CL4SRec", "tiny", config_dict=tiny_settings(tiny_data, epochs=1, state="INFO"))
    assert all(math.isfinite(v) for v in result["test_result"].values())
    assert result["checkpoint"] and {"hit@10", "ndcg@20"} <= set(result["test_result"])
    log = re.sub(r"\x1b\[[0-9;]*m", "", caplog.text)
    parts = re.findall(r"train_loss1: ([0-9.]+), train_loss2: ([0-9.]+)", log)
    assert parts and all(float(rec) > 0 and float(cl) > 0 for rec, cl in parts)


def test_fed_cl4srec_trains_two_rounds_federated(tiny_data, in_tmp):
    result = run("FedCL4SRec", "tiny", config_dict=tiny_settings(tiny_data, epochs=2))
    assert len(result["valid_curve"]) == 2 and all(math.isfinite(v) for v in result["test_result"].values())


def deterministic_augment(model):
    """Two augmentations that depend on the row alone (so that a cohort and its clients one by one draw the same):
    the row without its first item, and the row with its last item masked."""

    def augment(seqs):
        n = (seqs > 0).sum(-1, keepdim=True)
        dropped = torch.cat([seqs[:, 1:], seqs[:, :1] * 0], 1)
        dropped = torch.where(n > 1, dropped, seqs)
        last = torch.arange(seqs.size(1)) == (n - 1)
        return dropped, seqs.masked_fill(last, model.mask_token)

    return augment


def federated_setup(tiny_data):
    config, train, model, trainer = setup_model(tiny_data, "FedCL4SRec", hidden_dropout_prob=0.0,
                                                attn_dropout_prob=0.0)
    trainer.setup(train._dataset)
    return model, trainer.clients


def test_the_cohort_objective_is_the_clients_losses_weighted_by_their_sample_counts(tiny_data, in_tmp, monkeypatch):
    model, clients = federated_setup(tiny_data)
    monkeypatch.setattr(model, "augment", deterministic_augment(model))
    ids = [0, 3, 5, 6]
    batch, weights = clients.data.batch_of_users(ids), clients.data.num_samples[ids]
    truth = torch.cat([torch.full((len(clients.data.client_windows[c]),), k) for k, c in enumerate(ids)])
    assert torch.equal(window_owner(batch["windows"], weights), truth)  # derived, where the batch has no window_owner
    assert torch.equal(batch.get("window_owner", truth), truth)
    objective, rec, cl = cohort_objective(model, batch, {}, weights)  # the summed path's call, through the hook
    own = [model.client_loss({"windows": clients.data.windows[clients.data.client_windows[c]]}) for c in ids]
    assert objective.item() == pytest.approx(sum(w * loss[0].item() for w, loss in zip(weights.tolist(), own)), rel=1e-5)
    assert cl.item() == pytest.approx(np.mean([loss[2].item() for loss in own]), rel=1e-5) and cl > 0
    # and the one backward pass of the summed update is the sample-weighted mean of the clients' own updates
    summed, _, _ = clients.trainer.summed_update({}, batch, weights)
    shared = {n: p.detach() for n, p in model.named_parameters()}
    each, _, _ = clients.trainer.local_update(shared, {}, clients.data.cohort(ids), weights)
    for name, delta in summed.deltas.items():
        mean = (each.deltas[name] * weights.view(-1, *[1] * (delta.dim() - 1))).sum(0) / weights.sum()
        assert torch.allclose(delta[0], mean, atol=1e-6), name


def test_no_client_reads_another_clients_sequences_as_negatives(tiny_data, in_tmp):
    """With the real, random augmentations: changing client 1's items (same lengths, so the same random draws)
    changes its own L_cl and no other client's."""
    model, clients = federated_setup(tiny_data)
    ids = [0, 1, 2]
    batch, weights = clients.data.batch_of_users(ids), clients.data.num_samples[ids]
    owner = window_owner(batch["windows"], weights)

    def per_client_cl(windows):
        item_seq, _, _ = model.prefix_rows(windows)
        row_owner = owner.unsqueeze(1).expand(windows[:, 1:].shape)[windows[:, 1:] > 0]
        torch.manual_seed(11)
        return model.cl_losses(item_seq, row_owner, len(ids))

    changed = batch["windows"].clone()
    theirs = owner == 1
    changed[theirs] = torch.where(changed[theirs] > 0, changed[theirs] % (model.n_items - 1) + 1, 0)
    before, after = per_client_cl(batch["windows"]), per_client_cl(changed)
    assert torch.allclose(before[[0, 2]], after[[0, 2]], atol=1e-6)
    assert not torch.isclose(before[1], after[1])


@pytest.mark.parametrize("settings,message", [
    ({"cl_similarity": "euclid"}, "cl_similarity must be one of dot, cos"),
    ({"cl_temperature": 0.0}, "cl_temperature must be > 0"),
    ({"crop_eta": 0.0}, "crop_eta must be in (0, 1]"),
    ({"mask_gamma": 1.5}, "mask_gamma must be in [0, 1]"),
])
def test_bad_cl4srec_settings_are_one_line_errors(tiny_data, in_tmp, settings, message):
    with pytest.raises(LumosError, match=re.escape(message)) as error:
        build_config("CL4SRec", "tiny", config_dict=tiny_settings(tiny_data, **settings))
    assert "\n" not in str(error.value)


def test_the_mask_token_is_never_scored(tiny_data, in_tmp):
    _, train, model, _ = setup_model(tiny_data, "CL4SRec")
    assert isinstance(model, CL4SRec)
    batch = next(iter(train))
    assert model.full_sort_predict(batch).shape == (len(batch), model.n_items)
