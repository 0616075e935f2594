"""Generated titles -> catalogue item ids: exact normalised-title match first, then the nearest title in
sentence-embedding space when it is similar enough; anything else is rejected (the builder fills and counts it)."""
import re
import unicodedata

import numpy as np

from recbole_lumos.augment.item_space import encode, encode_catalogue
from recbole_lumos.augment.prompts import natural_title

ARTICLES = {"the", "a", "an"}


def normalise_title(title):
    """'The Usual Suspects (1995)', 'Usual Suspects, The' and 'usual suspects' all give 'usual suspects'."""
    text = "".join(c for c in unicodedata.normalize("NFKD", str(title).lower()) if not unicodedata.combining(c))
    words = re.sub(r"[^\w\s]|_", " ", re.sub(r"\([^)]*\)", " ", text)).split()
    if words and words[0] in ARTICLES:
        words = words[1:]
    if words and words[-1] in ARTICLES:
        words = words[:-1]
    return " ".join(words)


class Grounder:
    def __init__(self, catalogue, encoder, threshold=0.65):
        self.encoder, self.threshold = encoder, threshold
        self.exact = {}
        named = [(item, title) for item, title in enumerate(catalogue.titles) if item and title]
        for item, title in named:
            self.exact.setdefault(normalise_title(title), item)
        for item, title in named:  # "Terminator 2: Judgment Day" is also "Terminator 2", unless a title is that
            self.exact.setdefault(normalise_title(title.split(":")[0]), item)
        self.vectors = encode_catalogue(encoder, [natural_title(t) for t in catalogue.titles])
        self.vectors[0] = 0  # padding never matches
        self.memo = {}  # small LLMs repeat titles across clients: embed each distinct string once

    def ground(self, candidates):
        """[title strings] -> [(item id, similarity) or None], in order; exact matches score 1.0."""
        todo = sorted({c for c in candidates if c not in self.memo})
        fuzzy = []
        for c in todo:
            item = self.exact.get(normalise_title(c))
            if item is not None:
                self.memo[c] = (item, 1.0)
            else:
                fuzzy.append(c)
        if fuzzy:
            sims = encode(self.encoder, fuzzy) @ self.vectors.T
            best = sims.argmax(axis=1)
            for c, item, sim in zip(fuzzy, best, sims[np.arange(len(fuzzy)), best]):
                self.memo[c] = (int(item), float(sim)) if sim >= self.threshold else None
        return [self.memo[c] for c in candidates]
