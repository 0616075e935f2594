"""The view-quality gate on hand-made data where every figure is known by hand, and on a tiny RecBole dataset."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_settings, write_tiny_dataset

from recbole_lumos.augment.base import ClientViews
from recbole_lumos.augment.cache import ViewCache
from recbole_lumos.augment.quality import (LAST_ITEM, RANDOM_ITEMS, cached, gate_of_run, genre_sets, markdown,
                                           named_items, popular_unseen, top_unseen, validation_items, view_gate)

# item -> genres (0 is padding): A = 1, B = 2, C = 3
A, B, C = 1, 2, 3
GENRES = [frozenset(), {A}, {A, B}, {B}, {C}, {C}, {A, C}]
GENRES = [frozenset(g) for g in GENRES]
HISTORIES = {1: [1, 2, 3], 2: [4, 5]}
VIEWS = {
    1: ClientViews(future=[1, 2, 3, 6], rephrase=[1, 6, 3], counterfactual=[1, 2, 4]),  # F +6, P 2->6, N 3->4
    2: ClientViews(future=[4, 5], rephrase=[4, 1], counterfactual=[4, 2]),  # F continues nothing, P 5->1, N 5->2
}
VALID = {1: 6, 2: 3}


def test_named_items_read_what_each_view_put_in():
    assert named_items(HISTORIES[1], VIEWS[1]) == {"future": [6], "rephrase": [6], "counterfactual": [4]}
    assert named_items(HISTORIES[2], VIEWS[2]) == {"future": [], "rephrase": [1], "counterfactual": [2]}
    # a history filling the model's window: F gave up the history's last items for its continuation
    long = ClientViews(future=[1, 2, 5, 6], rephrase=[1, 2, 3, 4], counterfactual=[1, 2, 3, 4])
    assert named_items([1, 2, 3, 4], long) == {"future": [5, 6], "rephrase": [], "counterfactual": []}


def test_the_gate_per_view_on_training_data():
    gate = view_gate(HISTORIES, VIEWS, GENRES, window=2)
    # windows: user 1 [2, 3] = {A, B}, {B}; user 2 [4, 5] = {C}, {C}
    # F: 6 {A, C} shares with 2, not 3 -> 1/2; user 2 names none. P: 6 -> 1/2, 1 {A} against {C}, {C} -> 0.
    # N: 4 {C} against {A, B}, {B} -> 0; 2 {A, B} against {C}, {C} -> 0
    assert gate.views["F"] == {"genre fit": 0.5, "distinct items": 1, "clients with items": 0.5}
    assert gate.views["P"] == {"genre fit": 0.25, "distinct items": 2, "clients with items": 1.0}
    assert gate.views["N"] == {"genre fit": 0.0, "distinct items": 2, "clients with items": 1.0}
    assert gate.margin == 0.5
    # the real continuation: user 1's 3 {B} against [1, 2] -> 1/2, user 2's 5 {C} against [4] -> 1
    assert gate.taste_references[LAST_ITEM] == 0.75
    assert gate.held_out == {} and gate.held_out_users == 0  # no held-out item given: no diagnostic


def test_the_random_reference_reads_the_window():
    everything_a = [frozenset()] + [frozenset({A})] * 6
    assert view_gate(HISTORIES, VIEWS, everything_a, window=2).taste_references[RANDOM_ITEMS] == 1.0
    no_genre = [frozenset()] * 7
    assert view_gate(HISTORIES, VIEWS, no_genre, window=2).taste_references[RANDOM_ITEMS] == 0.0


def test_the_fit_reads_the_taste_histories_when_given():
    """Views built from noisy logs, measured against the clean training window."""
    clean = {1: [1, 4, 5], 2: [4, 5]}  # user 1's clean window [4, 5] = {C}, {C}: F's 6 {A, C} fits both
    gate = view_gate(HISTORIES, VIEWS, GENRES, window=2, taste_histories=clean)
    assert gate.views["F"]["genre fit"] == 1.0 and gate.views["N"]["genre fit"] == 0.5  # N's 4 {C}: 1; 2: 0


def test_without_genres_the_gate_still_counts_items():
    gate = view_gate(HISTORIES, VIEWS, None)
    assert math.isnan(gate.views["F"]["genre fit"]) and math.isnan(gate.margin) and gate.taste_references == {}
    assert gate.views["P"]["distinct items"] == 2


def test_same_as_clean_compares_each_views_items():
    clean_named = {1: {"future": [5], "rephrase": [6], "counterfactual": [4]},
                   2: {"future": [], "rephrase": [2], "counterfactual": [2]}}
    gate = view_gate(HISTORIES, VIEWS, GENRES, window=2, compare_to=clean_named)
    assert [gate.views[v]["same as clean"] for v in "FPN"] == [0.0, 0.5, 1.0]


def test_the_held_out_diagnostic_against_its_references():
    # popularity over the training histories: items 1-5 once each, ties in order of first appearance
    assert popular_unseen(HISTORIES, 3) == {1: [4, 5], 2: [1, 2, 3]}
    gate = view_gate(HISTORIES, VIEWS, GENRES, window=2, held_out=VALID, m=3,
                     references={"model": {1: [6], 2: [3]}, "embedding": {1: [5]}})
    assert gate.held_out_users == 2
    assert gate.held_out == {"F": 0.5,  # user 1's F names 6, user 2's F names nothing
                             "most popular unseen (top 3, training popularity)": 0.5,  # user 2's list holds 3
                             "model": 1.0, "embedding": 0.0}  # a user without a list misses


def test_top_unseen_leaves_out_the_history_and_padding():
    scores = {1: np.array([9.0, 8, 7, 6, 5, 4, 3]), 2: np.array([0.0, 1, 2, 3, 9, 9, 1])}
    assert top_unseen(scores, HISTORIES, 2) == {1: [4, 5], 2: [3, 2]}


def test_markdown_prints_the_gate_and_labels_the_held_out_part():
    gate = view_gate(HISTORIES, VIEWS, GENRES, window=2, held_out=VALID, m=3)
    text = markdown({"tiny": gate})
    assert "| tiny | 0.500 | 0.250 | 0.000 | +0.500 | 1 | 2 | 2 | 0.500 | 1.000 | 1.000 |" in text
    assert f"| {LAST_ITEM} | 0.750 |" in text
    assert "never used for training or for selecting anything" in text and "the 2 users" in text
    assert "| tiny views' F | 0.500 |" in text


def test_dataset_inputs():
    data = SimpleNamespace(item_feat={"class": torch.tensor([[0, 0], [1, 0], [1, 2]]), "cat": torch.tensor([0, 3, 4])})
    assert genre_sets(data, "class") == [frozenset(), {1}, {1, 2}]
    assert genre_sets(data, "cat") == [frozenset(), {3}, {4}]
    valid = SimpleNamespace(uid_field="u", iid_field="i",
                            inter_feat={"u": torch.tensor([1, 1, 2]), "i": torch.tensor([6, 7, 3])})
    assert validation_items(valid) == {1: 6, 2: 3}


@pytest.mark.usefixtures("one_thread")
def test_gate_of_run_on_a_tiny_dataset(tmp_path):
    settings = tiny_settings(str(write_tiny_dataset(tmp_path)))
    assert gate_of_run("SASRec", "tiny", config_dict=settings) is None  # no views: no gate
    gates, named = gate_of_run("LUMOS", "tiny", config_dict=settings, kinds=["random"],
                               model_top={u: [] for u in range(30)})
    gate = gates["random"]
    assert gate.views["F"]["clients with items"] == 0.0  # a random F is a crop: it continues nothing
    assert gate.views["N"]["clients with items"] == 1.0 and gate.held_out["F"] == 0.0
    assert gate.held_out_users == len(named["random"]) == 25  # every user with a training history
    assert gate.held_out["model's top 3"] == 0.0  # empty lists name nothing
    assert "embedding neighbours (embedding views' F)" in gate.held_out  # the items have text: the space's F
    assert 0.0 <= gate.held_out["most popular unseen (top 3, training popularity)"] <= 1.0


def test_cached_means_every_client_is_in_the_cache(tmp_path):
    cache = ViewCache("key", tmp_path)
    assert not cached(cache, HISTORIES)  # no file
    cache.append([{"key": cache.client_key(1, HISTORIES[1])}])
    assert not cached(cache, HISTORIES) and cached(cache, {1: HISTORIES[1]})
    assert not cached(cache, {1: HISTORIES[1][:-1]})  # a changed history is another client record
