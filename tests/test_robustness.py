"""Robust aggregators, DP-FedAvg and its accounting, noisy and malicious clients, ER@K, on tiny data."""
import json

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from recbole_lumos.errors import LumosError
from recbole_lumos.federated import attacks
from recbole_lumos.federated.aggregators import DPFedAvg, FedAvg, Krum, Median, NormClip, TrimmedMean
from recbole_lumos.federated.client import is_private
from recbole_lumos.federated.server import Server
from recbole_lumos.quick_start import build_config, run
from tests.conftest import tiny_settings
from tests.test_federated import received_in_one_round, setup_model


def aggregate(rule, rows, weights=None, per_round=None):
    """One round of ``rule`` over rows [C, ...] of a parameter 'w', handed over in two cohorts."""
    rows = torch.as_tensor(rows, dtype=torch.float32)
    weights = torch.ones(len(rows)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    rule.setup(len(rows), 1.0, per_round or len(rows), {"w": torch.zeros(rows.shape[1:])})
    rule.start()
    half = len(rows) // 2
    rule.add({"w": rows[:half]}, weights[:half])
    rule.add({"w": rows[half:]}, weights[half:])
    return rule.result()["w"]


# ------------------------------------------------------------------------------------------ aggregators
def test_aggregators_match_hand_computed_examples():
    assert torch.equal(aggregate(Median(), [[1.0, 7.0], [2.0, 5.0], [10.0, 6.0]]), torch.tensor([2.0, 6.0]))
    assert torch.equal(aggregate(Median(), [[1.0], [3.0], [5.0], [1e6]]), torch.tensor([4.0]))  # (3 + 5) / 2
    assert torch.equal(aggregate(TrimmedMean(0.25), [[1.0], [2.0], [3.0], [1e6]]), torch.tensor([2.5]))
    assert torch.equal(aggregate(TrimmedMean(0.0), [[1.0], [2.0], [6.0]]), torch.tensor([3.0]))
    # 1-D points 0, 1, 2.5, 4, 1e6 with f = 1: scores over the n - f - 2 = 2 nearest others are
    # 0 -> 1 + 6.25, 1 -> 1 + 2.25, 2.5 -> 2.25 + 2.25, 4 -> 2.25 + 9, 1e6 -> huge
    points = [[0.0], [1.0], [2.5], [4.0], [1e6]]
    krum = Krum(byzantine=1, selected=1)
    assert torch.equal(aggregate(krum, points), torch.tensor([1.0])) and krum.chosen == [1]
    multi = Krum(byzantine=1, selected=2)
    assert torch.equal(aggregate(multi, points), torch.tensor([1.75])) and multi.chosen == [1, 2]
    # clip to norm 1: (3, 4) -> (0.6, 0.8); (0.3, 0.4) is shorter and kept; then FedAvg with weights 1 and 3
    clipped = aggregate(NormClip(1.0), [[3.0, 4.0], [0.3, 0.4]], weights=[1.0, 3.0])
    assert torch.allclose(clipped, torch.tensor([(0.6 + 0.9) / 4, (0.8 + 1.2) / 4]))


@pytest.mark.parametrize("clients", [7, 8, 20, 21])
def test_median_and_trimmed_mean_select_what_sorting_the_clients_gives_even_on_ties(clients):
    """They select without sorting; the result is the sorted definition's, for odd and even counts and on ties
    (small integers: many clients hold the same value of a coordinate, as untouched rows do)."""
    rows = torch.randint(-3, 4, (clients, 5, 6), generator=torch.Generator().manual_seed(clients)).float()
    rows[:, 0, 0] = 2.0  # every client equal
    ordered, n = rows.sort(0).values, clients
    assert torch.equal(aggregate(Median(), rows), (ordered[(n - 1) // 2] + ordered[n // 2]) / 2)
    for ratio in (0.15, 0.25, 0.45):
        k = int(ratio * n)
        assert k > 0 and torch.allclose(aggregate(TrimmedMean(ratio), rows), ordered[k : n - k].mean(0))
    assert aggregate(TrimmedMean(0.25), rows)[0, 0] == 2.0


def test_krum_distances_add_up_over_all_parameters():
    """Krum scores whole updates: a client that is normal in one parameter and an outlier in another is out."""
    krum = Krum(byzantine=1, selected=3)
    krum.setup(5, 1.0, 5, {})
    krum.start()
    a = torch.tensor([[0.0], [0.1], [0.2], [0.3], [0.15]])
    b = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [50.0, 50.0]])
    krum.add({"a": a, "b": b}, torch.ones(5))
    krum.result()
    assert 4 not in krum.chosen


@pytest.mark.parametrize("rule", [Median(), TrimmedMean(0.2), Krum(1, 3), NormClip(1.0)])
def test_robust_rules_resist_a_huge_update_that_moves_fedavg(rule):
    benign = 0.01 * torch.randn(9, 4, 3, generator=torch.Generator().manual_seed(0))
    rows = torch.cat([benign, torch.full((1, 4, 3), 1e6)])
    assert aggregate(FedAvg(), rows).abs().min() > 1e4  # the outlier drags the mean
    robust = aggregate(rule, rows)
    assert robust.abs().max() < (1.0 if not isinstance(rule, NormClip) else 0.2)  # 1e6 clipped to 1, / 10 clients


@pytest.mark.parametrize("rule,per_round,message", [
    (Krum(byzantine=3, selected=1), 8,
     "aggregator krum with krum_byzantine 3, krum_selected 1 needs at least 9 clients per round, got 8"),
    (Krum(byzantine=0, selected=6), 5, "needs at least 6 clients per round, got 5"),
])
def test_impossible_round_sizes_are_one_line_errors(rule, per_round, message):
    with pytest.raises(LumosError) as error:
        rule.setup(100, 0.1, per_round, {})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_trimmed_mean_that_trims_nothing_is_warned_about(caplog):
    TrimmedMean(0.1).setup(100, 0.05, 5, {})
    assert "trims nothing from 5 clients per round" in caplog.text
    caplog.clear()
    TrimmedMean(0.2).setup(100, 0.05, 5, {})
    assert not caplog.text


def test_krum_with_f_too_large_for_the_cohort_stops_the_run(tiny_data, in_tmp):
    with pytest.raises(LumosError, match=r"krum_byzantine 10, krum_selected 1 needs at least 23 clients per round"):
        run("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, aggregator="krum", krum_byzantine=10))


def test_krum_log_counts_the_fake_clients_behind_the_rows_it_kept(tiny_data, in_tmp, caplog):
    # model poisoning: every fake client sends the same crafted row, so the rows themselves say which were fakes
    _, train, valid, _, _, trainer = setup_model(tiny_data, attack="target_promotion", attack_mode="model",
                                                 attack_fraction=0.25, aggregator="krum", krum_byzantine=1,
                                                 krum_selected=3, client_fraction=1.0, epochs=1, eval_step=1)
    caplog.set_level("INFO")
    received_in_one_round(trainer, train, valid)
    rows = torch.cat([r.flatten(1) for r in trainer.server.aggregator.stacked().values()], 1)
    order, fake = trainer.clients.update_order, trainer.clients.fake
    assert sorted(order) == list(range(trainer.clients.num_clients)) and fake
    crafted = rows[order.index(min(fake))]
    assert [torch.equal(row, crafted) for row in rows] == [c in fake for c in order]
    kept = trainer.server.aggregator.chosen
    expected = (f"fakes kept {sum(torch.equal(rows[i], crafted) for i in kept)} of 3 "
                f"({len(fake)} of {len(order)} received)")
    assert any(r.getMessage().endswith(expected) for r in caplog.records)


@pytest.mark.parametrize("settings,message", [
    ({"aggregator": "median", "federated": False}, "aggregator median needs federated: True"),
    ({"attack": "random", "attack_mode": "model", "federated": False}, "attack_mode model sends crafted updates"),
    ({"trim_ratio": 0.5}, "trim_ratio must be in [0, 0.5)"),
    ({"dp_noise_multiplier": 0}, "dp_noise_multiplier must be > 0"),
    ({"dp_delta": 1.0}, "dp_delta must be in (0, 1)"),
    ({"attack": "sybil"}, "attack must be one of none, random, bandwagon, target_promotion"),
    ({"noise_ratio": 1.5}, "noise_ratio must be in [0, 1]"),
])
def test_bad_robustness_settings_are_one_line_errors(tiny_data, in_tmp, settings, message):
    with pytest.raises(LumosError) as error:
        build_config("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, **settings))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_non_linear_rule_gets_one_delta_per_client_even_with_sum_cohort_updates(tiny_data, in_tmp, caplog):
    _, train, valid, _, _, trainer = setup_model(tiny_data, aggregator="median", sum_cohort_updates=True,
                                                 client_fraction=1.0, epochs=1, eval_step=5)
    caplog.set_level("INFO")
    received = received_in_one_round(trainer, train, valid)
    rows = sum(len(u.num_samples) for u in received)
    assert rows == trainer.clients.num_clients  # not one summed row per cohort
    assert any("needs each client's own update" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ DP-FedAvg
def test_dp_clipping_bounds_every_clients_contribution():
    dp = DPFedAvg(clip_norm=2.0, noise_multiplier=1e-12, delta=1e-5)  # noise negligible: see the clipped sum
    dp.setup(num_clients=4, client_fraction=0.5, per_round=2, params={"a": torch.zeros(3), "b": torch.zeros(2, 2)})
    dp.start()
    huge = {"a": torch.full((1, 3), 1e6), "b": torch.full((1, 2, 2), -1e6)}
    dp.add(huge, torch.tensor([1000.0]))  # a large sample count buys no extra weight
    total = dp.result()
    contribution = torch.sqrt(sum((v * dp.expected).pow(2).sum() for v in total.values()))
    assert contribution == pytest.approx(2.0, rel=1e-5)
    dp.start()
    small = {"a": torch.tensor([[0.3, 0.0, 0.4]]), "b": torch.zeros(1, 2, 2)}
    dp.add(small, torch.tensor([1.0]))
    assert torch.allclose(dp.result()["a"] * dp.expected, small["a"][0])  # shorter than C: unchanged


def test_dp_noise_has_std_z_times_c_on_the_sum():
    z, clip = 1.5, 2.0
    dp = DPFedAvg(clip_norm=clip, noise_multiplier=z, delta=1e-5)
    dp.setup(num_clients=10, client_fraction=0.5, per_round=5, params={"w": torch.zeros(200_000)})
    torch.manual_seed(0)
    dp.start()
    dp.add({"w": torch.ones(3, 200_000) * 1e-3}, torch.ones(3))
    noise = dp.result()["w"] * dp.expected - 3e-3  # the noisy sum minus the (unclipped, short) true sum
    assert dp.expected == 5.0
    assert float(noise.std()) == pytest.approx(z * clip, rel=0.01)
    assert abs(float(noise.mean())) < 0.03


def test_dp_server_samples_each_client_independently():
    server = Server({"w": torch.nn.Parameter(torch.zeros(2))}, DPFedAvg(1.0, 1.0, None), None, 40, 0.25)
    generator = torch.Generator().manual_seed(0)
    sizes = [len(server.sample_clients(generator)) for _ in range(400)]
    assert len(set(sizes)) > 3 and np.mean(sizes) == pytest.approx(10, abs=0.5)  # Binomial(40, 0.25)
    assert server.aggregator.delta == 1 / 40


def test_dp_run_reports_the_libraries_epsilon(tiny_data, in_tmp):
    settings = tiny_settings(tiny_data, aggregator="dp_fedavg", dp_noise_multiplier=0.8, clip_norm=0.5, epochs=3,
                             client_fraction=0.3, stopping_step=100)
    result = run("LUMOS", "tiny", config_dict=settings)
    privacy = result["privacy"]
    _, train, *_ = setup_model(tiny_data)
    clients = len(train._dataset.client_histories())
    rdp = compute_rdp(q=0.3, noise_multiplier=0.8, steps=3, orders=RDPAccountant.DEFAULT_ALPHAS)
    expected, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=1 / clients)
    assert privacy["epsilon"] == pytest.approx(expected, rel=1e-9) and np.isfinite(expected) and expected > 0
    assert ((privacy["delta"], privacy["rounds"], privacy["noise_multiplier"], privacy["clip_norm"])
            == (1 / clients, 3, 0.8, 0.5))
    with open(result["result_file"], encoding="utf-8") as f:
        assert json.load(f)["privacy"] == privacy


# ------------------------------------------------------------------------------------------ noisy clients
def test_noise_ratio_replaces_that_share_of_training_items_only(tiny_data, in_tmp):
    _, train, _, test, _, trainer = setup_model(tiny_data, noise_ratio=0.3)
    clean = train._dataset.client_histories()
    test_items = test._dataset.inter_feat[test._dataset.iid_field].clone()
    trainer.setup(train._dataset)
    data = trainer.clients.data
    changed = total = 0
    for user, items in clean.items():
        noisy = data.histories[user]
        assert len(noisy) == len(items)
        assert (noisy != items).sum() == round(0.3 * len(items))  # exactly that many, never an item by itself
        changed, total = changed + (noisy != items).sum(), total + len(items)
        tail = noisy[-data.max_len :]
        assert data.anchor[data.user_row[user], : len(tail)].tolist() == tail.tolist()  # what the views read
    assert abs(changed / total - 0.3) < 0.02
    assert torch.equal(test._dataset.inter_feat[test._dataset.iid_field], test_items)  # test items untouched
    assert all(np.array_equal(h, clean[u]) for u, h in train._dataset.client_histories().items())


# ------------------------------------------------------------------------------------------ malicious clients
def test_default_targets_are_the_least_popular_training_items():
    histories = {1: np.array([1, 2, 3, 3]), 2: np.array([3, 2, 5]), 3: np.array([5, 3, 2])}
    # counts: 1 -> 1, 2 -> 3, 3 -> 4, 4 -> 0 (never seen: not a target), 5 -> 2
    assert attacks.default_targets(histories, n_items=6, count=3) == [1, 5, 2]


@pytest.mark.parametrize("kind", ["random", "bandwagon", "target_promotion"])
def test_fake_clients_are_added_with_the_designed_histories(tiny_data, in_tmp, kind):
    _, train, valid, _, model, trainer = setup_model(tiny_data, attack=kind, attack_fraction=0.25, client_fraction=1.0,
                                                     epochs=1, eval_step=5, sum_cohort_updates=False)
    real = train._dataset.client_histories()
    received = received_in_one_round(trainer, train, valid)
    clients = trainer.clients
    fake = sorted(clients.fake)
    assert len(fake) == round(0.25 * len(real)) and fake == list(range(len(real), len(real) + len(fake)))
    targets = clients.targets
    assert targets == attacks.default_targets(real, model.n_items)  # by hand: test_default_targets_...
    counts = attacks.item_counts(real, model.n_items)
    popular = set((np.argsort(-counts[1:], kind="stable")[:20] + 1).tolist())
    for c in fake:
        (user,) = clients.data.clients[c]
        items = clients.data.histories[user]
        assert user not in real and len(items) >= 2
        if kind == "random":
            assert len(set(items.tolist())) == len(items)
        elif kind == "bandwagon":
            assert sorted(items[-5:].tolist()) == sorted(targets) and set(items[:-5].tolist()) <= popular
        else:
            assert set(items[1::2].tolist()) <= set(targets)
    # the server sees every client alike: one row per real or fake client, nothing marks a fake one
    assert sum(len(u.num_samples) for u in received) == len(real) + len(fake)


def target_log_likelihood(model, sequences, targets):
    with torch.no_grad():
        logits = model.last_states(sequences) @ model.item_embedding.weight.t()
        return torch.log_softmax(logits, -1)[:, targets].mean().item()


def test_model_poisoning_update_raises_the_target_scores_of_benign_users(tiny_data, in_tmp):
    """The fake clients' crafted rows reach the server like any update; averaged in (FedAvg) they raise the target
    items' log-likelihood after benign users' histories above what the benign updates alone give."""
    _, train, valid, _, model, trainer = setup_model(tiny_data, attack="target_promotion", attack_mode="model",
                                                     client_fraction=1.0, epochs=1, eval_step=5, learning_rate=1e-9,
                                                     hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    received = received_in_one_round(trainer, train, valid)  # server step of ~1e-9: the model is what was sent
    clients, targets = trainer.clients, trainer.clients.targets
    crafted = received[0]  # the fake clients' updates reach the server first, as ordinary rows
    assert len(crafted.num_samples) == len(clients.fake) > 0
    benign_users = np.concatenate([clients.data.client_users[c] for c in range(clients.num_clients)
                                   if c not in clients.fake])
    benign = clients.data.anchor[benign_users]
    model.eval()
    sent = {n: p.detach().clone() for n, p in model.named_parameters() if not is_private(n)}

    def after(updates, share=1.0):
        """Target log-likelihood once the FedAvg of these updates (times share) is applied to what was sent."""
        rule = FedAvg()
        rule.start()
        for update in updates:
            rule.add(update.deltas, update.num_samples)
        with torch.no_grad():
            for name, delta in rule.result().items():
                model.get_parameter(name).copy_(sent[name] + share * delta)
        return target_log_likelihood(model, benign, targets)

    assert after([crafted], share=0.05) > after([crafted], share=0.0) + 0.1  # its direction raises the targets
    assert after(received) > after(received[1:]) + 0.05  # and it survives averaging with the benign updates


# ------------------------------------------------------------------------------------------ ER@K
def test_exposure_rate_by_hand():
    exposure = attacks.Exposure(targets=[4], topk=[1, 2])
    scores = torch.tensor([[-np.inf, 0.9, 0.1, 0.2, 0.8],   # top-1 item 1, top-2 items 1, 4: exposed at 2
                           [-np.inf, 0.1, 0.2, 0.3, 0.9],   # target first: exposed at 1 and 2
                           [-np.inf, 0.9, 0.8, 0.7, 0.1]])  # never exposed
    exposure.add(scores[:2])
    exposure.add(scores[2:])
    assert exposure.result() == {"er@1": round(1 / 3, 4), "er@2": round(2 / 3, 4)}


def test_attacked_run_reports_er_from_the_full_sort_scores(tiny_data, in_tmp):
    _, train, valid, test, model, trainer = setup_model(tiny_data, attack="bandwagon", epochs=1)
    trainer.fit(train, valid, saved=False)
    result = trainer.evaluate(test, load_best_model=False)
    targets = torch.tensor(trainer.clients.targets)
    model.eval()
    exposed = {10: 0, 20: 0}
    users = 0
    with torch.no_grad():
        for interaction, history, _, _ in test:
            scores = model.full_sort_predict(interaction).view(len(interaction), -1)
            scores[:, 0] = -np.inf
            if history is not None:
                scores[history] = -np.inf
            for k in exposed:
                exposed[k] += torch.isin(scores.topk(k).indices, targets).any(1).sum().item()
            users += len(interaction)
    assert users > 0
    assert result["er@10"] == round(exposed[10] / users, 4) and result["er@20"] == round(exposed[20] / users, 4)
    assert {"hit@10", "ndcg@20"} <= set(result)


def test_attack_run_end_to_end_writes_er_and_a_clean_run_can_report_it(tiny_data, in_tmp):
    attacked = run("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, aggregator="krum", attack="target_promotion",
                                                              attack_mode="model", attack_target=[3, 7]))
    assert {"er@10", "er@20"} <= set(attacked["test_result"])
    clean = run("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, report_exposure=True))
    assert {"er@10", "er@20"} <= set(clean["test_result"]) and "privacy" not in clean
    with pytest.raises(LumosError, match=r"attack_target items \['999'\] are not in the dataset"):
        run("LUMOS", "tiny", config_dict=tiny_settings(tiny_data, attack="bandwagon", attack_target=[999]))


def test_dp_epsilon_sets_the_noise_that_spends_it_over_the_round_budget(tiny_data, in_tmp):
    """dp_epsilon: z from Opacus' search, so the full round budget spends the target (to the search's 0.01)."""
    settings = tiny_settings(tiny_data, aggregator="dp_fedavg", dp_epsilon=4.0, clip_norm=0.5, epochs=3,
                             client_fraction=0.3, stopping_step=100)
    privacy = run("LUMOS", "tiny", config_dict=settings)["privacy"]
    assert privacy["rounds"] == 3 and privacy["noise_multiplier"] != 1.0  # not the dp_noise_multiplier default
    assert 4.0 - 0.011 <= privacy["epsilon"] <= 4.0
