"""Item text from a RecBole dataset: one line per internal item id, e.g. "Toy Story (1995) | Animation, Comedy"."""
import torch

from recbole_lumos.augment.base import Catalogue
from recbole_lumos.augment.settings import setting

GENRE_FIELDS = ("class", "genre", "categories")  # ml-100k, ml-1m, Amazon


def _tokens(dataset, field):
    """Per-item token strings of `field` (id 0 is padding), rows indexed by internal item id."""
    column = dataset.item_feat[field]
    rows = column.tolist() if isinstance(column, torch.Tensor) else list(column)  # Interaction or DataFrame
    vocab = dataset.field2id_token[field]
    as_list = lambda row: list(row) if hasattr(row, "__len__") else [row]  # noqa: E731  (token_seq vs token)
    return [[str(vocab[int(t)]) for t in as_list(row) if int(t) != 0] for row in rows]


def catalogue_from_dataset(dataset):
    """Catalogue with texts[i]/titles[i] for internal item id i; all '' when the dataset has no item text."""
    config = dataset.config
    num_items = dataset.item_num
    fields = set() if dataset.item_feat is None else set(dataset.item_feat.columns)
    title_field, year_field = setting(config, "item_title_field"), setting(config, "item_year_field")
    genre_field = setting(config, "item_genre_field") or next((f for f in GENRE_FIELDS if f in fields), None)
    if title_field not in fields:
        return Catalogue(texts=[""] * num_items, titles=[""] * num_items)
    titles = [" ".join(t) for t in _tokens(dataset, title_field)]
    years = _tokens(dataset, year_field) if year_field in fields else [[]] * num_items
    genres = _tokens(dataset, genre_field) if genre_field in fields else [[]] * num_items
    texts = []
    for title, year, genre in zip(titles, years, genres):
        text = f"{title} ({year[0]})" if title and year else title
        texts.append(f"{text} | {', '.join(genre)}" if title and genre else text)
    titles[0] = texts[0] = ""
    return Catalogue(texts=texts, titles=titles)
