"""Shared fixtures: a tiny generated dataset in RecBole's atomic format (no real data needed)."""
import os

import numpy as np
import pytest
import torch

import recbole_lumos  # noqa: F401  (patches RecBole before any test builds a Config)

torch.set_num_threads(2)
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]


def write_tiny_dataset(root, name="tiny", n_users=24, n_items=40, seed=0, last_items=None):
    """Users with 8-20 chronological interactions over n_items titled items. last_items {user: [valid, test]}
    overrides the two held-out items of some users (to prove they never reach training). User 0, written first,
    has every item, so RecBole's token -> id mapping (order of first appearance) does not depend on last_items."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        f.writelines(f"0\t{item}\t3\t{item}\n" for item in range(1, n_items + 1))
        for user in range(1, n_users + 1):
            items = list(rng.choice(np.arange(1, n_items + 1), size=rng.integers(8, 21), replace=False))
            if last_items and user in last_items:
                items[-2:] = last_items[user]
            for t, item in enumerate(items):
                f.write(f"{user}\t{item}\t{rng.integers(1, 6)}\t{1000 * user + t}\n")
    with open(os.path.join(folder, f"{name}.item"), "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for item in range(1, n_items + 1):
            genres = " ".join(rng.choice(GENRES, size=2, replace=False))
            f.write(f"{item}\tMovie Number {item}\t{1990 + item % 10}\t{genres}\n")
    return root


def tiny_settings(data_path, **overrides):
    """Small, fast settings for any model on the tiny dataset."""
    settings = {
        "data_path": data_path,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                     "item": ["item_id", "movie_title", "release_year", "class"]},
        "item_genre_field": "class",
        "MAX_ITEM_LIST_LENGTH": 10,
        "hidden_size": 16,
        "inner_size": 32,
        "n_heads": 2,
        "n_layers": 1,
        "epochs": 2,
        "eval_step": 1,
        "show_progress": False,
        "state": "WARNING",
        "train_batch_size": 64,
        "cohort_size": 8,
        "client_fraction": 0.5,
        "views": "random",  # the LLM path has its own tests (test_augment_*)
    }
    settings.update(overrides)
    return settings


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and suffer badly from them on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh folder: checkpoints, logs and result files land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
