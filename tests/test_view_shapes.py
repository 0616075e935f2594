"""Every view is read like the anchor: the model reads a history's last L items (MAX_ITEM_LIST_LENGTH), and each
view holds the anchor's items at the anchor's positions, differing from it only where the generator put its items,
for histories shorter than, as long as and longer than L, for placed, embedding and LLM views, through the tensors
the losses read (ClientData, the federated layout; ``right_pad``, the centralised one)."""
import numpy as np
import pytest
from conftest_tiny_llm import make_tiny_llm, tiny_catalogue

from recbole_lumos.augment.base import appended_count, appended_items, place_views
from recbole_lumos.augment.embedding_views import EmbeddingViewBuilder, view_shape
from recbole_lumos.augment.item_space import load_encoder
from recbole_lumos.augment.llm_views import LLMViewBuilder
from recbole_lumos.federated.client_data import ClientData
from recbole_lumos.model.sequences import right_pad

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

L, M, K, WINDOW = 6, 3, 2, 4  # max length, F's continuation, N's replaced items, the generator's window
CONFIG = {"MAX_ITEM_LIST_LENGTH": L, "view_future_items": M, "view_negative_items": K, "view_window_items": WINDOW,
          "view_swap_ratio": 0.34, "seed": 1, "dataset": "tiny"}
# client -> history (ids into the tiny catalogue): shorter than L - M, L - M, between L - M and L, L, longer than L
HISTORIES = {1: [3, 6], 2: [3, 6, 8], 3: [11, 12, 13, 1, 14], 4: [15, 16, 17, 18, 19, 20],
             5: [15, 16, 17, 18, 19, 20, 21, 22, 23]}


def check_read_like_the_anchor(history, anchor, future, rephrase, counterfactual, continuation):
    """anchor and views as the model reads them (right-padded rows of L); continuation: the items F appended."""
    anchor, future, rephrase, counterfactual = (np.asarray(row).tolist() for row in
                                               (anchor, future, rephrase, counterfactual))
    read = min(len(history), L)
    assert anchor[:read] == history[-read:] and not any(anchor[read:])
    # F: the anchor's items at the anchor's positions, then the whole continuation, inside the window
    kept = min(read, L - len(continuation))
    assert future[:kept] == anchor[:kept]
    assert future[kept : kept + len(continuation)] == continuation and not any(future[kept + len(continuation):])
    if len(history) >= L:  # the window is full: F is read where the anchor is, different in its last items only
        assert sum(map(bool, future)) == read
    # P and N: read where the anchor is, different only inside the generator's window
    for view in (rephrase, counterfactual):
        assert sum(map(bool, view)) == read
        changed = [p for p in range(L) if view[p] != anchor[p]]
        assert changed and min(changed) >= read - WINDOW
    replaced = [p for p in range(L) if counterfactual[p] != anchor[p]]
    assert replaced == list(range(read - min(K, read), read))  # N: the anchor's last items replaced


def check_views(histories, views, named=None):
    """Through ClientData (what the federated client's losses read) and right_pad (what LUMOS.attach_views keeps)."""
    data = ClientData(histories, [np.array([u]) for u in histories], views, max_len=L)
    batch = data.batch_of_users(list(range(len(histories))))
    for row, (user, history) in enumerate(histories.items()):
        v = views[user]
        continuation = appended_items(history, v.future)
        assert len(continuation) == M and not set(continuation) & set(history)
        if named is not None:
            assert continuation == named[user]["future"]
        width = batch["anchor"].shape[-1]
        pad = lambda row: list(row) + [0] * (L - width)  # noqa: E731  (the batch is cut to its widest row)
        check_read_like_the_anchor(history, pad(batch["anchor"][row].tolist()),
                                   *(pad(batch["views"][row, i].tolist()) for i in range(3)), continuation)
        assert int(batch["future_count"][row]) == M  # L_future reads the whole continuation
        check_read_like_the_anchor(history, *right_pad([history, v.future, v.rephrase, v.counterfactual], L),
                                   continuation)


@pytest.mark.parametrize("user", sorted(HISTORIES))
def test_placed_views_are_read_like_the_anchor(user):
    history = HISTORIES[user]
    views = place_views(history, [101, 102, 103], [201, 202], [301, 302], WINDOW, np.random.default_rng(0), L)
    assert appended_count(history, views.future) == M
    check_read_like_the_anchor(history, *right_pad([history, views.future, views.rephrase, views.counterfactual], L),
                               [101, 102, 103])
    if len(history) + M <= L:  # room for all of it: F is the history, continued
        assert views.future == history + [101, 102, 103]
    else:  # no room: F gives up the history's last items, never its first
        assert views.future[-M:] == [101, 102, 103] and views.future[:-M] == history[: len(views.future) - M]
        assert len(views.future) == len(history) + L - min(len(history), L)


def test_without_a_window_f_is_the_whole_history_continued():
    history = HISTORIES[5]
    views = place_views(history, [101, 102, 103], [201], [301], WINDOW, np.random.default_rng(0))
    assert views.future == history + [101, 102, 103] and len(views.counterfactual) == len(history)


def test_appended_count_still_reads_random_and_perturbed_futures_as_no_continuation():
    history = [15, 16, 17, 18, 19, 20]
    assert appended_count(history, [16, 17, 18]) == 0  # a crop
    assert appended_count(history, history) == 0
    assert appended_count(history, [15, 99, 17, 18, 101, 102]) == 0  # a masked history: its tail holds history items
    assert appended_count(history, [15, 16, 17, 101, 102, 103]) == 3  # a full window's F
    assert appended_items(history, history + [101]) == [101]


def test_embedding_views_are_read_like_the_anchor():
    builder = EmbeddingViewBuilder(tiny_catalogue(), load_encoder(), view_shape(CONFIG), seed=1)
    assert builder.shape.max_len == L
    check_views(HISTORIES, builder.build(HISTORIES))


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


def test_llm_views_are_read_like_the_anchor_and_cached_views_are_placed_for_the_window(tiny_llm, tmp_path):
    def builder(config):
        return LLMViewBuilder(tiny_catalogue(), dict(model=tiny_llm, dtype="float32"), shape=view_shape(config),
                              batch_size=3, cache_dir=tmp_path, dataset_name="tiny")

    windowed = builder(CONFIG)
    views = windowed.build(HISTORIES)
    named = {int(r["client"]): r["named"] for r in windowed.cache().load().values()}
    check_views(HISTORIES, views, named)
    # a window only places the named items: another L reuses the same cache and places them for itself
    wider = builder({**CONFIG, "MAX_ITEM_LIST_LENGTH": 50})
    assert wider.cache().path == windowed.cache().path
    again = wider.build(HISTORIES)
    assert wider.stats()["generated_clients"] == 0 and wider._backend is None
    assert all(again[u].future == h + named[u]["future"] for u, h in HISTORIES.items())
