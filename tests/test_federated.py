"""The LUMOS federated core on tiny generated data: dataset, partitioner, cohort training, privacy, resume."""
import copy
import glob

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lumos import registry
from recbole_lumos.augment.base import ClientViews, place_views
from recbole_lumos.augment.prefix_views import AlignedPrefixViews, generated_items
from recbole_lumos.data.partition import partition_clients
from recbole_lumos.errors import LumosError
from recbole_lumos.federated.aggregators import FedAvg
from recbole_lumos.federated.client import CohortTrainer, is_private
from recbole_lumos.federated.client_data import ClientData, windows_of
from recbole_lumos.model.sequences import random_negatives, random_prefixes, right_pad
from recbole_lumos.quick_start import build_config, run
from tests.conftest import tiny_settings, write_tiny_dataset


def setup_model(data_path, model="LUMOS", **overrides):
    config = build_config(model, "tiny", config_dict=tiny_settings(data_path, **overrides))
    init_seed(config["seed"], True)
    train, valid, test = data_preparation(config, create_dataset(config))
    model_obj = registry.get_model(model)(config, train._dataset)
    trainer = registry.get_trainer(config["MODEL_TYPE"], model)(config, model_obj)
    return config, train, valid, test, model_obj, trainer


def full_histories(data_path):
    """Every user's whole chronological sequence, read straight from the .inter file (internal ids aside)."""
    rows = np.loadtxt(f"{data_path}/tiny/tiny.inter", skiprows=1, dtype=np.int64, usecols=(0, 1, 3))
    return {u: rows[rows[:, 0] == u][np.argsort(rows[rows[:, 0] == u][:, 2]), 1] for u in np.unique(rows[:, 0])}


def test_training_histories_hold_no_validation_or_test_item(tiny_data, in_tmp):
    config, train, *_ = setup_model(tiny_data)
    dataset = train._dataset
    histories = dataset.training_histories()
    raw = full_histories(tiny_data)
    token = dataset.field2id_token
    assert len(histories) == len(raw)
    for uid, items in histories.items():
        user = int(token["user_id"][uid])
        assert [int(token["item_id"][i]) for i in items] == raw[user][:-2].tolist()  # minus valid and test


def test_windows_cover_every_target_once():
    history = list(range(1, 24))
    windows = windows_of(history, max_len=5)
    targets = [t for w in windows for t in w[1:]]
    assert sorted(targets) == history[1:]
    assert all(2 <= len(w) <= 6 for w in windows) and windows[-1][-1] == 23


def test_partitioner_one_per_user_iid_and_dirichlet():
    users = np.arange(1, 101)
    assert [c.tolist() for c in partition_clients(users)] == [[u] for u in users]
    iid = partition_clients(users, num_clients=7, scheme="iid", seed=1)
    assert sorted(np.concatenate(iid).tolist()) == users.tolist() and max(map(len, iid)) - min(map(len, iid)) <= 1
    labels = np.arange(100) % 4
    skewed = partition_clients(users, num_clients=10, scheme="dirichlet", alpha=0.1, labels=labels, seed=1)
    assert sorted(np.concatenate(skewed).tolist()) == users.tolist() and all(len(c) for c in skewed)
    label_share = [np.bincount(labels[c - 1], minlength=4).max() / len(c) for c in skewed]
    assert np.mean(label_share) > 0.5  # alpha 0.1: clients are dominated by one label (iid would be ~0.25)
    with pytest.raises(LumosError, match="num_clients"):
        partition_clients(users, num_clients=101)


def test_fedavg_is_the_sample_weighted_mean():
    agg = FedAvg()
    agg.start()
    agg.add({"w": torch.tensor([[1.0, 0.0], [3.0, 2.0]])}, torch.tensor([1.0, 3.0]))
    agg.add({"w": torch.tensor([[5.0, 4.0]])}, torch.tensor([4.0]))
    assert torch.allclose(agg.result()["w"], torch.tensor([(1 + 9 + 20) / 8, (0 + 6 + 16) / 8]))


@pytest.mark.parametrize("learner,epochs,future_weight",
                         [("sgd", 1, 0), ("sgd", 3, 0), ("adam", 2, 0), ("sgd", 2, 0.5)])
def test_cohort_update_equals_one_client_at_a_time(tiny_data, in_tmp, learner, epochs, future_weight):
    """vmap over a cohort is exact: the same updates as training a copy of the model per client (with L_future
    too: each client's F continuation read by its own loss)."""
    config, train, _, _, model, _ = setup_model(tiny_data, hidden_dropout_prob=0.0, attn_dropout_prob=0.0,
                                                future_weight=future_weight, views="embedding")
    histories = train._dataset.training_histories()
    clients = partition_clients(np.array(sorted(histories)), num_clients=5, seed=0)
    from recbole_lumos.augment.random_views import RandomViewBuilder

    views = (continuation_views(histories, model.n_items) if future_weight
             else RandomViewBuilder(model.n_items, seed=0).build(histories))
    data = ClientData(histories, clients, views, config["MAX_ITEM_LIST_LENGTH"])
    cohort = [0, 1, 2, 3, 4]
    batch = data.cohort(cohort)
    batch["negatives"] = random_negatives(batch["anchor"], 2, model.n_items, torch.Generator().manual_seed(0))
    shared = {n: p.detach().clone() for n, p in model.named_parameters() if not is_private(n)}
    private = {n: p.detach().unsqueeze(0).repeat(5, *[1] * p.dim()) + 0.01 * torch.randn(5, *p.shape)
               for n, p in model.named_parameters() if is_private(n)}
    trainer = CohortTrainer(model, epochs, learner, 0.05)
    update, new_private, _ = trainer.local_update(shared, private, batch, data.num_samples[cohort])

    for row, client in enumerate(cohort):
        local = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in local.named_parameters():
                p.copy_(private[n][row] if n in private else shared[n])
        optimizer = (torch.optim.SGD if learner == "sgd" else torch.optim.Adam)(local.parameters(), lr=0.05)
        own = data.batch_of_users([client])  # cut to this client's own length: so are its negatives
        own["negatives"] = batch["negatives"][row, : len(data.client_users[client]), :, : own["anchor"].shape[-1]]
        for _ in range(epochs):
            optimizer.zero_grad()
            local.client_loss(own)[0].backward()
            optimizer.step()
        for n, p in local.named_parameters():
            if learner == "adam" and n.endswith("key.bias"):
                continue  # softmax ignores a key bias: its gradient is rounding noise, which Adam scales up to lr
            expected = p.detach() - shared[n] if n in shared else p.detach()
            got = update.deltas[n][row] if n in shared else new_private[n][row]
            assert torch.allclose(got, expected, atol=1e-5), (n, client)


def continuation_views(histories, n_items, seed=0):
    """Views shaped like generated ones: F = the history and 3 appended items (a continuation)."""
    rng = np.random.default_rng(seed)
    return {u: ClientViews(list(h) + rng.integers(1, n_items, 3).tolist(), list(h), list(h[:-1]) + [1])
            for u, h in histories.items()}


def received_in_one_round(trainer, train, valid):
    """Fit (one round) with a spy on the server: every update it received."""
    received, original_setup = [], trainer.setup

    def setup_with_spy(dataset):
        original_setup(dataset)
        receive = trainer.server.receive
        trainer.server.receive = lambda update: (received.append(update), receive(update))

    trainer.setup = setup_with_spy
    trainer.fit(train, valid, saved=False)
    return received


def one_round_updates(data_path, in_tmp, summed=False):
    """Train one round with every client; return the model and every update the server received."""
    config, train, valid, _, model, trainer = setup_model(data_path, client_fraction=1.0, epochs=1, eval_step=5,
                                                          sum_cohort_updates=summed)
    return model, received_in_one_round(trainer, train, valid)


def test_privacy_only_shared_parameter_updates_leave_a_client(tmp_path, in_tmp):
    """Everything that reaches the server is a ClientUpdate of shared-parameter deltas and sample counts;
    and what a client sends does not depend on its validation/test items."""
    path_a = write_tiny_dataset(str(tmp_path / "a"), seed=3)
    model, received = one_round_updates(path_a, in_tmp)
    shared_shapes = {n: p.shape for n, p in model.named_parameters() if not is_private(n)}
    assert received
    for update in received:
        assert set(update.deltas) == set(shared_shapes)  # no projection head, no sequence, no view
        assert all(d.shape[1:] == shared_shapes[n] for n, d in update.deltas.items())

    _, received_summed = one_round_updates(path_a, in_tmp, summed=True)  # the one-backward-pass path too
    assert received_summed and all(set(u.deltas) == set(shared_shapes) for u in received_summed)

    # the same users with other validation/test items (the held-out ones) -> identical updates
    raw = full_histories(path_a)
    other = {u: [i for i in range(1, 41) if i not in raw[u]][:2] for u in raw if u != 0}
    path_b = write_tiny_dataset(str(tmp_path / "b"), seed=3, last_items=other)
    _, received_b = one_round_updates(path_b, in_tmp)
    for a, b in zip(received, received_b):
        for name in a.deltas:
            assert torch.equal(a.deltas[name], b.deltas[name]), name


def test_killed_run_resumes_with_the_same_result(tiny_data, in_tmp):
    settings = tiny_settings(tiny_data, epochs=6, eval_step=2, stopping_step=100)
    reference = run("LUMOS", "tiny", config_dict=dict(settings))

    calls = {"n": 0}

    def kill_after_first_eval(round_idx, score):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("LUMOS", "tiny", config_dict=dict(settings), callback_fn=kill_after_first_eval)
    resumed = run("LUMOS", "tiny", config_dict=dict(settings))
    assert resumed["test_result"] == reference["test_result"]
    assert resumed["best_valid_score"] == reference["best_valid_score"]
    # the killed session's validations stay in the curve, and its time in the run's wall time
    assert [(e, v) for _, e, v in resumed["valid_curve"]] == [(e, v) for _, e, v in reference["valid_curve"]]
    last, first = resumed["valid_curve"][-1][0], resumed["valid_curve"][0][0]  # seconds, to 0.01 s
    assert resumed["wall_time_s"] >= round(last, 1) and last >= first > 0  # wall time is to 0.1 s


@pytest.mark.parametrize("model", ["LUMOS", "FedSASRec", "FedCL4SRec", "CL4SRec"])
def test_family_runs_end_to_end_and_loads_with_recbole_tools(tiny_data, in_tmp, model):
    result = run(model, "tiny", config_dict=tiny_settings(tiny_data))
    assert {"hit@10", "hit@20", "ndcg@10", "ndcg@20"} <= set(result["test_result"])
    from recbole.quick_start import load_data_and_model

    config, loaded, *_ = load_data_and_model(result["checkpoint"])
    assert type(loaded).__name__ == model and config["model"] == model


@pytest.mark.parametrize("tri_views,reads_counterfactual", [(["future", "rephrase", "counterfactual"], True),
                                                            (["future", "rephrase"], False)])
def test_counterfactual_view_is_a_negative_only_when_listed(tiny_data, in_tmp, tri_views, reads_counterfactual):
    """The ablation without the counterfactual must not read it; with it, a counterfactual closer to the anchor
    (a harder negative) raises the loss."""
    _, _, _, _, model, _ = setup_model(tiny_data, tri_views=tri_views, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    anchor = torch.tensor([[1, 2, 3, 4, 0, 0, 0, 0, 0, 0]])
    positives = [[5, 6, 7, 0, 0, 0, 0, 0, 0, 0], [8, 9, 10, 11, 0, 0, 0, 0, 0, 0]]
    easy = torch.tensor([positives + [[30, 31, 32, 33, 0, 0, 0, 0, 0, 0]]])
    hard = torch.tensor([positives + [anchor[0].tolist()]])
    negatives = torch.tensor([[[20, 21, 22, 23, 0, 0, 0, 0, 0, 0]]])
    loss_easy, loss_hard = (model.tri_view_losses(anchor, easy, negatives),
                            model.tri_view_losses(anchor, hard, negatives))
    if reads_counterfactual:
        assert loss_hard > loss_easy
    else:
        assert torch.equal(loss_hard, loss_easy)


def test_random_views_are_redrawn_each_round_and_reproducible(tiny_data, in_tmp):
    """Random views (LUMOS with views random): the sampled clients get fresh views every round, seeded by (seed, round, user), so a
    resumed run redraws the same ones; the other clients keep theirs."""
    _, train, _, _, model, trainer = setup_model(tiny_data, model="LUMOS", views="random")
    trainer.setup(train._dataset)
    clients = trainer.clients
    clients.redraw_views([0, 1], round_idx=0)
    round0 = clients.data.views.clone()
    clients.redraw_views([0, 1], round_idx=1)
    round1 = clients.data.views.clone()
    rows = torch.from_numpy(np.concatenate([clients.data.client_users[c] for c in (0, 1)]))
    others = torch.ones(len(round0), dtype=torch.bool)
    others[rows] = False
    assert not torch.equal(round0[rows], round1[rows])
    assert torch.equal(round0[others], round1[others])
    clients.redraw_views([0, 1], round_idx=0)
    assert torch.equal(clients.data.views, round0)


def test_perturbed_views_apply_one_cl4srec_operation_to_each_positive_view():
    """Each round F and P get one of crop, mask or reorder of the generated view (about a third each), N none."""
    from recbole_lumos.augment.base import ClientViews
    from recbole_lumos.augment.random_views import PerturbedViews

    made = {u: ClientViews(list(range(10 * u + 1, 10 * u + 11)), list(range(10 * u + 1, 10 * u + 11)), [7, 8, 9])
            for u in range(1, 301)}
    views = PerturbedViews(made, "llm", {}, num_items=10**6, seed=5)
    kinds = []
    for user, got in views.build({u: [] for u in made}, round=3).items():
        assert got.counterfactual == [7, 8, 9]
        for original, perturbed in ((made[user].future, got.future), (made[user].rephrase, got.rephrase)):
            changed = [i for i, (a, b) in enumerate(zip(original, perturbed)) if a != b]
            if len(perturbed) == 6:  # crop: ceil(0.6 * 10) consecutive items
                assert any(original[i : i + 6] == perturbed for i in range(5))
                kinds.append("crop")
            elif sorted(perturbed) == original and changed:  # reorder: a shuffled stretch of 3
                assert len(perturbed) == 10 and changed[-1] - changed[0] < 3
                kinds.append("reorder")
            else:  # mask: items swapped for catalogue items (none of these 10, in a million)
                assert len(perturbed) == 10 and all(perturbed[i] not in original for i in changed)
                kinds.append("mask")
    assert all(0.25 < kinds.count(k) / len(kinds) < 0.42 for k in ("crop", "mask", "reorder")), kinds


def test_perturbed_views_are_redrawn_each_round_and_reach_the_client_tables(tiny_data, in_tmp):
    """views_perturb: the generated views are built once and perturbed per round, seeded by (seed, round,
    user), so a resumed run redraws the same ones; what a client trains on is the round's perturbed views."""
    _, train, _, _, model, trainer = setup_model(tiny_data, views="embedding", views_perturb=True)
    trainer.setup(train._dataset)
    clients = trainer.clients
    assert clients.redraws_views and clients.views.name == "embedding+perturbed"
    users = [u for c in (0, 1) for u in clients.data.clients[c]]
    histories = {u: clients.data.histories[u] for u in users}
    drawn = [clients.views.build(histories, round=r) for r in (0, 1, 0)]
    assert drawn[0] == drawn[2] and drawn[0] != drawn[1]
    with pytest.raises(LumosError, match="views_perturb perturbs generated views"):
        setup_model(tiny_data, model="LUMOS", views="random", views_perturb=True)[-1].setup(train._dataset)
    clients.redraw_views([0, 1], round_idx=1)
    for user in users:
        expected = right_pad([getattr(drawn[1][user], v) for v in ("future", "rephrase", "counterfactual")],
                             clients.data.max_len)
        assert torch.equal(clients.data.views[clients.data.user_row[user]], torch.from_numpy(expected))


def test_random_prefixes_cut_each_row_in_its_second_half():
    rows = torch.tensor([[5, 6, 7, 8, 9, 0], [1, 2, 3, 4, 5, 6], [4, 2, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0], [0] * 6])
    generator = torch.Generator().manual_seed(0)
    kept = set()
    for _ in range(300):
        cut = random_prefixes(rows, generator)
        lengths = (cut > 0).sum(-1)
        assert torch.equal(cut, rows * (torch.arange(6) < lengths.unsqueeze(-1)))  # a prefix, then padding
        kept.add(tuple(lengths.tolist()))
    assert {k[0] for k in kept} == {3, 4} and {k[1] for k in kept} == {3, 4, 5}  # ceil(n/2) .. n-1, each drawn
    assert {k[2:] for k in kept} == {(1, 1, 0)}  # two items keep one; one item and none stay as they are


@pytest.mark.parametrize("anchor", ["history", "prefix"])
def test_the_tri_view_anchor_a_client_trains_on(tiny_data, in_tmp, anchor):
    """tri_anchor: history trains L_tri on each user's whole training history, the very sequence validation
    reads; prefix never hands the loss that sequence (a user with two or more training items)."""
    _, train, _, _, model, trainer = setup_model(tiny_data, tri_anchor=anchor)
    trainer.setup(train._dataset)
    clients = trainer.clients
    ids = list(range(clients.num_clients))
    histories = clients.data.batch_of_users(ids)["anchor"]
    generator = torch.Generator().manual_seed(1)
    trained = clients.with_negatives(clients.data.batch_of_users(ids), generator)["anchor"].cpu()
    if anchor == "history":
        assert torch.equal(trained, histories)
        return
    lengths, full = (trained > 0).sum(-1), (histories > 0).sum(-1)
    assert (full >= 2).all() and (lengths < full).all() and (2 * lengths >= full).all()
    assert torch.equal(trained, histories * (trained > 0))  # each a prefix of its own user's history


def test_aligned_prefix_places_the_generated_items_on_a_random_prefix():
    history = list(range(1, 13))
    generated = place_views(history, [101, 102, 103], [201, 202], [301, 302, 303], 8, np.random.default_rng(0))
    assert generated_items(history, generated) == ([101, 102, 103], [201, 202], [301, 302, 303])
    builder = AlignedPrefixViews({7: generated}, {7: history}, "embedding", {}, window=8, seed=3)
    lengths = set()
    for round_idx in range(40):
        views = builder.build({7: history}, round=round_idx)[7]
        assert views == builder.build({7: history}, round=round_idx)[7]  # (seed, round, user) fixes the draw
        anchor = views.anchor
        lengths.add(len(anchor))
        assert anchor == history[: len(anchor)] and 6 <= len(anchor) <= 11  # never the whole history
        assert views.future == anchor + [101, 102, 103]
        assert views.counterfactual == anchor[:-3] + [301, 302, 303]
        changed = [i for i, (a, b) in enumerate(zip(anchor, views.rephrase)) if a != b]
        assert len(views.rephrase) == len(anchor) and [views.rephrase[i] for i in changed] == [201, 202]
        assert min(changed) >= len(anchor) - 8  # among the prefix's last window items, as on the whole history
    assert lengths == set(range(6, 12))


def test_aligned_prefix_views_and_anchor_reach_the_client_batch(tiny_data, in_tmp):
    _, train, _, _, model, trainer = setup_model(tiny_data, views="embedding", tri_anchor="aligned_prefix")
    trainer.setup(train._dataset)
    clients = trainer.clients
    ids = list(range(clients.num_clients))
    clients.redraw_views(ids, round_idx=1)
    batch = clients.with_negatives(clients.data.batch_of_users(ids), torch.Generator().manual_seed(1))
    row_user = {row: user for user, row in clients.data.user_row.items()}
    users = [row_user[r] for c in ids for r in clients.data.client_users[c]]
    L = clients.data.max_len
    for user, anchor, views in zip(users, batch["anchor"].cpu().numpy(), batch["views"].cpu().numpy()):
        history, width = clients.data.histories[user], anchor.shape[0]
        cuts = [k for k in range((len(history) + 1) // 2, len(history))
                if np.array_equal(right_pad([history[:k]], L)[0, :width], anchor)]
        assert cuts, f"user {user}: the anchor is no prefix of the history's second half"  # never the whole history
        prefix, continuation = list(history[: cuts[0]]), list(clients.views.items[user][0])
        overflow = max(0, min(len(prefix), L) + len(continuation) - L)  # F gives up the prefix's last items to fit
        future = right_pad([prefix[: len(prefix) - overflow] + continuation], L)
        assert np.array_equal(views[0], future[0, :width])  # F = that prefix + the generator's continuation
    with pytest.raises(LumosError, match="aligned_prefix moves generated views"):
        setup_model(tiny_data, model="LUMOS", views="random", tri_anchor="aligned_prefix")[-1].setup(train._dataset)
    with pytest.raises(LumosError, match="plugin's trainer"):
        model.calculate_loss(next(iter(train)))


@pytest.mark.parametrize("federated", [True, False])
def test_divergence_stops_the_run_with_one_line(tiny_data, in_tmp, capsys, federated):
    import run_lumos

    args = [f"--{k}={v}" for k, v in tiny_settings(tiny_data, epochs=3, federated=federated).items() if k != "load_col"]
    code = run_lumos.main(["--model=LUMOS", "--dataset=tiny", "--learning_rate=1e6", "--local_learning_rate=1e6",
                           *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: training diverged in ") and err.count("\n") == 1, err
    assert "learning rate is likely too high" in err and "is kept: " in err
    kept = torch.load(err.split("is kept: ")[1].strip(), weights_only=False)  # the last good round's checkpoint
    assert kept["round"] == 0 and all(torch.isfinite(v).all() for v in kept["state_dict"].values())


def test_federated_run_writes_recbole_tensorboard_scalars(tiny_data, in_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = tiny_settings(tiny_data, epochs=2, eval_step=1)
    run("LUMOS", "tiny", config_dict=settings)
    (folder,) = glob.glob(str(in_tmp / "log_tensorboard" / "*"))
    events = EventAccumulator(folder)
    events.Reload()
    scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for tag in ("Loss/Train", "Loss/Train0", "Loss/Train1", "Vaild_score", "Valid/ndcg@20", "Valid/hit@10",
                "Comm/bytes_down", "Comm/bytes_up"):
        assert len(scalars[tag]) == 2, tag  # one per round
    assert scalars["Vaild_score"] == scalars["Valid/ndcg@20"]  # RecBole's tag holds valid_metric
    total = [a + b for a, b in zip(scalars["Loss/Train0"], scalars["Loss/Train1"])]
    assert np.allclose(scalars["Loss/Train"], total, rtol=1e-5)
    _, train, _, _, model, _ = setup_model(tiny_data)
    payload = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if not is_private(n))
    clients = len(train._dataset.client_histories())  # one client per user
    assert scalars["Comm/bytes_down"] == [round(settings["client_fraction"] * clients) * payload] * 2


@pytest.mark.parametrize("future_weight", [0, 0.5])
def test_summed_cohort_update_equals_the_mean_of_client_deltas(tiny_data, in_tmp, future_weight):
    """The one-backward-pass path hands the server exactly the FedAvg mean of the per-client deltas."""
    from recbole_lumos.augment.random_views import RandomViewBuilder

    config, train, _, _, model, _ = setup_model(tiny_data, hidden_dropout_prob=0.0, attn_dropout_prob=0.0,
                                                future_weight=future_weight, views="embedding")
    histories = train._dataset.training_histories()
    views = (continuation_views(histories, model.n_items) if future_weight
             else RandomViewBuilder(model.n_items).build(histories))
    data = ClientData(histories, partition_clients(np.array(sorted(histories))), views, 10)
    cohort = list(range(6))
    batch = data.cohort(cohort)
    batch["negatives"] = random_negatives(batch["anchor"], 2, model.n_items, torch.Generator().manual_seed(0))
    shared = {n: p.detach().clone() for n, p in model.named_parameters() if not is_private(n)}
    private = {n: p.detach().unsqueeze(0).repeat(6, *[1] * p.dim())
               for n, p in model.named_parameters() if is_private(n)}
    trainer = CohortTrainer(model, 1, "sgd", 0.1)
    weights = data.num_samples[cohort]
    each, private_each, _ = trainer.local_update(shared, dict(private), batch, weights)
    flat = data.batch_of_users(cohort)
    flat["negatives"] = batch["negatives"][:, 0]  # one user per client: the same negatives, flattened
    summed, private_summed, _ = trainer.summed_update(dict(private), flat, weights)
    agg = FedAvg()
    agg.start()
    agg.add(each.deltas, each.num_samples)
    for name, mean in agg.result().items():
        assert torch.allclose(summed.deltas[name][0], mean, atol=1e-6), name
    assert float(summed.num_samples) == float(weights.sum())
    for name in private_each:
        assert torch.allclose(private_each[name], private_summed[name], atol=1e-6), name


def test_stacked_cohorts_pad_no_client(tiny_data):
    """The per-client path stacks a cohort client by client, padded to its largest: a cohort holds clients of
    one window count, at most cohort_size of them, every client once (a flat cohort may mix sizes)."""
    config, train, _, _, model, _ = setup_model(tiny_data)
    histories = train._dataset.training_histories()
    data = ClientData(histories, partition_clients(np.array(sorted(histories))), None, 3)  # short windows: sizes vary
    sizes = {c: len(data.client_windows[c]) for c in range(data.num_clients)}
    assert len(set(sizes.values())) > 1
    stacked, flat = data.cohorts(list(sizes), 4, stacked=True), data.cohorts(list(sizes), 4, stacked=False)
    for cohorts in (stacked, flat):
        assert sorted(c for cohort in cohorts for c in cohort) == sorted(sizes) and max(map(len, cohorts)) <= 4
    assert all(len({sizes[c] for c in cohort}) == 1 for cohort in stacked)
    assert any(len({sizes[c] for c in cohort}) > 1 for cohort in flat)


def test_cutting_the_padding_changes_no_loss_and_cohorts_keep_to_their_own_length(tiny_data):
    """A cohort's batch is cut to its longest row (sparse data: far below max_seq_length), and the losses read
    from it are those of the full-width batch; cohorts group clients of similar history lengths."""
    from recbole_lumos.augment.random_views import RandomViewBuilder

    config, train, _, _, model, _ = setup_model(tiny_data, hidden_dropout_prob=0.0, attn_dropout_prob=0.0,
                                                MAX_ITEM_LIST_LENGTH=50)  # wider than every history (at most 40 items)
    histories = train._dataset.training_histories()
    width = config["MAX_ITEM_LIST_LENGTH"]
    data = ClientData(histories, partition_clients(np.array(sorted(histories))),
                      RandomViewBuilder(model.n_items).build(histories), width)
    cohorts = data.cohorts(list(range(data.num_clients)), 4, stacked=False)
    lengths = [[data.client_length[c] for c in cohort] for cohort in cohorts]
    assert [length for group in lengths for length in group] == sorted(data.client_length)
    cohort = cohorts[0]  # the shortest histories
    cut = data.batch_of_users(cohort)
    assert cut["anchor"].shape[-1] == max(lengths[0]) < width  # random views are no longer than their history
    assert cut["windows"].shape[-1] == max(lengths[0]) < width + 1
    users = np.concatenate([data.client_users[c] for c in cohort])
    full = {"windows": data.windows[np.concatenate([data.client_windows[c] for c in cohort])],
            "anchor": data.anchor[users], "views": data.views[users]}
    full["negatives"] = random_negatives(full["anchor"], 2, model.n_items, torch.Generator().manual_seed(0))
    cut["negatives"] = full["negatives"][..., : cut["anchor"].shape[-1]]
    model.eval()
    for a, b in zip(model.client_loss(full), model.client_loss(cut)):
        assert torch.allclose(a, b, atol=1e-6)


# ------------------------------------------------------------------------------------------ the projection head
@pytest.mark.parametrize("head", ["private", "shared", "identity"])
def test_projection_head_modes_share_what_they_say(tiny_data, in_tmp, head):
    """private: the head stays on its client (not in any update) and each trained client's head moves; shared:
    the head is an update like the backbone's; identity: there is no head. Diagnostics say how far heads moved."""
    config, train, valid, _, model, trainer = setup_model(tiny_data, tri_head=head, client_fraction=1.0, epochs=1,
                                                          eval_step=5)
    received = received_in_one_round(trainer, train, valid)
    sent = set().union(*(u.deltas for u in received))
    assert ("projection.weight" in sent) == (head == "shared")
    assert bool(trainer.clients.private_bank) == (head == "private")
    assert (len(list(model.projection.parameters())) == 0) == (head == "identity")
    found = trainer.diagnostics
    assert np.isfinite(found["tri_loss"]) and np.isfinite(found["tri_loss_initial_head"])
    if head == "identity":
        assert "head_drift" not in found and found["tri_loss"] == found["tri_loss_initial_head"]
    else:  # every client trained once (client_fraction 1): each head moved
        assert found["head_drift"] > 0 and found["heads_trained"] == 1.0


@pytest.mark.parametrize("smoothing, best_eval, evals_run", [(1, 2, 5), (3, 6, 9)])
def test_early_stopping_follows_the_smoothed_validation_curve(tiny_data, in_tmp, smoothing, best_eval, evals_run):
    """One lucky evaluation (the 2nd) picks the model under RecBole's rule; the mean of the last 3 picks the 6th
    (trailing means 0.10 0.30 0.23 0.30 0.25 0.33 0.27 0.18 0.10) and stops 3 evaluations after it."""
    scores = [0.10, 0.50, 0.10, 0.30, 0.35, 0.35, 0.10, 0.10, 0.10, 0.10]
    _, train, valid, _, _, trainer = setup_model(tiny_data, epochs=len(scores), stopping_step=2,
                                                 valid_smoothing=smoothing)
    evals = iter(range(1, len(scores) + 1))

    def scripted_validation(valid_data, show_progress=False):
        n = next(evals)
        return scores[n - 1], {"ndcg@20": scores[n - 1], "evaluation": n}

    trainer._valid_epoch = scripted_validation
    trainer.fit(train, valid, saved=False)
    assert trainer.best_valid_result["evaluation"] == best_eval
    assert trainer.rounds_run == evals_run  # eval_step 1: one evaluation a round
    assert trainer.best_valid_score == pytest.approx(np.mean(scores[max(0, best_eval - smoothing):best_eval]))


@pytest.mark.parametrize("anchor_gradient,view_gradient", [(True, True), (False, True), (True, False)])
def test_tri_view_loss_stop_gradients(tiny_data, in_tmp, anchor_gradient, view_gradient):
    """tri_anchor_gradient / tri_view_gradient: False stops L_tri's gradient at the anchor's state / at the views'
    and negatives' states, in tri_view_loss_of_states, which both the central objective and the federated cohort's
    call: those states (and the embeddings of items that only they hold) get none from L_tri, the others still do."""
    _, _, _, _, model, _ = setup_model(tiny_data, tri_anchor_gradient=anchor_gradient, tri_view_gradient=view_gradient,
                                       hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    anchor = torch.tensor([[1, 2, 3, 4, 0, 0, 0, 0, 0, 0]])
    views = torch.tensor([[[5, 6, 7, 0, 0, 0, 0, 0, 0, 0], [8, 9, 10, 11, 0, 0, 0, 0, 0, 0],
                           [12, 13, 14, 0, 0, 0, 0, 0, 0, 0]]])
    negatives = torch.tensor([[[20, 21, 22, 23, 0, 0, 0, 0, 0, 0]]])
    states = torch.nn.functional.normalize(torch.randn(5, model.hidden_size), dim=-1).requires_grad_()
    model.tri_view_loss_of_states(states, anchor, num_negatives=1).sum().backward()
    assert (states.grad[0].abs().sum() > 0) == anchor_gradient
    assert (states.grad[1:].abs().sum(-1) > 0).tolist() == [view_gradient] * 4
    model.tri_view_losses(anchor, views, negatives).sum().backward()
    grad = model.item_embedding.weight.grad
    assert (grad[1:5].abs().sum() > 0) == anchor_gradient
    assert (grad[5:15].abs().sum(-1) > 0).tolist() == [view_gradient] * 10
    assert (grad[20:24].abs().sum(-1) > 0).tolist() == [view_gradient] * 4
