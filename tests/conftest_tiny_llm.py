"""Test helpers for the view generators: a small movie catalogue and a TINY causal LM built on the spot.

The tiny LM is a real transformers model folder (byte-level BPE tokenizer with a chat template, 2-layer Llama,
hidden 64) loaded through the very same `LLMBackend` path as SmolLM2; its output is noise, which the decoding must
survive. Imported by tests/test_augment*.py (pytest puts tests/ on sys.path).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from recbole_lumos.augment.base import Catalogue, ClientViews, appended_count  # noqa: E402

MOVIES = [  # title, year, genres; index + 1 = item id
    ("Toy Story", 1995, "Animation, Children's, Comedy"),
    ("GoldenEye", 1995, "Action, Adventure, Thriller"),
    ("Star Wars", 1977, "Action, Adventure, Romance, Sci-Fi, War"),
    ("Empire Strikes Back, The", 1980, "Action, Adventure, Drama, Romance, Sci-Fi, War"),
    ("Return of the Jedi", 1983, "Action, Adventure, Romance, Sci-Fi, War"),
    ("Alien", 1979, "Action, Horror, Sci-Fi, Thriller"),
    ("Aliens", 1986, "Action, Sci-Fi, Thriller, War"),
    ("Terminator, The", 1984, "Action, Sci-Fi, Thriller"),
    ("Terminator 2: Judgment Day", 1991, "Action, Sci-Fi, Thriller"),
    ("Blade Runner", 1982, "Film-Noir, Sci-Fi"),
    ("Lion King, The", 1994, "Animation, Children's, Musical"),
    ("Aladdin", 1992, "Animation, Children's, Comedy, Musical"),
    ("Beauty and the Beast", 1991, "Animation, Children's, Musical"),
    ("Babe", 1995, "Children's, Comedy, Drama"),
    ("Sense and Sensibility", 1995, "Drama, Romance"),
    ("Emma", 1996, "Drama, Romance"),
    ("Piano, The", 1993, "Drama, Romance"),
    ("Remains of the Day, The", 1993, "Drama"),
    ("Godfather, The", 1972, "Action, Crime, Drama"),
    ("Pulp Fiction", 1994, "Crime, Drama"),
    ("Fargo", 1996, "Crime, Drama, Thriller"),
    ("Silence of the Lambs, The", 1991, "Drama, Thriller"),
    ("Shining, The", 1980, "Horror"),
    ("Scream", 1996, "Horror, Thriller"),
]

# client -> training history (ids into MOVIES): sci-fi; animation and family; drama, crime and horror
HISTORIES = {1: [3, 6, 8], 2: [11, 12, 13, 1, 14], 3: [15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 2]}

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def tiny_catalogue(movies=MOVIES):
    titles = [""] + [title for title, _, _ in movies]
    texts = [""] + [f"{title} ({year}) | {genres}" for title, year, genres in movies]
    return Catalogue(texts=texts, titles=titles)


def make_tiny_llm(folder, chat_template=True, seed=0):
    """Save a tiny tokenizer + LlamaForCausalLM into `folder` and return its path (a str, like a model id)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from recbole_lumos.augment.prompts import DEFAULT_PROMPTS

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [f"{t} ({y}) {g}" for t, y, g in MOVIES] + DEFAULT_PROMPTS.read_text().splitlines()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    return str(folder)


def check(views, histories, num_items=len(MOVIES) + 1):
    """Every client has views; F is the history's first items then its continuation, P keeps its length; all ids
    are real items."""
    assert set(views) == set(histories)
    for client, history in histories.items():
        v = views[client]
        kept = len(v.future) - appended_count(history, v.future)
        assert isinstance(v, ClientViews) and kept < len(v.future) and v.future[:kept] == history[:kept]
        assert len(v.rephrase) == len(history)
        assert all(0 < i < num_items for i in v.future + v.rephrase + v.counterfactual)


class FakeDataset:
    """What catalogue_from_dataset reads of a RecBole dataset: config, item_num, item_feat, field2id_token.
    item_feat is a pandas DataFrame (as after create_dataset) or an Interaction (after dataset.build())."""

    def __init__(self, movies=MOVIES, config=None, interaction=True, with_text=True):
        import numpy as np
        import pandas as pd
        from recbole.data.interaction import Interaction

        self.config = {"dataset": "tiny", "seed": 7, **(config or {})}
        self.item_num = len(movies) + 1
        columns, self.field2id_token = {"item_id": list(range(self.item_num))}, {}
        fields = {"movie_title": [t.split() for t, _, _ in movies], "release_year": [[str(y)] for _, y, _ in movies],
                  "class": [g.split(", ") for _, _, g in movies]} if with_text else {}
        for field, rows in fields.items():
            vocab = ["[PAD]"] + sorted({token for row in rows for token in row})
            self.field2id_token[field] = np.array(vocab)
            ids = [[]] + [[vocab.index(token) for token in row] for row in rows]
            width = max(map(len, ids))
            columns[field] = [row + [0] * (width - len(row)) for row in ids]
        if interaction:
            self.item_feat = Interaction({k: torch.tensor(v) for k, v in columns.items()})
        else:  # token fields as floats, token_seq fields as arrays, as RecBole's DataFrame holds them
            frame = {k: [np.array([t for t in row if t]) for row in v] for k, v in columns.items() if k != "item_id"}
            frame["release_year"] = [float(row[0]) if len(row) else 0.0 for row in frame.get("release_year", [])]
            self.item_feat = pd.DataFrame({"item_id": columns["item_id"], **frame}) if with_text else None
